//! Making a mirrored write store the same values on both sides.
//!
//! Statement-based replication solves the same problem; cutover does what it
//! does, per statement, on both connections:
//! - `SET timestamp=<t>` (microseconds) before the write pins NOW(),
//!   CURRENT_TIMESTAMP and `DEFAULT`/`ON UPDATE CURRENT_TIMESTAMP` columns;
//!   `SET timestamp=DEFAULT` after it restores normal time for the session.
//! - `rand_seed1/rand_seed2` pin RAND() (per-row sequences included).
//! - `insert_id=<primary's first generated id>` on the mirror makes
//!   AUTO_INCREMENT hand out the primary's ids (multi-row inserts get
//!   consecutive ids on both, with innodb_autoinc_lock_mode ≤ 1).
//! - `UUID()`, `UUID_SHORT()` in `INSERT … VALUES` are replaced by literals
//!   computed once; `SYSDATE()` becomes `NOW()` (which is pinned).
//!
//! What cannot be pinned is still mirrored but reported as unsafe:
//! `UPDATE/DELETE … LIMIT` without `ORDER BY`, `INSERT … SELECT` without
//! `ORDER BY`, per-row `UUID()` (UPDATE, INSERT … SELECT), functions such as
//! CONNECTION_ID() and LOAD_FILE().
//!
//! The SET commands are pipelined with the statement (no extra round trip):
//! the proxy consumes their answers itself.

#![warn(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
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

    /// The COM_QUERY payload sent before the write: `SET timestamp=<s.µs>,
    /// rand_seed1=…, rand_seed2=…` and, when given and non-zero,
    /// `insert_id=<id>` (the mirror gets the primary's first generated id).
    pub fn prefix(&self, insert_id: Option<u64>) -> Vec<u8> {
        let mut sql = format!(
            "SET timestamp={}.{:06}, rand_seed1={}, rand_seed2={}",
            self.micros.div_euclid(1_000_000),
            self.micros.rem_euclid(1_000_000),
            self.seed1,
            self.seed2
        );
        if let Some(id) = insert_id.filter(|id| *id > 0) {
            sql.push_str(&format!(", insert_id={id}"));
        }
        command::query(sql)
    }
}

/// The COM_QUERY payload sent after the write: normal time again (built
/// once; it is queued after every pinned write).
pub fn reset() -> &'static [u8] {
    static RESET: LazyLock<Vec<u8>> = LazyLock::new(|| command::query("SET timestamp=DEFAULT"));
    &RESET
}

/// What kind of write this is, as far as determinism cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// INSERT or REPLACE.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// LOAD DATA / LOAD XML.
    Load,
    /// Anything else (DDL, CALL, …).
    Other,
}

/// The result of looking at a write before mirroring it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    /// The statement text with UUID()/UUID_SHORT()/SYSDATE() pinned, if any
    /// were replaced (a full COM_QUERY payload, command byte included).
    pub rewritten: Option<Vec<u8>>,
    /// Why the statement may still diverge, if it may.
    pub unsafe_reason: Option<&'static str>,
    /// The table the write targets (first one), when it could be read.
    pub table: Option<String>,
    /// The statement's verb (`None` for an empty text).
    pub verb: Option<Verb>,
    /// More statements follow the first (multi-statement text).
    pub multi: bool,
    /// Digest of the statement text, for logs and dirty records.
    pub digest: String,
}

static UUID_SHORT_SEQ: AtomicU64 = AtomicU64::new(0);

fn uuid_literal() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h = |r: &[u8]| r.iter().map(|x| format!("{x:02x}")).collect::<String>();
    // version 4, variant 10
    let b6 = (b[6] & 0x0F) | 0x40;
    let b8 = (b[8] & 0x3F) | 0x80;
    format!(
        "'{}-{}-{:02x}{}-{:02x}{}-{}'",
        h(&b[0..4]),
        h(&b[4..6]),
        b6,
        h(&b[7..8]),
        b8,
        h(&b[9..10]),
        h(&b[10..16])
    )
}

fn uuid_short_literal() -> String {
    // Same layout as the server's: (server id byte << 56) + (start time << 24) + n
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        & 0xFFFF_FFFF;
    let n = UUID_SHORT_SEQ.fetch_add(1, Ordering::Relaxed) & 0xFF_FFFF;
    ((0xC7u64 << 56) | (start << 24) | n).to_string()
}

const UNPINNABLE: [&[u8]; 4] = [
    b"CONNECTION_ID",
    b"LOAD_FILE",
    b"RANDOM_BYTES",
    b"MASTER_POS_WAIT",
];

/// Look at a write (COM_QUERY text without the command byte). Only the
/// first statement of a multi-statement text is analysed.
pub fn analyze(sql: &[u8]) -> Analysis {
    let mut lx = Lexer::new(sql);
    let mut scan = Scan::default();
    while let Some((tok, start)) = lx.next() {
        match tok {
            Tok::Semi => {
                scan.out.multi = lx.clone().next().is_some();
                break;
            }
            Tok::Punct(b'(') => scan.depth += 1,
            Tok::Punct(b')') => scan.depth -= 1,
            Tok::Word(_) if scan.verb.is_none() => scan.first_word(tok),
            Tok::Word(w) => scan.word(&lx, tok, w, start),
            Tok::Quoted(b'`', q) if scan.expect_table => {
                scan.out.table = Some(qualified(&lx, q));
                scan.expect_table = false;
            }
            _ => {}
        }
    }
    scan.finish(sql)
}

