//! Statement classification for routing; runs on every COM_QUERY.
//!
//! Not a SQL parser: over the tokens of `crate::lexer` (comments, strings
//! and executable comments handled there) it reads the leading keywords of
//! each statement plus a few tokens after them and allocates nothing except a
//! `USE` name. Anything unrecognised is [`Class::Write`] (mirrored, never dropped).
//!
//! Decisions where the routing brief left a choice:
//! - Multi-statements combine by priority Write > Ddl > Transaction >
//!   SessionState > Read; `tx` is the last transaction statement's, and only when
//!   the result is `Transaction`; `use_db` is the last `USE` whatever the class.
//! - Empty segments (`;;`, trailing `;`, comments) are not statements; a payload
//!   with none is `Write` with `statements == 0`.
//! - Stored-program bodies keep inner `;`: `CREATE/ALTER PROCEDURE|FUNCTION|
//!   TRIGGER|EVENT|PACKAGE`, `BEGIN NOT ATOMIC`, MariaDB top-level `IF/CASE/
//!   WHILE/LOOP/REPEAT/FOR/label:` are one statement (block nesting is tracked).
//! - `CHECK TABLE` is Write (like ANALYZE/OPTIMIZE/REPAIR TABLE), `CHECKSUM
//!   TABLE` Read. `EXPLAIN x` is Read; `EXPLAIN ANALYZE x` and MariaDB `ANALYZE x`
//!   run `x`: Read if `x` is Read, else Write.
//! - SELECT/VALUES/TABLE/WITH, at any paren depth: `INTO OUTFILE|DUMPFILE` →
//!   Write, other `INTO` or `:=` → SessionState, GET_LOCK/RELEASE_LOCK/
//!   RELEASE_ALL_LOCKS/NEXTVAL/SETVAL `(`, `NEXT VALUE FOR`, `s.nextval` → Write.
//!   WITH is Write on UPDATE (not after FOR), DELETE, or INSERT/REPLACE not
//!   followed by `(` (the string functions). Stored functions are invisible.
//! - `SET STATEMENT … FOR x` is classified as `x`; `SET GLOBAL x`, `SET [DEFAULT]
//!   ROLE` are SessionState; `SET [GLOBAL|SESSION|LOCAL] TRANSACTION` is
//!   Transaction(Other). `COMMIT AND CHAIN` is Commit; `BEGIN WORK junk` Write.
//! - `USE` takes a bare, backticked or double-quoted name (else Write); non-UTF-8
//!   names are converted lossily.
//! - `kills` counts statements starting with `KILL` (after comments), and
//!   `PREPARE … FROM '<KILL …>'` / `EXECUTE IMMEDIATE '<KILL …>'` with the
//!   KILL in a literal: a KILL names a thread id, which the session must
//!   translate (or refuse), never relay.

#![warn(missing_docs)]

use crate::lexer::{Lexer, Tok};

/// What kind of statement this is, for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// SELECT (incl. FOR UPDATE / LOCK IN SHARE MODE), SHOW, EXPLAIN/DESCRIBE/DESC,
    /// HELP, WITH…SELECT, VALUES, TABLE, "(SELECT …)" → authoritative side only.
    Read,
    /// DML, LOAD, CALL, DO, HANDLER, LOCK/UNLOCK, EXECUTE, table maintenance,
    /// FLUSH, KILL, BEGIN NOT ATOMIC, SET PASSWORD, and anything not recognised
    /// (incl. empty/garbage) → mirrored.
    Write,
    /// CREATE/ALTER/DROP/TRUNCATE/RENAME/GRANT/REVOKE … → mirrored.
    Ddl,
    /// BEGIN, START TRANSACTION, COMMIT, ROLLBACK, SAVEPOINT, RELEASE SAVEPOINT,
    /// XA …, SET TRANSACTION … → both sides.
    Transaction,
    /// SET …, USE db, PREPARE, DEALLOCATE/DROP PREPARE → applied to every
    /// connected backend and remembered.
    SessionState,
}

