//! The values a mirrored write is pinned to, and the two ways of sending
//! them:
//! - MariaDB: `SET STATEMENT timestamp=…, rand_seed1=…, rand_seed2=…
//!   [, insert_id=…] FOR <statement>` — the variables hold for that one
//!   statement and are restored afterwards, so nothing is left behind: the
//!   client's own `timestamp`, its RNG state, `ROW_COUNT()`, `FOUND_ROWS()`,
//!   warnings and `GET DIAGNOSTICS` after the statement are the statement's
//!   own (MariaDB Knowledge Base, "SET STATEMENT"). A client's own `SET
//!   STATEMENT … FOR` nests inside and wins.
//! - Otherwise (MySQL has no SET STATEMENT; its `SET_VAR` hint does not take
//!   `timestamp`), and for statements SET STATEMENT does not take (compound
//!   statements): `SET …` pipelined before the statement and `SET
//!   timestamp=DEFAULT` after it.
//!
//! Variables the client set itself ([`ClientPins`]) are never overridden:
//! both sides got the client's `SET`, so they already agree.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::command;
use crate::lexer::{Lexer, Tok};

/// The values one mirrored write is pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// `timestamp`, in microseconds since the Unix epoch.
    pub micros: i64,
    /// `rand_seed1`, in 1..0x3FFFFFFF.
    pub seed1: u32,
    /// `rand_seed2`, in 1..0x3FFFFFFF.
    pub seed2: u32,
}

/// Pinning variables the client set in its session (`SET timestamp=…`,
/// `SET rand_seed1=…`): cutover leaves those alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientPins {
    /// The client set `timestamp` to a value (not DEFAULT / 0).
    pub timestamp: bool,
    /// The client seeded the RNG (`rand_seed1` / `rand_seed2`).
    pub rand_seed: bool,
    /// Since the client seeded it, a statement that ran on the
    /// authoritative side only may have drawn from its RNG: the two sides'
    /// RNG states may differ.
    pub rand_drift: bool,
}

impl ClientPins {
    /// Follow a session-state statement that succeeded (`SET a=…, b=…`):
    /// `timestamp` set to DEFAULT or 0 is normal time again. `SET STATEMENT
    /// … FOR` changes nothing for the session.
    pub fn observe(&mut self, sql: &[u8]) {
        let mut lx = Lexer::new(sql);
        if !matches!(lx.next(), Some((t, _)) if t.is(b"SET")) {
            return;
        }
        if matches!(lx.clone().next(), Some((t, _)) if t.is(b"STATEMENT")) {
            return;
        }
        while let Some((name, value)) = next_assignment(&mut lx) {
            if name.eq_ignore_ascii_case(b"timestamp") {
                self.timestamp = !value.is_some_and(|v| v.is(b"DEFAULT") || v.is(b"0"));
            } else if name.eq_ignore_ascii_case(b"rand_seed1")
                || name.eq_ignore_ascii_case(b"rand_seed2")
            {
                self.rand_seed = true;
                self.rand_drift = false;
            }
        }
    }
}

/// The next `name = value` of a SET list: the variable name (scope and
/// `@@` stripped; user variables and GLOBAL ones skipped) and the first
/// token of its value. Consumes through the `,` that ends it.
fn next_assignment<'a>(lx: &mut Lexer<'a>) -> Option<(&'a [u8], Option<Tok<'a>>)> {
    loop {
        let (mut global, mut user, mut name) = (false, false, None);
        let mut ats = 0;
        let mut value = None;
        let mut depth = 0i32;
        let mut after_eq = false;
        loop {
            let Some((t, _)) = lx.next() else {
                return name.filter(|_| !global && !user).map(|n| (n, value));
            };
            match t {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => depth -= 1,
                Tok::Punct(b',') | Tok::Semi if depth == 0 => break,
                Tok::Punct(b'=') | Tok::Assign if !after_eq => after_eq = true,
                Tok::Punct(b'@') if !after_eq => ats += 1,
                _ if after_eq => {
                    value.get_or_insert(t);
                }
                _ if t.is(b"GLOBAL") => global = true,
                Tok::Word(_) if t.is(b"SESSION") || t.is(b"LOCAL") => {}
                Tok::Punct(b'.') => {}
                Tok::Word(w) | Tok::Quoted(b'`', w) => {
                    user = ats == 1;
                    name = Some(w);
                }
                _ => {}
            }
        }
        if let (Some(n), false, false) = (name, global, user) {
            return Some((n, value));
        }
    }
}

