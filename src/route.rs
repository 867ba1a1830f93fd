//! Routing: which backend answers a statement and whether it is mirrored.

#![warn(missing_docs)]

use crate::classify::Class;
use crate::pattern::{Pattern, Side};

/// Where one statement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Runs first; its result is what the client sees.
    pub primary: Side,
    /// Runs afterwards, only if the primary succeeded; failures are counted,
    /// never returned.
    pub mirror: Option<Side>,
    /// Session state: also applied to every other backend the session has
    /// open (and remembered for backends opened later).
    pub all_connected: bool,
}

/// Where a statement of `class` goes under `pattern`: reads to the
/// authoritative side only; writes, DDL and transaction control there first,
/// then to the other side in double-write patterns; session state to every
/// open backend.
pub fn plan(pattern: Pattern, class: Class) -> Plan {
    let primary = pattern.primary();
    match class {
        Class::Read => Plan {
            primary,
            mirror: None,
            all_connected: false,
        },
        Class::Write | Class::Ddl | Class::Transaction => Plan {
            primary,
            mirror: pattern.secondary(),
            all_connected: false,
        },
        Class::SessionState => Plan {
            primary,
            mirror: None,
            all_connected: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use Pattern::*;
        assert_eq!(
            plan(SrcOnly, Class::Write),
            Plan {
                primary: Side::Source,
                mirror: None,
                all_connected: false
            }
        );
        assert_eq!(plan(SrcFirst, Class::Read).mirror, None);
        assert_eq!(plan(SrcFirst, Class::Write).mirror, Some(Side::Destination));
        assert_eq!(
            plan(DstFirst, Class::Transaction),
            Plan {
                primary: Side::Destination,
                mirror: Some(Side::Source),
                all_connected: false
            }
        );
        assert_eq!(plan(DstOnly, Class::Ddl).primary, Side::Destination);
        assert!(plan(DstOnly, Class::SessionState).all_connected);
    }
}