/// Finer detail the session needs for transaction bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxKind {
    /// BEGIN, START TRANSACTION.
    Begin,
    /// COMMIT (also AND CHAIN).
    Commit,
    /// A full ROLLBACK.
    Rollback,
    /// SAVEPOINT.
    Savepoint,
    /// RELEASE SAVEPOINT, ROLLBACK TO savepoint (not a full rollback), XA …,
    /// SET TRANSACTION.
    Other,
}

/// What [`classify`] found in one COM_QUERY text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// The routing class (for several statements: the strongest one).
    pub class: Class,
    /// Some(..) iff class == Transaction (for a multi-statement: of the LAST
    /// transaction-control statement).
    pub tx: Option<TxKind>,
    /// For `USE db` (and a multi-statement whose last USE is …): the database
    /// name, unquoted (backticks removed, doubled backtick → one), exactly as
    /// written otherwise.
    pub use_db: Option<String>,
    /// Number of statements found (1 for a normal query; >1 for "a; b; c"; a
    /// trailing ";" or whitespace/comments after the last ";" do not count;
    /// 0 for an empty or comment-only payload).
    pub statements: usize,
    /// Statements that are a KILL, or prepare / execute a literal KILL text.
    pub kills: usize,
}

/// Classify one COM_QUERY payload (may contain several statements when the
/// client enabled multi-statements).
pub fn classify(sql: &[u8]) -> Classified {
    let (class, tx, db, statements, kills) = run(sql);
    Classified {
        class,
        tx,
        use_db: db.and_then(db_name),
        statements,
        kills,
    }
}

/// Cheap leading-keyword check used for prepared statements too (same rules),
/// returns the class only.
pub fn classify_class(sql: &[u8]) -> Class {
    run(sql).0
}

/// Whether a statement text (COM_STMT_PREPARE) contains a KILL (see
/// [`Classified::kills`]).
pub fn names_a_thread(sql: &[u8]) -> bool {
    run(sql).4 > 0
}

fn is(t: Option<Tok<'_>>, kw: &[u8]) -> bool {
    t.is_some_and(|t| t.is(kw))
}

fn is_any(t: Option<Tok<'_>>, kws: &[&[u8]]) -> bool {
    kws.iter().any(|k| is(t, k))
}

/// Upper-cased copy of a short word (empty if too long to be a keyword).
fn upper<'b>(w: &[u8], buf: &'b mut [u8; 24]) -> &'b [u8] {
    if w.len() > buf.len() {
        return &[];
    }
    let out = &mut buf[..w.len()];
    out.copy_from_slice(w);
    out.make_ascii_uppercase();
    out
}

/// The tokens of one statement: those starting before `end`, or with
/// `end == usize::MAX` those before the next `;` (whose offset becomes `end`).
#[derive(Clone)]
struct Toks<'a> {
    lx: Lexer<'a>,
    end: usize,
    done: bool,
}

impl<'a> Iterator for Toks<'a> {
    type Item = Tok<'a>;
    fn next(&mut self) -> Option<Tok<'a>> {
        if self.done {
            return None;
        }
        match self.lx.next() {
            Some((Tok::Semi, p)) if self.end == usize::MAX => self.end = p,
            Some((t, p)) if p < self.end => return Some(t),
            _ => {}
        }
        self.done = true;
        None
    }
}

impl<'a> Toks<'a> {
    fn peek(&self) -> Option<Tok<'a>> {
        self.clone().next()
    }
}

type Res<'a> = (Class, Option<TxKind>, Option<Tok<'a>>);

/// Combination priority, indexed by `Class as usize`: Write > Ddl > Transaction
/// > SessionState > Read.
const RANK: [u8; 5] = [0, 4, 3, 2, 1];

type Run<'a> = (Class, Option<TxKind>, Option<Tok<'a>>, usize, usize);

