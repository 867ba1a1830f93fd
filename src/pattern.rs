//! The routing pattern and the atomic handle the control plane swaps.
//!
//! This is the narrow bridge between the two wings: the data path only ever
//! *reads* a [`Pattern`] snapshot from a [`PatternHandle`]; the control plane
//! is the only writer.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

/// Which backend a statement concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Source => Side::Destination,
            Side::Destination => Side::Source,
        }
    }

    pub fn index(self) -> usize {
        match self {
            Side::Source => 0,
            Side::Destination => 1,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How statements are relayed to the two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Everything goes to the source only.
    SrcOnly,
    /// Source is authoritative; writes are mirrored to the destination.
    SrcFirst,
    /// Destination is authoritative; writes are mirrored to the source.
    DstFirst,
    /// Everything goes to the destination only.
    DstOnly,
}

impl Pattern {
    pub const ALL: [Pattern; 4] = [
        Pattern::SrcOnly,
        Pattern::SrcFirst,
        Pattern::DstFirst,
        Pattern::DstOnly,
    ];

    /// The authoritative side: reads come from it and its results reach the client.
    pub fn primary(self) -> Side {
        match self {
            Pattern::SrcOnly | Pattern::SrcFirst => Side::Source,
            Pattern::DstFirst | Pattern::DstOnly => Side::Destination,
        }
    }

    /// The side writes are mirrored to, if any.
    pub fn secondary(self) -> Option<Side> {
        match self {
            Pattern::SrcFirst => Some(Side::Destination),
            Pattern::DstFirst => Some(Side::Source),
            Pattern::SrcOnly | Pattern::DstOnly => None,
        }
    }

    /// Whether this pattern sends writes to both sides.
    pub fn is_double_write(self) -> bool {
        self.secondary().is_some()
    }

    /// Whether the pattern uses `side` at all.
    pub fn uses(self, side: Side) -> bool {
        self.primary() == side || self.secondary() == Some(side)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::SrcOnly => "src_only",
            Pattern::SrcFirst => "src_first",
            Pattern::DstFirst => "dst_first",
            Pattern::DstOnly => "dst_only",
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown pattern `{0}` (expected src_only, src_first, dst_first or dst_only)")]
pub struct UnknownPattern(pub String);

impl FromStr for Pattern {
    type Err = UnknownPattern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPattern(s.to_string()))
    }
}

/// Shared, atomically swappable current pattern.
///
/// Cloning is cheap (an `Arc`). Sessions call [`PatternHandle::load`] at the
/// start of each transaction or autocommit statement and keep the snapshot
/// until that transaction ends.
#[derive(Clone)]
pub struct PatternHandle {
    inner: Arc<ArcSwap<Pattern>>,
}

impl PatternHandle {
    pub fn new(initial: Pattern) -> Self {
        PatternHandle {
            inner: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    /// The current pattern.
    pub fn load(&self) -> Pattern {
        **self.inner.load()
    }

    /// Replace the pattern; returns the previous one.
    pub fn swap(&self, next: Pattern) -> Pattern {
        *self.inner.swap(Arc::new(next))
    }
}

impl fmt::Debug for PatternHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PatternHandle").field(&self.load()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_follow_authority() {
        assert_eq!(Pattern::SrcFirst.primary(), Side::Source);
        assert_eq!(Pattern::SrcFirst.secondary(), Some(Side::Destination));
        assert_eq!(Pattern::DstFirst.primary(), Side::Destination);
        assert_eq!(Pattern::DstFirst.secondary(), Some(Side::Source));
        assert_eq!(Pattern::DstOnly.secondary(), None);
        assert!(!Pattern::SrcOnly.uses(Side::Destination));
    }

    #[test]
    fn parse_roundtrip() {
        for p in Pattern::ALL {
            assert_eq!(p.as_str().parse::<Pattern>().unwrap(), p);
        }
        assert!("src-only".parse::<Pattern>().is_err());
    }

    #[test]
    fn handle_swaps() {
        let h = PatternHandle::new(Pattern::SrcOnly);
        let h2 = h.clone();
        assert_eq!(h.swap(Pattern::DstFirst), Pattern::SrcOnly);
        assert_eq!(h2.load(), Pattern::DstFirst);
    }
}
