//! The state machine, pair by pair: the issue's list of legal moves is
//! restated here independently and every (from, to) pair is checked against it.

use cutover::control::state_machine::{check, IllegalMove, State, LEGAL_MOVES};
use cutover::pattern::Pattern;

/// From the issue: initial→src_only, src_only⇄src_first, src_first⇄dst_first,
/// dst_first⇄dst_only, dst_only→completed.
fn issue_says_legal(from: State, to: State) -> bool {
    use State::*;
    matches!(
        (from, to),
        (Initial, SrcOnly)
            | (SrcOnly, SrcFirst)
            | (SrcFirst, SrcOnly)
            | (SrcFirst, DstFirst)
            | (DstFirst, SrcFirst)
            | (DstFirst, DstOnly)
            | (DstOnly, DstFirst)
            | (DstOnly, Completed)
    )
}

#[test]
fn every_pair_is_legal_exactly_when_the_issue_says() {
    let mut legal = 0;
    for from in State::ALL {
        for to in State::ALL {
            let got = check(from, to, false);
            if issue_says_legal(from, to) {
                legal += 1;
                assert_eq!(got, Ok(()), "{from} -> {to} must be legal");
            } else {
                let err = got.expect_err(&format!("{from} -> {to} must be refused"));
                if from == to {
                    assert_eq!(err, IllegalMove::AlreadyThere(from));
                } else {
                    assert_eq!(err, IllegalMove::NotAllowed { from, to });
                }
            }
        }
    }
    assert_eq!(legal, 8);
    assert_eq!(LEGAL_MOVES.len(), 8, "the table lists each legal move once");
}

#[test]
fn force_allows_every_pair_except_staying_put() {
    for from in State::ALL {
        for to in State::ALL {
            let got = check(from, to, true);
            assert_eq!(got.is_ok(), from != to, "forced {from} -> {to}: {got:?}");
        }
    }
}

#[test]
fn each_state_names_its_pattern() {
    use State::*;
    let expected = [
        (Initial, Pattern::SrcOnly),
        (SrcOnly, Pattern::SrcOnly),
        (SrcFirst, Pattern::SrcFirst),
        (DstFirst, Pattern::DstFirst),
        (DstOnly, Pattern::DstOnly),
        (Completed, Pattern::DstOnly),
    ];
    for (state, pattern) in expected {
        assert_eq!(state.pattern(), pattern, "{state}");
    }
    assert_eq!(State::fresh(Pattern::SrcOnly), Initial);
    assert_eq!(State::fresh(Pattern::DstFirst), DstFirst);
}

#[test]
fn refusals_say_what_is_allowed() {
    let e = check(State::SrcFirst, State::Completed, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot move from src_first to completed: from src_first the legal moves are to src_only, dst_first; add ?force=true to override"
    );
    assert_eq!(
        check(State::DstOnly, State::DstOnly, true)
            .unwrap_err()
            .to_string(),
        "already in dst_only"
    );
}