fn run(sql: &[u8]) -> Run<'_> {
    let mut lx = Lexer::new(sql);
    let (mut class, mut tx, mut db, mut n, mut kills) = (Class::Read, None, None, 0, 0);
    loop {
        let start = lx.clone();
        match lx.next() {
            None => break,
            Some((Tok::Semi, _)) => continue,
            Some(_) => {}
        }
        // One pass for plain statements; stored-program bodies are measured first.
        let compound = starts_compound(start.clone());
        let end = if compound {
            stmt_end(start.clone())
        } else {
            usize::MAX
        };
        let mut toks = Toks {
            lx: start,
            end,
            done: false,
        };
        kills += usize::from(names_kill(toks.clone()));
        let (c, t, d) = stmt_class(&mut toks, 0);
        while toks.next().is_some() {}
        lx = toks.lx;
        n += 1;
        if RANK[c as usize] > RANK[class as usize] {
            class = c;
        }
        tx = t.or(tx);
        db = d.or(db);
    }
    if n == 0 {
        class = Class::Write;
    }
    if class != Class::Transaction {
        tx = None;
    }
    (class, tx, db, n, kills)
}

/// Whether the statement is a KILL, or prepares / executes a literal KILL
/// text (`PREPARE s FROM 'KILL 5'`, `EXECUTE IMMEDIATE 'KILL 5'`).
fn names_kill(mut t: Toks<'_>) -> bool {
    let literal_kill = |t: Option<Tok<'_>>| match t {
        Some(Tok::Quoted(b'\'' | b'"', text)) => is(Lexer::new(text).next().map(|x| x.0), b"KILL"),
        _ => false,
    };
    match t.next() {
        Some(w) if w.is(b"KILL") => true,
        Some(w) if w.is(b"PREPARE") => {
            t.next(); // the statement name
            is(t.next(), b"FROM") && literal_kill(t.next())
        }
        Some(w) if w.is(b"EXECUTE") => is(t.next(), b"IMMEDIATE") && literal_kill(t.next()),
        _ => false,
    }
}

fn db_name(t: Tok<'_>) -> Option<String> {
    match t {
        Tok::Word(w) => Some(String::from_utf8_lossy(w).into_owned()),
        Tok::Quoted(q, inner) => {
            let q = q as char;
            let name = String::from_utf8_lossy(inner);
            Some(name.replace(&format!("{q}{q}"), &q.to_string()))
        }
        _ => None,
    }
}

/// Whether the statement may hold a stored-program body with inner `;`.
fn starts_compound(mut lx: Lexer<'_>) -> bool {
    let Some((Tok::Word(w), _)) = lx.next() else {
        return false;
    };
    let (mut buf, mut buf2) = ([0u8; 24], [0u8; 24]);
    match upper(w, &mut buf) {
        b"BEGIN" => is(lx.next().map(|t| t.0), b"NOT"),
        b"IF" | b"CASE" | b"WHILE" | b"LOOP" | b"REPEAT" | b"FOR" => true,
        b"CREATE" | b"ALTER" => {
            for _ in 0..16 {
                match lx.next() {
                    Some((Tok::Word(w), _)) => match upper(w, &mut buf2) {
                        b"PROCEDURE" | b"FUNCTION" | b"TRIGGER" | b"EVENT" | b"PACKAGE" => {
                            return true
                        }
                        b"TABLE" | b"VIEW" | b"INDEX" | b"DATABASE" | b"SCHEMA" | b"USER"
                        | b"ROLE" | b"SEQUENCE" | b"SERVER" | b"TABLESPACE" => return false,
                        _ => {}
                    },
                    Some((Tok::Semi, _)) | None => return false,
                    _ => {}
                }
            }
            false
        }
        _ => matches!(lx.next(), Some((Tok::Punct(b':'), _))),
    }
}

/// Nesting of BEGIN/IF/CASE/LOOP/… blocks; bit i set = level i is a CASE expression.
struct Blocks {
    depth: u32,
    expr: u64,
}

