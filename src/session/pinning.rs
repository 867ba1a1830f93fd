//! How one mirrored write carries its pin (see `crate::determinism`): as
//! `SET STATEMENT … FOR <statement>` on MariaDB, or with a `SET` before and
//! a reset after, the client's own pinning variables left alone.

use crate::catalog::Needs;
use crate::classify::TxKind;
use crate::command::{self, Com};
use crate::determinism::{self, Analysis, ClientPins, Pin, Pinnable};
use crate::lexer::{Lexer, Tok};

/// How one mirrored write is made deterministic (the same pin on both sides).
pub(super) struct Pinning {
    pub pin: Pin,
    pub analysis: Analysis,
    /// The client's own pinning variables, left alone.
    pub client: ClientPins,
    /// What the write can read that a pin fixes (all of it unless
    /// `[mirror] pinning = "when_needed"`).
    pub needs: Needs,
}

/// A command with the silent commands to queue around it.
pub(super) struct Pinned {
    pub payload: Vec<u8>,
    pub pre: Option<Vec<u8>>,
    pub post: Option<&'static [u8]>,
    /// What the command does to the connection's `timestamp`.
    pub timestamp: TimestampPin,
}

/// What a command does to its connection's `timestamp` (its clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum TimestampPin {
    /// Nothing: the command runs on the session's clock.
    #[default]
    Untouched,
    /// `SET timestamp=…` goes before it: the session's clock stays pinned
    /// until a `SET timestamp=DEFAULT` (owed afterwards).
    Session,
    /// `SET STATEMENT timestamp=… FOR`: pinned for this statement only; the
    /// session's clock is as before afterwards.
    Statement,
}

/// What becomes of a `SET timestamp=DEFAULT` a connection owes (a pinned
/// prepared write ran on it) when `next` goes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OwedReset {
    /// Sent before the command: it may read the clock.
    Send,
    /// Not needed: the command pins the session's clock itself and owes a
    /// reset of its own.
    Drop,
    /// Still owed: the command reads no clock of the session (it pins its
    /// own for itself, or it is a lone BEGIN / COMMIT / ROLLBACK).
    Keep,
}

impl OwedReset {
    /// The rule for one command: `pin` as [`Pinned::timestamp`], `tx` its
    /// transaction-control kind, `text` its SQL (a prepared statement's
    /// text is always one statement; a COM_QUERY may hold several, and
    /// then only a clock-free pin keeps the reset owed).
    ///
    /// Sending the reset only where a clock can be read saves one command
    /// per pinned prepared write on each side (`BEGIN`, n writes, `COMMIT`
    /// owe it once instead of n times) while NOW() on the connection still
    /// reads the real time (issue #17).
    pub fn before(pin: TimestampPin, tx: Option<TxKind>, text: &[u8]) -> OwedReset {
        match pin {
            TimestampPin::Session => OwedReset::Drop,
            TimestampPin::Statement => OwedReset::Keep,
            TimestampPin::Untouched => {
                let clock_free =
                    matches!(tx, Some(TxKind::Begin | TxKind::Commit | TxKind::Rollback));
                if clock_free && single_statement(text) {
                    OwedReset::Keep
                } else {
                    OwedReset::Send
                }
            }
        }
    }

    /// Carry out the rule on a connection's owed reset (`pending`, as in
    /// `Backend::pending_reset`): the reset to queue before the command,
    /// if it is to be sent now.
    pub fn settle(self, pending: &mut Option<&'static [u8]>) -> Option<&'static [u8]> {
        match self {
            OwedReset::Send => pending.take(),
            OwedReset::Drop => pending.take().and(None),
            OwedReset::Keep => None,
        }
    }
}

/// `text` holds one statement (an optional trailing `;` aside).
pub(super) fn single_statement(text: &[u8]) -> bool {
    let mut lx = Lexer::new(text);
    while let Some((t, _)) = lx.next() {
        if t == Tok::Semi {
            return lx.next().is_none();
        }
    }
    true
}

impl Pinning {
    /// The variables not to pin: the client's own, and what the write
    /// cannot read.
    fn left_alone(&self) -> ClientPins {
        ClientPins {
            timestamp: self.client.timestamp || !self.needs.clock,
            rand_seed: self.client.rand_seed || !self.needs.rand,
            ..self.client
        }
    }

    /// `payload` (the statement as sent to a backend) with its pinning: as
    /// `SET STATEMENT … FOR <text>` on MariaDB for a COM_QUERY text that
    /// takes it, else with `SET …` before and `SET timestamp=DEFAULT` after.
    /// The mirror also gets the primary's first generated id (`insert_id`),
    /// unless the text holds several statements.
    pub fn apply(&self, payload: Vec<u8>, mariadb: bool, insert_id: Option<u64>) -> Pinned {
        let plain = |payload| Pinned {
            payload,
            pre: None,
            post: None,
            timestamp: TimestampPin::Untouched,
        };
        if self.analysis.pinnable == Pinnable::No {
            return plain(payload);
        }
        let insert_id = insert_id.filter(|_| !self.analysis.multi && self.needs.insert_id);
        let leave = self.left_alone();
        let Some(assign) = self.pin.assignments(leave, insert_id) else {
            return plain(payload);
        };
        let text = (payload.first() == Some(&(Com::COM_QUERY as u8))).then(|| &payload[1..]);
        if let (true, Pinnable::Wrap, Some(text)) = (mariadb, self.analysis.pinnable, text) {
            if let Some(wrapped) = determinism::set_statement(text, &assign, self.analysis.multi) {
                let timestamp = if leave.timestamp {
                    TimestampPin::Untouched
                } else {
                    TimestampPin::Statement
                };
                return Pinned {
                    timestamp,
                    ..plain(wrapped)
                };
            }
        }
        let (post, timestamp) = if leave.timestamp {
            (None, TimestampPin::Untouched)
        } else {
            (Some(determinism::reset()), TimestampPin::Session)
        };
        Pinned {
            payload,
            pre: Some(command::query(format!("SET {assign}"))),
            post,
            timestamp,
        }
    }
}