/// Words skipped between a write's verb and its table name.
const BEFORE_TABLE: [&[u8]; 14] = [
    b"INTO",
    b"IGNORE",
    b"LOW_PRIORITY",
    b"DELAYED",
    b"HIGH_PRIORITY",
    b"QUICK",
    b"FROM",
    b"DATA",
    b"XML",
    b"LOCAL",
    b"CONCURRENT",
    b"INFILE",
    b"REPLACE",
    b"TABLE",
];

/// What [`analyze`] gathers while reading the first statement's tokens.
#[derive(Default)]
struct Scan {
    out: Analysis,
    /// Parenthesis depth (LIMIT / VALUES count at the top level only).
    depth: i32,
    verb: Option<Verb>,
    /// The next name is the target table.
    expect_table: bool,
    limit: bool,
    order: bool,
    /// INSERT … SELECT.
    select: bool,
    /// INSERT … VALUES / SET.
    values: bool,
    per_row_uuid: bool,
    /// (start, end, replacement) spans of the text to rewrite.
    edits: Vec<(usize, usize, String)>,
}

impl Scan {
    fn first_word(&mut self, tok: Tok<'_>) {
        let v = if tok.is(b"INSERT") || tok.is(b"REPLACE") {
            Verb::Insert
        } else if tok.is(b"UPDATE") {
            Verb::Update
        } else if tok.is(b"DELETE") {
            Verb::Delete
        } else if tok.is(b"LOAD") {
            Verb::Load
        } else {
            Verb::Other
        };
        self.verb = Some(v);
        self.expect_table = v != Verb::Other;
    }

    fn word(&mut self, lx: &Lexer<'_>, tok: Tok<'_>, w: &[u8], start: usize) {
        if self.expect_table && !BEFORE_TABLE.iter().any(|k| tok.is(k)) {
            self.out.table = Some(qualified(lx, w));
            self.expect_table = false;
        }
        let insert = self.verb == Some(Verb::Insert);
        if self.depth == 0 {
            self.limit |= tok.is(b"LIMIT");
            self.values |= tok.is(b"VALUES") || tok.is(b"VALUE") || (tok.is(b"SET") && insert);
        }
        self.order |= tok.is(b"ORDER");
        self.select |= tok.is(b"SELECT") && insert && !self.values;
        if is_call(lx) {
            self.call(lx, tok, w, start);
        }
    }

    /// A function call: UUID()/UUID_SHORT() in INSERT … VALUES become
    /// literals, SYSDATE() becomes NOW(); per-row or unpinnable ones are unsafe.
    fn call(&mut self, lx: &Lexer<'_>, tok: Tok<'_>, w: &[u8], start: usize) {
        if tok.is(b"UUID") || tok.is(b"UUID_SHORT") {
            let per_row = self.verb != Some(Verb::Insert) || self.select || !self.values;
            if per_row {
                self.per_row_uuid = true;
            } else if let Some(end) = call_end(lx) {
                let lit = if tok.is(b"UUID") {
                    uuid_literal()
                } else {
                    uuid_short_literal()
                };
                self.edits.push((start, end, lit));
            }
        } else if tok.is(b"SYSDATE") {
            self.edits.push((start, start + w.len(), "NOW".into()));
        } else if UNPINNABLE.iter().any(|f| tok.is(f)) {
            self.out.unsafe_reason.get_or_insert("unpinnable_function");
        }
    }

    /// The verdict, and the rewritten text if anything was pinned.
    fn finish(mut self, sql: &[u8]) -> Analysis {
        let mut out = std::mem::take(&mut self.out);
        out.digest = digest(sql);
        out.verb = self.verb;
        let verb = self.verb.unwrap_or(Verb::Other);
        if self.per_row_uuid {
            out.unsafe_reason = Some("uuid_per_row");
        } else if matches!(verb, Verb::Update | Verb::Delete) && self.limit && !self.order {
            out.unsafe_reason = Some("limit_without_order_by");
        } else if verb == Verb::Insert && self.select && !self.order {
            out.unsafe_reason
                .get_or_insert("insert_select_without_order_by");
        }
        if !self.edits.is_empty() {
            let mut q = Vec::with_capacity(sql.len() + 64);
            let mut at = 0;
            for (s, e, lit) in self.edits {
                q.extend_from_slice(&sql[at..s]);
                q.extend_from_slice(lit.as_bytes());
                at = e;
            }
            q.extend_from_slice(&sql[at..]);
            out.rewritten = Some(command::query(q));
        }
        out
    }
}