impl Blocks {
    fn top_is_expr(&self) -> bool {
        self.depth > 0 && self.depth <= 64 && (self.expr >> (self.depth - 1)) & 1 == 1
    }

    fn push(&mut self, expr: bool) {
        if self.depth < 64 {
            let bit = 1u64 << self.depth;
            self.expr = (self.expr & !bit) | (u64::from(expr) << self.depth);
        }
        self.depth = self.depth.saturating_add(1);
    }

    fn word(&mut self, w: &[u8], prev: Option<Tok<'_>>) {
        if is(prev, b"END") {
            return; // END IF / END LOOP / END CASE / END label
        }
        let at_start = match prev {
            None | Some(Tok::Semi) | Some(Tok::Punct(b':')) => true,
            p => {
                is_any(p, &[b"BEGIN", b"ATOMIC", b"DO", b"LOOP", b"REPEAT", b"ROW"])
                    || (is_any(p, &[b"THEN", b"ELSE"]) && !self.top_is_expr())
            }
        };
        let mut buf = [0u8; 24];
        match upper(w, &mut buf) {
            b"BEGIN" | b"LOOP" | b"WHILE" => self.push(false),
            b"CASE" => self.push(!at_start),
            b"IF" | b"REPEAT" | b"FOR" if at_start => self.push(false),
            b"END" => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
    }
}

/// Offset where the compound statement starting at `lx` ends (its `;` or EOF).
fn stmt_end(mut lx: Lexer<'_>) -> usize {
    let mut blocks = Blocks { depth: 0, expr: 0 };
    let mut prev = None;
    while let Some((t, pos)) = lx.next() {
        match t {
            Tok::Semi if blocks.depth == 0 => return pos,
            Tok::Word(w) => blocks.word(w, prev),
            _ => {}
        }
        prev = Some(t);
    }
    lx.len()
}

fn stmt_class<'a>(t: &mut Toks<'a>, depth: u8) -> Res<'a> {
    use Class::*;
    use TxKind::*;
    let tx = |k| (Transaction, Some(k), None);
    let plain = |c| (c, None, None);
    if depth > 4 {
        return plain(Write);
    }
    let mut paren = false;
    let first = loop {
        match t.next() {
            Some(Tok::Punct(b'(')) => paren = true,
            other => break other,
        }
    };
    let Some(Tok::Word(w)) = first else {
        return plain(Write);
    };
    let mut buf = [0u8; 24];
    let kw = upper(w, &mut buf);
    if paren && !matches!(kw, b"SELECT" | b"WITH" | b"VALUES" | b"TABLE") {
        return plain(Write);
    }
    let next = t.peek();
    match kw {
        b"SELECT" | b"VALUES" | b"TABLE" => plain(select_scan(t, false)),
        b"WITH" => plain(select_scan(t, true)),
        b"SHOW" | b"DESCRIBE" | b"DESC" | b"HELP" | b"CHECKSUM" => plain(Read),
        b"EXPLAIN" if is(next, b"ANALYZE") => {
            t.next();
            plain(executed(t, depth))
        }
        b"EXPLAIN" => plain(Read),
        b"ANALYZE"
            if !is_any(
                next,
                &[b"TABLE", b"TABLES", b"LOCAL", b"NO_WRITE_TO_BINLOG"],
            ) =>
        {
            plain(executed(t, depth))
        }
        b"CREATE" | b"ALTER" | b"TRUNCATE" | b"RENAME" | b"GRANT" | b"REVOKE" => plain(Ddl),
        b"DROP" if is(next, b"PREPARE") => plain(SessionState),
        b"DROP" => plain(Ddl),
        b"PREPARE" | b"DEALLOCATE" => plain(SessionState),
        b"USE" => match next {
            Some(d @ (Tok::Word(_) | Tok::Quoted(b'`' | b'"', _))) => (SessionState, None, Some(d)),
            _ => plain(Write),
        },
        b"SET" => set_class(t, depth),
        // BEGIN NOT ATOMIC … (or garbage) is Write.
        b"BEGIN" if t.all(|x| x.is(b"WORK")) => tx(Begin),
        b"START" if is(next, b"TRANSACTION") => tx(Begin),
        b"COMMIT" => tx(Commit),
        b"ROLLBACK" if is(t.find(|x| !x.is(b"WORK")), b"TO") => tx(Other),
        b"ROLLBACK" => tx(Rollback),
        b"SAVEPOINT" => tx(Savepoint),
        b"RELEASE" if is(next, b"SAVEPOINT") => tx(Other),
        b"XA" => tx(Other),
        _ => plain(Write),
    }
}

