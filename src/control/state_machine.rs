//! The migration's states and the legal moves between them — written once,
//! as data, in [`LEGAL_MOVES`].
//!
//! ```text
//! initial ─▶ src_only ⇄ src_first ⇄ dst_first ⇄ dst_only ─▶ completed
//! ```
//!
//! Every state names exactly one [`Pattern`]; the scheduler keeps the data
//! path's pattern equal to `state.pattern()` at all times.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::pattern::Pattern;

/// Where the migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Fresh install: nothing has been moved yet (pattern `src_only`).
    Initial,
    SrcOnly,
    SrcFirst,
    DstFirst,
    DstOnly,
    /// The migration is over: the destination is the database (pattern `dst_only`).
    Completed,
}

/// The moves an operator (or the automation) may make without `force`.
pub const LEGAL_MOVES: &[(State, State)] = &[
    (State::Initial, State::SrcOnly),
    (State::SrcOnly, State::SrcFirst),
    (State::SrcFirst, State::SrcOnly),
    (State::SrcFirst, State::DstFirst),
    (State::DstFirst, State::SrcFirst),
    (State::DstFirst, State::DstOnly),
    (State::DstOnly, State::DstFirst),
    (State::DstOnly, State::Completed),
];

impl State {
    pub const ALL: [State; 6] = [
        State::Initial,
        State::SrcOnly,
        State::SrcFirst,
        State::DstFirst,
        State::DstOnly,
        State::Completed,
    ];

    /// The routing pattern the data path uses in this state.
    pub fn pattern(self) -> Pattern {
        match self {
            State::Initial | State::SrcOnly => Pattern::SrcOnly,
            State::SrcFirst => Pattern::SrcFirst,
            State::DstFirst => Pattern::DstFirst,
            State::DstOnly | State::Completed => Pattern::DstOnly,
        }
    }

    /// The state a fresh install starts in for a configured `initial_pattern`:
    /// `initial` for `src_only`, otherwise the state named by the pattern (the
    /// operator declared the migration is already under way).
    pub fn fresh(initial_pattern: Pattern) -> State {
        match initial_pattern {
            Pattern::SrcOnly => State::Initial,
            Pattern::SrcFirst => State::SrcFirst,
            Pattern::DstFirst => State::DstFirst,
            Pattern::DstOnly => State::DstOnly,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Initial => "initial",
            State::SrcOnly => "src_only",
            State::SrcFirst => "src_first",
            State::DstFirst => "dst_first",
            State::DstOnly => "dst_only",
            State::Completed => "completed",
        }
    }

    /// The states reachable from `self` without `force`.
    pub fn legal_targets(self) -> Vec<State> {
        LEGAL_MOVES
            .iter()
            .filter(|(from, _)| *from == self)
            .map(|(_, to)| *to)
            .collect()
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown state `{0}` (expected initial, src_only, src_first, dst_first, dst_only or completed)"
)]
pub struct UnknownState(pub String);

impl FromStr for State {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// Why a move was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IllegalMove {
    #[error("already in {0}")]
    AlreadyThere(State),
    #[error("cannot move from {from} to {to}: {}; add ?force=true to override", explain(*from))]
    NotAllowed { from: State, to: State },
}

fn explain(from: State) -> String {
    let targets = from.legal_targets();
    if targets.is_empty() {
        return format!("{from} is final, no move is allowed from it");
    }
    let names: Vec<&str> = targets.iter().map(|s| s.as_str()).collect();
    format!("from {from} the legal moves are to {}", names.join(", "))
}

/// Check a move. `force` allows any move except to the current state.
pub fn check(from: State, to: State, force: bool) -> Result<(), IllegalMove> {
    if from == to {
        return Err(IllegalMove::AlreadyThere(from));
    }
    if force || LEGAL_MOVES.contains(&(from, to)) {
        Ok(())
    } else {
        Err(IllegalMove::NotAllowed { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_parses_back() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
        }
        assert!("done".parse::<State>().is_err());
    }

    #[test]
    fn refusal_explains_the_legal_moves() {
        let e = check(State::SrcOnly, State::DstOnly, false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("from src_only the legal moves are to src_first"),
            "{msg}"
        );
        assert!(msg.contains("force=true"), "{msg}");
        let e = check(State::Completed, State::DstOnly, false).unwrap_err();
        assert!(e.to_string().contains("completed is final"), "{e}");
    }
}
