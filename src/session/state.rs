//! The session state a backend connection must be brought to before use:
//! default database, multi-statement option and every successful
//! session-state statement (SET …, PREPARE …), replayed in order.

use std::collections::VecDeque;

use crate::determinism::ClientPins;

/// Most distinct session-state statements remembered per session.
const MAX_RECORDED: usize = 1024;

/// What a new backend connection is brought to (see the module docs).
#[derive(Debug, Default, Clone)]
pub struct SessionState {
    /// Current default database (handshake, USE, COM_INIT_DB).
    pub database: Option<String>,
    /// Last COM_SET_OPTION value (0 = multi-statements on, 1 = off).
    pub set_option: Option<u16>,
    /// SET / PREPARE / DEALLOCATE statements, oldest first, de-duplicated.
    statements: VecDeque<Vec<u8>>,
    /// Set when the cap forced forgetting statements (logged once).
    pub overflowed: bool,
    /// Pinning variables the client set itself (`timestamp`, RNG seeds).
    pub client_pins: ClientPins,
}

impl SessionState {
    /// A fresh session's state: only a default database, if any.
    pub fn new(database: Option<String>) -> Self {
        SessionState {
            database,
            ..Default::default()
        }
    }

    /// Remember a statement that succeeded on the authoritative side.
    /// Re-running the same text moves it to the end, which keeps the replay
    /// order's final effect identical (`SET a=1; SET a=2; SET a=1`).
    pub fn record(&mut self, sql: &[u8]) {
        if let Some(pos) = self.statements.iter().position(|s| s == sql) {
            let s = self.statements.remove(pos).expect("position is valid");
            self.statements.push_back(s);
            return;
        }
        if self.statements.len() >= MAX_RECORDED {
            self.statements.pop_front();
            self.overflowed = true;
        }
        self.statements.push_back(sql.to_vec());
    }

    /// The recorded statements in replay order (oldest first).
    pub fn statements(&self) -> impl Iterator<Item = &[u8]> {
        self.statements.iter().map(|s| s.as_slice())
    }

    /// COM_RESET_CONNECTION: session variables and prepared statements are
    /// gone, the default database stays.
    pub fn reset(&mut self) {
        self.statements.clear();
        self.set_option = None;
        self.overflowed = false;
        self.client_pins = ClientPins::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_order_keeps_final_value() {
        let mut s = SessionState::new(None);
        s.record(b"SET a=1");
        s.record(b"SET a=2");
        s.record(b"SET a=1");
        let v: Vec<_> = s.statements().collect();
        assert_eq!(v, vec![&b"SET a=2"[..], &b"SET a=1"[..]]);
    }

    #[test]
    fn bounded() {
        let mut s = SessionState::new(None);
        for i in 0..MAX_RECORDED + 5 {
            s.record(format!("SET @v{i}=1").as_bytes());
        }
        assert_eq!(s.statements().count(), MAX_RECORDED);
        assert!(s.overflowed);
    }
}