/// `EXPLAIN ANALYZE x` / `ANALYZE x` run `x`: Read if `x` reads, else Write.
fn executed(t: &mut Toks<'_>, depth: u8) -> Class {
    let format = [&b"FORMAT"[..], b"JSON", b"TREE", b"TRADITIONAL"];
    while is_any(t.peek(), &format) || t.peek() == Some(Tok::Punct(b'=')) {
        t.next();
    }
    match stmt_class(t, depth + 1).0 {
        Class::Read => Class::Read,
        _ => Class::Write,
    }
}

fn set_class<'a>(t: &mut Toks<'a>, depth: u8) -> Res<'a> {
    use Class::*;
    let w = match t.next() {
        None => return (Write, None, None),
        Some(Tok::Word(w)) => w,
        Some(_) => return (SessionState, None, None), // SET @x = …, SET @@x = …
    };
    let mut buf = [0u8; 24];
    match upper(w, &mut buf) {
        b"PASSWORD" => (Write, None, None),
        b"TRANSACTION" => (Transaction, Some(TxKind::Other), None),
        b"SESSION" | b"LOCAL" | b"GLOBAL" if is(t.peek(), b"TRANSACTION") => {
            (Transaction, Some(TxKind::Other), None)
        }
        b"STATEMENT" => {
            let mut parens = 0i32;
            while let Some(x) = t.next() {
                match x {
                    Tok::Punct(b'(') => parens += 1,
                    Tok::Punct(b')') => parens -= 1,
                    x if parens == 0 && x.is(b"FOR") => return stmt_class(t, depth + 1),
                    _ => {}
                }
            }
            (Write, None, None)
        }
        _ => (SessionState, None, None),
    }
}

/// SELECT / VALUES / TABLE / WITH: look for INTO, `:=`, side-effect functions,
/// and (for WITH) data-changing statements.
fn select_scan(t: &mut Toks<'_>, with: bool) -> Class {
    let mut session = false;
    let (mut p1, mut p2) = (None, None);
    while let Some(tok) = t.next() {
        if tok == Tok::Assign {
            session = true;
        } else if let Tok::Word(w) = tok {
            let call = || t.peek() == Some(Tok::Punct(b'('));
            let mut buf = [0u8; 24];
            match upper(w, &mut buf) {
                b"INTO" => {
                    if is_any(t.peek(), &[b"OUTFILE", b"DUMPFILE"]) {
                        return Class::Write;
                    }
                    session = true;
                }
                b"GET_LOCK" | b"RELEASE_LOCK" | b"RELEASE_ALL_LOCKS" | b"NEXTVAL" | b"SETVAL"
                    if call() =>
                {
                    return Class::Write
                }
                b"NEXTVAL" if p1 == Some(Tok::Punct(b'.')) => return Class::Write,
                b"FOR" if is(p1, b"VALUE") && is(p2, b"NEXT") => return Class::Write,
                b"UPDATE" | b"DELETE" if with && !is(p1, b"FOR") => return Class::Write,
                b"INSERT" | b"REPLACE" if with && !call() => return Class::Write,
                _ => {}
            }
        }
        (p2, p1) = (p1, Some(tok));
    }
    if session {
        Class::SessionState
    } else {
        Class::Read
    }
}

#[cfg(test)]
mod tests;