/// `name`, or `name.next` when a `.` follows (schema-qualified table).
fn qualified(lx: &Lexer<'_>, name: &[u8]) -> String {
    let unquote = |b: &[u8]| String::from_utf8_lossy(b).replace("``", "`");
    let mut l = lx.clone();
    if let Some((Tok::Punct(b'.'), _)) = l.next() {
        if let Some((Tok::Word(t) | Tok::Quoted(b'`', t), _)) = l.next() {
            return format!("{}.{}", unquote(name), unquote(t));
        }
    }
    unquote(name)
}

/// Whether the next token is `(` (a function call follows the word).
fn is_call(lx: &Lexer<'_>) -> bool {
    matches!(lx.clone().next(), Some((Tok::Punct(b'('), _)))
}

/// Offset just past the `)` closing the call whose `(` is next.
fn call_end(lx: &Lexer<'_>) -> Option<usize> {
    let mut l = lx.clone();
    let mut depth = 0;
    while let Some((t, _)) = l.next() {
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(l.pos);
                }
            }
            Tok::Semi => return None,
            _ => {}
        }
    }
    None
}

/// A short stable digest of a statement for logs (FNV-1a, 64 bit).
pub fn digest(sql: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in sql {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(a: &Analysis) -> String {
        String::from_utf8_lossy(&a.rewritten.as_ref().unwrap()[1..]).into_owned()
    }

    #[test]
    fn pins_uuid_and_sysdate_in_insert_values() {
        let a = analyze(b"INSERT INTO t (u, s, x) VALUES (UUID(), UUID_SHORT(), SYSDATE(6)), (uuid ( ), 1, 'UUID()')");
        let t = text(&a);
        assert_eq!(
            t.to_ascii_uppercase().matches("UUID").count(),
            1,
            "only the string literal keeps it: {t}"
        );
        assert!(t.contains("NOW(6)"), "{t}");
        assert!(t.ends_with("'UUID()')"), "string literal untouched: {t}");
        assert_eq!(a.unsafe_reason, None);
        assert_eq!(a.table.as_deref(), Some("t"));
        let lits: Vec<&str> = t.split('\'').collect();
        assert_ne!(lits[1], lits[3], "each occurrence gets its own value");
    }

    #[test]
    fn flags_what_cannot_be_pinned() {
        assert_eq!(
            analyze(b"UPDATE t SET u = UUID()").unsafe_reason,
            Some("uuid_per_row")
        );
        assert_eq!(
            analyze(b"DELETE FROM t LIMIT 10").unsafe_reason,
            Some("limit_without_order_by")
        );
        assert_eq!(
            analyze(b"DELETE FROM t ORDER BY id LIMIT 10").unsafe_reason,
            None
        );
        assert_eq!(
            analyze(b"INSERT INTO t SELECT * FROM s").unsafe_reason,
            Some("insert_select_without_order_by")
        );
        assert_eq!(
            analyze(b"INSERT INTO t SELECT * FROM s ORDER BY id").unsafe_reason,
            None
        );
        assert_eq!(
            analyze(b"INSERT INTO t VALUES (CONNECTION_ID())").unsafe_reason,
            Some("unpinnable_function")
        );
        assert_eq!(
            analyze(b"UPDATE t SET a = 1 WHERE id IN (SELECT id FROM s LIMIT 1)").unsafe_reason,
            None
        );
        assert_eq!(
            analyze(b"INSERT INTO t (a) VALUES (RAND()), (NOW())").unsafe_reason,
            None
        );
    }

    #[test]
    fn finds_the_target_table() {
        assert_eq!(
            analyze(b"INSERT IGNORE INTO `my t` VALUES (1)")
                .table
                .as_deref(),
            Some("my t")
        );
        assert_eq!(
            analyze(b"update low_priority orders set a=1")
                .table
                .as_deref(),
            Some("orders")
        );
        assert_eq!(
            analyze(b"DELETE QUICK FROM items WHERE id=1")
                .table
                .as_deref(),
            Some("items")
        );
        assert_eq!(
            analyze(b"LOAD DATA LOCAL INFILE 'x' INTO TABLE li")
                .table
                .as_deref(),
            Some("li")
        );
        assert_eq!(
            analyze(b"REPLACE t (a) VALUES (1)").verb,
            Some(Verb::Insert)
        );
        assert_eq!(
            analyze(b"INSERT INTO shop.`o``k` VALUES (1)")
                .table
                .as_deref(),
            Some("shop.o`k")
        );
    }

    #[test]
    fn prefix_carries_microseconds_and_insert_id() {
        let p = Pin {
            micros: 1_700_000_000_000_042,
            seed1: 1,
            seed2: 2,
        };
        assert_eq!(
            p.prefix(Some(7)),
            b"\x03SET timestamp=1700000000.000042, rand_seed1=1, rand_seed2=2, insert_id=7"
                .to_vec()
        );
        assert!(!String::from_utf8(p.prefix(Some(0)))
            .unwrap()
            .contains("insert_id"));
    }

    #[test]
    fn never_panics_on_garbage() {
        for s in [
            &b"UUID("[..],
            b"INSERT INTO",
            b"(((",
            b")))",
            b"INSERT INTO t VALUES (UUID(",
            b"\xff\xfe",
        ] {
            let _ = analyze(s);
        }
    }
}
