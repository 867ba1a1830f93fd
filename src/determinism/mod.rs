//! Making a mirrored write store the same values on both sides.
//!
//! Statement-based replication solves the same problem; cutover does what it
//! does, per statement, on both connections:
//! - `timestamp=<t>` (microseconds) pins NOW(), CURRENT_TIMESTAMP and
//!   `DEFAULT`/`ON UPDATE CURRENT_TIMESTAMP` columns.
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
//! How the variables travel with the statement (`SET STATEMENT … FOR` on
//! MariaDB, nothing left behind) is in `pin.rs`; either way no extra round
//! trip is made. Variables the client set itself are left alone.

#![warn(missing_docs)]

mod pin;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::command;
use crate::lexer::{Lexer, Tok};

pub(crate) use pin::pinnable;
pub use pin::{set_statement, ClientPins, Pin, Pinnable};

/// The COM_QUERY payload sent after the write: normal time again (built
/// once; it is queued after every pinned write).
pub fn reset() -> &'static [u8] {
    static RESET: LazyLock<Vec<u8>> = LazyLock::new(|| command::query("SET timestamp=DEFAULT"));
    &RESET
}

/// Whether a statement reads the previous statement's diagnostics
/// (`ROW_COUNT()`, `FOUND_ROWS()`, `@@warning_count`, `@@error_count`,
/// `SHOW WARNINGS` / `SHOW ERRORS`, `GET DIAGNOSTICS`): anything cutover
/// sent on that connection before it would change what it reads (MariaDB
/// "Diagnostics Area"; every statement but these resets it).
pub fn reads_diagnostics(text: &[u8]) -> bool {
    const WORDS: [&[u8]; 7] = [
        b"ROW_COUNT",
        b"FOUND_ROWS",
        b"DIAGNOSTICS",
        b"WARNING_COUNT",
        b"ERROR_COUNT",
        b"WARNINGS",
        b"ERRORS",
    ];
    let mut lx = Lexer::new(text);
    while let Some((t, _)) = lx.next() {
        if WORDS.iter().any(|w| t.is(w)) {
            return true;
        }
    }
    false
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
    /// How the statement can carry its pinning.
    pub pinnable: Pinnable,
    /// It calls RAND().
    pub calls_rand: bool,
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
            Tok::Word(_) if scan.skip_to_for => {
                scan.skip_to_for = !(scan.depth == 0 && tok.is(b"FOR"));
            }
            Tok::Word(_) if scan.verb.is_none() => scan.first_word(&lx, tok),
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
    /// Inside the variable list of a client's `SET STATEMENT … FOR`.
    skip_to_for: bool,
    /// The first word was seen (it decides [`Analysis::pinnable`]).
    started: bool,
    /// (start, end, replacement) spans of the text to rewrite.
    edits: Vec<(usize, usize, String)>,
}

impl Scan {
    fn first_word(&mut self, lx: &Lexer<'_>, tok: Tok<'_>) {
        let next = lx.clone().next().map(|(t, _)| t);
        if !self.started {
            self.started = true;
            self.out.pinnable = pinnable(tok, next);
        }
        if tok.is(b"SET") && next.is_some_and(|n| n.is(b"STATEMENT")) {
            // The client's own SET STATEMENT: the statement follows FOR.
            self.skip_to_for = true;
            return;
        }
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
        } else if tok.is(b"ROW_COUNT") || tok.is(b"FOUND_ROWS") {
            // The previous statement's diagnostics: on the mirror, those of
            // whatever it ran last (reads run on the authoritative side only).
            self.out.unsafe_reason.get_or_insert("session_diagnostics");
        } else if tok.is(b"RAND") {
            self.out.calls_rand = true;
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