impl Pin {
    /// The current time and two fresh random seeds.
    pub fn now() -> Pin {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let mut rng = rand::thread_rng();
        // MariaDB takes seeds modulo 0x3FFFFFFF
        Pin {
            micros,
            seed1: rng.gen_range(1..0x3FFF_FFFF),
            seed2: rng.gen_range(1..0x3FFF_FFFF),
        }
    }

    /// `timestamp=<s.µs>, rand_seed1=…, rand_seed2=…` without what the
    /// client pinned itself, and `insert_id=<id>` when given and non-zero
    /// (the mirror gets the primary's first generated id). `None` when
    /// nothing is left to set.
    pub fn assignments(&self, client: ClientPins, insert_id: Option<u64>) -> Option<String> {
        let mut parts = Vec::with_capacity(4);
        if !client.timestamp {
            parts.push(format!(
                "timestamp={}.{:06}",
                self.micros.div_euclid(1_000_000),
                self.micros.rem_euclid(1_000_000)
            ));
        }
        if !client.rand_seed {
            parts.push(format!(
                "rand_seed1={}, rand_seed2={}",
                self.seed1, self.seed2
            ));
        }
        if let Some(id) = insert_id.filter(|id| *id > 0) {
            parts.push(format!("insert_id={id}"));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// The COM_QUERY payload sent before the write when the variables
    /// cannot go with the statement: `SET <assignments>`.
    pub fn prefix(&self, client: ClientPins, insert_id: Option<u64>) -> Option<Vec<u8>> {
        self.assignments(client, insert_id)
            .map(|a| command::query(format!("SET {a}")))
    }
}

/// How a statement can carry its pinning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pinnable {
    /// `SET STATEMENT … FOR <it>` works (DML, DDL, CALL, EXECUTE, DO, …).
    #[default]
    Wrap,
    /// Only by `SET` before and after (compound statements, unknown verbs).
    Around,
    /// Needs no pinning (LOCK, FLUSH, KILL, XA, GET DIAGNOSTICS, table
    /// maintenance, …): nothing is sent with it.
    No,
}

const WRAP: [&[u8]; 18] = [
    b"INSERT",
    b"REPLACE",
    b"UPDATE",
    b"DELETE",
    b"LOAD",
    b"CREATE",
    b"ALTER",
    b"DROP",
    b"TRUNCATE",
    b"RENAME",
    b"DO",
    b"SELECT",
    b"WITH",
    b"VALUES",
    b"TABLE",
    b"CALL",
    b"EXECUTE",
    b"SET",
];

const NO_PIN: [&[u8]; 22] = [
    b"LOCK",
    b"UNLOCK",
    b"FLUSH",
    b"KILL",
    b"HANDLER",
    b"XA",
    b"GET",
    b"ANALYZE",
    b"OPTIMIZE",
    b"CHECK",
    b"REPAIR",
    b"CACHE",
    b"PURGE",
    b"RESET",
    b"INSTALL",
    b"UNINSTALL",
    b"SHUTDOWN",
    b"BINLOG",
    b"SIGNAL",
    b"RESIGNAL",
    b"GRANT",
    b"REVOKE",
];

/// How a statement whose first word is `word` (the next token `next`)
/// carries its pinning.
pub(crate) fn pinnable(word: Tok<'_>, next: Option<Tok<'_>>) -> Pinnable {
    if matches!(next, Some(Tok::Punct(b':'))) {
        return Pinnable::Around; // label: compound statement
    }
    if word.is(b"BEGIN") {
        return Pinnable::Around; // BEGIN NOT ATOMIC
    }
    if WRAP.iter().any(|w| word.is(w)) {
        Pinnable::Wrap
    } else if NO_PIN.iter().any(|w| word.is(w)) {
        Pinnable::No
    } else {
        Pinnable::Around
    }
}

/// `text` (COM_QUERY text, several statements possible) with `SET STATEMENT
/// <assignments> FOR ` before each statement, as a COM_QUERY payload;
/// `None` when a statement of a multi-statement text cannot take it.
pub fn set_statement(text: &[u8], assignments: &str, multi: bool) -> Option<Vec<u8>> {
    let prefix = format!("SET STATEMENT {assignments} FOR ");
    if !multi {
        let mut p = Vec::with_capacity(1 + prefix.len() + text.len());
        p.push(command::Com::COM_QUERY as u8);
        p.extend_from_slice(prefix.as_bytes());
        p.extend_from_slice(text);
        return Some(p);
    }
    let mut starts = Vec::new();
    let mut lx = Lexer::new(text);
    let mut at_start = true;
    while let Some((t, pos)) = lx.next() {
        if let Tok::Semi = t {
            at_start = true;
            continue;
        }
        if at_start {
            let next = lx.clone().next().map(|(n, _)| n);
            if !matches!(t, Tok::Word(_)) || pinnable(t, next) != Pinnable::Wrap {
                return None;
            }
            starts.push(pos);
            at_start = false;
        }
    }
    let mut p = Vec::with_capacity(1 + text.len() + starts.len() * prefix.len());
    p.push(command::Com::COM_QUERY as u8);
    let mut at = 0;
    for s in starts {
        p.extend_from_slice(&text[at..s]);
        p.extend_from_slice(prefix.as_bytes());
        at = s;
    }
    p.extend_from_slice(&text[at..]);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins(sqls: &[&str]) -> ClientPins {
        let mut c = ClientPins::default();
        for s in sqls {
            c.observe(s.as_bytes());
        }
        c
    }

    #[test]
    fn follows_the_clients_own_pinning_variables() {
        assert!(pins(&["SET timestamp=1000000000"]).timestamp);
        assert!(pins(&["set @@session.timestamp = 5, @x = 1"]).timestamp);
        assert!(pins(&["SET SESSION timestamp = UNIX_TIMESTAMP('2001-01-01')"]).timestamp);
        assert!(!pins(&["SET timestamp=5", "SET timestamp = DEFAULT"]).timestamp);
        assert!(!pins(&["SET timestamp=5", "SET @@timestamp=0"]).timestamp);
        assert!(!pins(&["SET @timestamp = 5"]).timestamp, "a user variable");
        assert!(!pins(&["SET STATEMENT timestamp=5 FOR SELECT 1"]).timestamp);
        assert!(!pins(&["SET NAMES utf8mb4, sql_mode = 'ANSI'"]).timestamp);
        let c = pins(&["SET rand_seed1 = 5, rand_seed2 = 7"]);
        assert!(c.rand_seed && !c.timestamp);
        assert!(pins(&["SET sql_mode = CONCAT(@@sql_mode, ',ANSI'), timestamp = 7"]).timestamp);
    }

    #[test]
    fn assignments_leave_out_what_the_client_pinned() {
        let p = Pin {
            micros: 1_700_000_000_000_042,
            seed1: 1,
            seed2: 2,
        };
        let none = ClientPins::default();
        assert_eq!(
            p.assignments(none, Some(7)).unwrap(),
            "timestamp=1700000000.000042, rand_seed1=1, rand_seed2=2, insert_id=7"
        );
        let ts = ClientPins {
            timestamp: true,
            ..none
        };
        assert_eq!(
            p.assignments(ts, Some(0)).unwrap(),
            "rand_seed1=1, rand_seed2=2"
        );
        let all = ClientPins {
            timestamp: true,
            rand_seed: true,
            rand_drift: false,
        };
        assert_eq!(p.assignments(all, None), None);
        assert_eq!(
            p.prefix(all, Some(3)).unwrap(),
            b"\x03SET insert_id=3".to_vec()
        );
    }

    #[test]
    fn set_statement_goes_before_each_statement() {
        let one = set_statement(b"INSERT INTO t VALUES (1)", "timestamp=1", false).unwrap();
        assert_eq!(
            one,
            b"\x03SET STATEMENT timestamp=1 FOR INSERT INTO t VALUES (1)"
        );
        let two = set_statement(
            b"INSERT INTO t VALUES (';'); /* c */ UPDATE t SET a=1;",
            "timestamp=1",
            true,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&two[1..]),
            "SET STATEMENT timestamp=1 FOR INSERT INTO t VALUES (';'); /* c */ SET STATEMENT timestamp=1 FOR UPDATE t SET a=1;"
        );
        assert_eq!(
            set_statement(
                b"INSERT INTO t VALUES (1); LOCK TABLES t WRITE",
                "x=1",
                true
            ),
            None
        );
    }

    #[test]
    fn which_statements_take_set_statement() {
        let p = |s: &str| {
            let mut lx = Lexer::new(s.as_bytes());
            let w = lx.next().unwrap().0;
            pinnable(w, lx.next().map(|t| t.0))
        };
        assert_eq!(p("insert into t values (1)"), Pinnable::Wrap);
        assert_eq!(p("CALL p()"), Pinnable::Wrap);
        assert_eq!(
            p("BEGIN NOT ATOMIC INSERT INTO t VALUES (NOW()); END"),
            Pinnable::Around
        );
        assert_eq!(p("lbl: LOOP LEAVE lbl; END LOOP"), Pinnable::Around);
        assert_eq!(p("GET DIAGNOSTICS @n = NUMBER"), Pinnable::No);
        assert_eq!(p("LOCK TABLES t WRITE"), Pinnable::No);
        assert_eq!(p("FROBNICATE"), Pinnable::Around);
    }
}
