//! How one mirrored write carries its pin (see `crate::determinism`): as
//! `SET STATEMENT … FOR <statement>` on MariaDB, or with a `SET` before and
//! a reset after, the client's own pinning variables left alone.

use crate::command::{self, Com};
use crate::determinism::{self, Analysis, ClientPins, Pin, Pinnable};

/// How one mirrored write is made deterministic (the same pin on both sides).
pub(super) struct Pinning {
    pub pin: Pin,
    pub analysis: Analysis,
    /// The client's own pinning variables, left alone.
    pub client: ClientPins,
}

/// A command with the silent commands to queue around it.
pub(super) struct Pinned {
    pub payload: Vec<u8>,
    pub pre: Option<Vec<u8>>,
    pub post: Option<&'static [u8]>,
}

impl Pinning {
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
        };
        if self.analysis.pinnable == Pinnable::No {
            return plain(payload);
        }
        let insert_id = insert_id.filter(|_| !self.analysis.multi);
        let Some(assign) = self.pin.assignments(self.client, insert_id) else {
            return plain(payload);
        };
        let text = (payload.first() == Some(&(Com::COM_QUERY as u8))).then(|| &payload[1..]);
        if let (true, Pinnable::Wrap, Some(text)) = (mariadb, self.analysis.pinnable, text) {
            if let Some(wrapped) = determinism::set_statement(text, &assign, self.analysis.multi) {
                return plain(wrapped);
            }
        }
        Pinned {
            payload,
            pre: Some(command::query(format!("SET {assign}"))),
            post: (!self.client.timestamp).then(determinism::reset),
        }
    }
}
