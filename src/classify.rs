//! Statement classification for routing; runs on every COM_QUERY.
//!
//! Not a SQL parser: over the tokens of [`crate::lexer`] (comments, strings
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
    Begin,
    Commit,
    Rollback,
    Savepoint,
    /// RELEASE SAVEPOINT, ROLLBACK TO savepoint (not a full rollback), XA …,
    /// SET TRANSACTION.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
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
}

/// Classify one COM_QUERY payload (may contain several statements when the
/// client enabled multi-statements).
pub fn classify(sql: &[u8]) -> Classified {
    let (class, tx, db, statements) = run(sql);
    Classified {
        class,
        tx,
        use_db: db.and_then(db_name),
        statements,
    }
}

/// Cheap leading-keyword check used for prepared statements too (same rules),
/// returns the class only.
pub fn classify_class(sql: &[u8]) -> Class {
    run(sql).0
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

fn run(sql: &[u8]) -> (Class, Option<TxKind>, Option<Tok<'_>>, usize) {
    let mut lx = Lexer::new(sql);
    let (mut class, mut tx, mut db, mut n) = (Class::Read, None, None, 0);
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
    (class, tx, db, n)
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
mod tests {
    use super::Class::*;
    use super::TxKind::*;
    use super::*;

    fn c(s: &str) -> Classified {
        let r = classify(s.as_bytes());
        assert_eq!(classify_class(s.as_bytes()), r.class, "{s:?}");
        assert_eq!(r.tx.is_some(), r.class == Transaction, "{s:?}");
        r
    }

    fn check(class: Class, cases: &[&str]) {
        for s in cases {
            let r = c(s);
            assert_eq!((r.class, r.statements), (class, 1), "{s:?}");
        }
    }

    fn check_tx(kind: TxKind, cases: &[&str]) {
        for s in cases {
            let r = c(s);
            assert_eq!((r.class, r.tx), (Transaction, Some(kind)), "{s:?}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn reads() {
        check(Read, &[
            "SELECT 1", "select * from t", "  \n\tSeLeCt 1;", "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t LOCK IN SHARE MODE", "SELECT * FROM t FOR SHARE", "SHOW TABLES",
            "show full processlist", "EXPLAIN SELECT 1", "EXPLAIN UPDATE t SET a = 1",
            "EXPLAIN FORMAT=JSON DELETE FROM t", "DESCRIBE t", "DESC t", "HELP 'select'",
            "WITH c AS (SELECT 1) SELECT * FROM c", "with recursive c as (select 1) select 2",
            "WITH c AS (SELECT 1) SELECT REPLACE(a, 'x', 'y'), INSERT(a, 1, 2, 'z') FROM c",
            "WITH c AS (SELECT 1) SELECT * FROM c FOR UPDATE", "VALUES (1), (2)", "TABLE t",
            "(SELECT 1) UNION (SELECT 2)", "((SELECT 1))", "(WITH c AS (SELECT 1) SELECT 2)",
            "CHECKSUM TABLE t", "SELECT SLEEP(1)", "SELECT LASTVAL(s), PREVIOUS VALUE FOR s",
            "SELECT IS_FREE_LOCK('a')", "SELECT get_lock_count FROM t", "SELECT a = 1 FROM t",
            "EXPLAIN ANALYZE SELECT * FROM t", "ANALYZE SELECT 1", "ANALYZE FORMAT=JSON SELECT 1",
            "SELECT 'INTO OUTFILE', \"GET_LOCK(\", `@x := 1` FROM t",
        ]);
    }

    #[rustfmt::skip]
    #[test]
    fn writes() {
        check(Write, &[
            "INSERT INTO t VALUES (1)", "update t set a = 1", "DELETE FROM t", "DO 1",
            "REPLACE INTO t VALUES (1)", "LOAD DATA INFILE 'x' INTO TABLE t", "CALL p()",
            "LOAD XML INFILE 'x' INTO TABLE t", "HANDLER t OPEN", "LOCK TABLES t WRITE",
            "UNLOCK TABLES", "EXECUTE s USING @a", "ANALYZE TABLE t", "ANALYZE LOCAL TABLE t",
            "ANALYZE NO_WRITE_TO_BINLOG TABLE t", "OPTIMIZE TABLE t", "REPAIR TABLE t",
            "CHECK TABLE t", "FLUSH PRIVILEGES", "KILL 5", "BEGIN NOT ATOMIC SELECT 1; END",
            "SET PASSWORD = PASSWORD('x')", "SET PASSWORD FOR 'u'@'h' = 'x'", "garbage here",
            "'just a string'", "(INSERT INTO t VALUES (1))", "EXPLAIN ANALYZE UPDATE t SET a = 1",
            "ANALYZE DELETE FROM t", "ANALYZE FORMAT=JSON UPDATE t SET a=1",
            "SELECT * FROM t INTO OUTFILE '/tmp/x'", "SELECT 1 INTO DUMPFILE '/tmp/x'",
            "SELECT GET_LOCK('a', 10)", "select release_lock ('a')", "SELECT RELEASE_ALL_LOCKS()",
            "SELECT NEXTVAL(s)", "SELECT SETVAL(s, 10)", "SELECT NEXT VALUE FOR s",
            "SELECT s.nextval", "SELECT (SELECT GET_LOCK('a', 1))",
            "WITH c AS (SELECT 1) UPDATE t SET a = 1", "WITH c AS (SELECT 1) DELETE FROM t",
            "WITH c AS (SELECT 1) INSERT INTO t SELECT * FROM c",
            "WITH c AS (SELECT 1) REPLACE INTO t SELECT * FROM c", "BEGIN WORK NOW",
            "START SLAVE", "RELEASE x", "SET", "USE", "USE 'db'", "/* app=x */ UPDATE t SET a = 1",
            "-- note\nINSERT INTO t VALUES (1)", "# note\nDELETE FROM t", "*/ SELECT 1",
            "/*+ hint */ INSERT INTO t VALUES (1)", "SET STATEMENT a=1",
            "SET STATEMENT max_statement_time=1 FOR UPDATE t SET a = 1",
            "lbl: BEGIN NOT ATOMIC SELECT 1; END lbl", "IF 1 THEN SELECT 1; END IF",
        ]);
        for s in ["", "  ", ";", " ; ;", "/* only */", "-- x", "#", "/*!*/", "/*!40101 */;"] {
            assert_eq!((c(s).class, c(s).statements), (Write, 0), "{s:?}");
        }
    }

    #[rustfmt::skip]
    #[test]
    fn ddl() {
        check(Ddl, &[
            "CREATE TABLE t (a INT)", "create temporary table t (a int)", "DROP TABLE t",
            "ALTER TABLE t ADD b INT", "TRUNCATE TABLE t", "TRUNCATE t", "RENAME TABLE a TO b",
            "GRANT ALL ON *.* TO u", "REVOKE ALL ON *.* FROM u", "CREATE INDEX i ON t (a)",
            "CREATE VIEW v AS SELECT 1", "CREATE DATABASE d", "DROP SCHEMA d", "CREATE USER u",
            "CREATE SEQUENCE s", "DROP TRIGGER tr", "ALTER EVENT e DO BEGIN SELECT 1; END",
            "CREATE OR REPLACE VIEW v AS SELECT CASE WHEN a THEN 1 END FROM t",
            "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t",
            "/*!50001 DROP VIEW IF EXISTS `v`*/", "/*!40000 ALTER TABLE `t` DISABLE KEYS */;",
            "CREATE TABLE t (a INT) SELECT GET_LOCK('x', 1)",
        ]);
    }

    #[rustfmt::skip]
    #[test]
    fn transactions() {
        check_tx(Begin, &[
            "BEGIN", "begin;", "BEGIN WORK", "START TRANSACTION", "start transaction read only",
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
            "START TRANSACTION READ WRITE, WITH CONSISTENT SNAPSHOT",
        ]);
        check_tx(Commit, &[
            "COMMIT", "commit work", "COMMIT AND NO CHAIN NO RELEASE", "COMMIT AND CHAIN",
        ]);
        check_tx(Rollback, &[
            "ROLLBACK", "ROLLBACK WORK", "rollback and no chain", "ROLLBACK RELEASE",
        ]);
        check_tx(Other, &[
            "ROLLBACK TO SAVEPOINT s", "ROLLBACK TO s", "ROLLBACK WORK TO SAVEPOINT s",
            "RELEASE SAVEPOINT s", "XA START 'x'", "XA COMMIT 'x'",
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED", "SET SESSION TRANSACTION READ ONLY",
            "set global transaction isolation level serializable",
        ]);
        check_tx(Savepoint, &["SAVEPOINT s", "savepoint `a b`"]);
    }

    #[rustfmt::skip]
    #[test]
    fn session_state() {
        check(SessionState, &[
            "SET NAMES utf8mb4", "SET CHARACTER SET utf8", "SET autocommit = 0", "SET @x = 1",
            "SET @@session.sql_mode = ''", "SET SESSION wait_timeout = 10", "SET LOCAL x = 1",
            "SET GLOBAL x = 1", "SET ROLE r", "SET DEFAULT ROLE r FOR u", "DROP PREPARE s",
            "PREPARE s FROM 'SELECT ?'", "DEALLOCATE PREPARE s", "SELECT a INTO @v FROM t",
            "SELECT 1 INTO @a, @b", "SELECT @x := 1", "SELECT (@rn := @rn + 1) AS rn FROM t",
            "/*!40101 SET NAMES utf8 */", "/*!*/SET NAMES utf8", "/*!40103 SET TIME_ZONE='+00:00' */;",
            "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;",
            "/*M!100101 SET NOTE_VERBOSITY=@@NOTE_VERBOSITY, NOTE_VERBOSITY=0 */;",
        ]);
        assert_eq!(c("SET autocommit=0").tx, None);
        check(Read, &["SET STATEMENT max_statement_time=1 FOR SELECT 1"]);
    }

    #[rustfmt::skip]
    #[test]
    fn use_db() {
        let cases = [
            ("USE db", "db"), ("use db;", "db"), ("USE `my db`", "my db"), ("USE `a``b`", "a`b"),
            ("USE \"q\"", "q"), ("  /* x */ USE Shop_2 ; ", "Shop_2"),
        ];
        for (s, db) in cases {
            let r = c(s);
            assert_eq!((r.class, r.use_db.as_deref(), r.statements), (SessionState, Some(db), 1));
        }
        assert_eq!(c("USE a; USE b").use_db.as_deref(), Some("b"));
        let r = c("USE a; INSERT INTO t VALUES (1)");
        assert_eq!((r.class, r.use_db.as_deref()), (Write, Some("a")));
        assert_eq!(c("SELECT 1").use_db, None);
        assert_eq!(classify(b"USE `\xff`").use_db.as_deref(), Some("\u{fffd}"));
    }

    #[rustfmt::skip]
    #[test]
    fn strings_and_comments_hide_semicolons() {
        for s in [
            "SELECT ';'", "SELECT 'a;b', \"c;d\", `e;f` FROM t;", "SELECT 'it''s; -- /*'",
            "SELECT 'a\\';b'", "SELECT \"x\\\";\"", "SELECT `a``;b`", "SELECT 1 /* ; */",
            "SELECT 1 -- ;\n", "SELECT 1 # ;", "SELECT 1; -- trailing\n", "SELECT 1;;",
            "SELECT 1 ;  /* c */ ", "INSERT INTO t VALUES ('); DROP TABLE t; --')", "SELECT 1--1",
        ] {
            assert_eq!(c(s).statements, 1, "{s:?}");
        }
        let r = c("INSERT INTO t VALUES ('/*'); SELECT 1");
        assert_eq!((r.class, r.statements), (Write, 2));
        assert_eq!(c("SELECT 'a\\'; DROP TABLE t").class, Read);
        assert_eq!(c("SELECT 1 -- x\n; UPDATE t SET a=1").class, Write);
        assert_eq!(c("SELECT 1 --x\n; UPDATE t SET a=1").statements, 2);
    }

    #[rustfmt::skip]
    #[test]
    fn multi_statements() {
        let m = |s: &str| {
            let r = c(s);
            (r.class, r.tx, r.statements)
        };
        assert_eq!(m("INSERT INTO t VALUES (1); SELECT 1"), (Write, None, 2));
        assert_eq!(m("SELECT 1; SELECT 2"), (Read, None, 2));
        assert_eq!(m("SELECT 1;\nSELECT 2;\n"), (Read, None, 2));
        assert_eq!(m("BEGIN; COMMIT"), (Transaction, Some(Commit), 2));
        assert_eq!(m("SET a=1; BEGIN; SELECT 1"), (Transaction, Some(Begin), 3));
        assert_eq!(m("BEGIN; SAVEPOINT x; SELECT 1"), (Transaction, Some(Savepoint), 3));
        assert_eq!(m("BEGIN; INSERT INTO t VALUES (1); COMMIT"), (Write, None, 3));
        assert_eq!(m("CREATE TABLE t (a INT); INSERT INTO t VALUES (1)"), (Write, None, 2));
        assert_eq!(m("CREATE TABLE t (a INT); SELECT 1; SET x=1"), (Ddl, None, 3));
        assert_eq!(m("SET NAMES utf8; SELECT 1"), (SessionState, None, 2));
        assert_eq!(m("SELECT 1;;SELECT 2"), (Read, None, 2));
        let dump = "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n\
                    /*!40101 SET NAMES utf8mb4 */;\n/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n\
                    /*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n";
        assert_eq!(m(dump), (SessionState, None, 4));
        let more = "LOCK TABLES `t` WRITE;\n/*!40000 ALTER TABLE `t` DISABLE KEYS */;";
        assert_eq!(m(&format!("{dump}{more}")), (Write, None, 6));
    }

    #[rustfmt::skip]
    #[test]
    fn compound_bodies_are_one_statement() {
        let proc_ = "CREATE DEFINER=`root`@`localhost` PROCEDURE p(IN a INT)\nBEGIN\n\
            DECLARE x INT DEFAULT 0;\n\
            IF a > 0 THEN SELECT 1; ELSEIF a < 0 THEN SET x = IF(a, 1, 2); ELSE SELECT 3; END IF;\n\
            l: LOOP SET x = x + 1; IF x > 3 THEN LEAVE l; END IF; END LOOP l;\n\
            WHILE x > 0 DO SET x = x - 1; END WHILE;\n\
            REPEAT SET x = x + 1; UNTIL x > 2 END REPEAT;\n\
            CASE a WHEN 1 THEN SELECT CASE WHEN x THEN IF(1,2,3) ELSE 0 END; ELSE BEGIN END; END CASE;\n\
            SET x = REPEAT('a', 2);\nEND";
        assert_eq!((c(proc_).class, c(proc_).statements), (Ddl, 1));
        let r = c(&format!("{proc_}; SELECT 1"));
        assert_eq!((r.class, r.statements), (Ddl, 2));
        let trig = "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN \
                    SET NEW.a = CASE WHEN NEW.b THEN 1 END; END; INSERT INTO t VALUES (1)";
        assert_eq!((c(trig).class, c(trig).statements), (Write, 2));
        let trig2 = "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW \
                     IF NEW.a THEN SET NEW.b = 1; END IF; SELECT 1";
        assert_eq!(c(trig2).statements, 2);
        let func = "CREATE FUNCTION f() RETURNS INT DETERMINISTIC BEGIN RETURN 1; END; SELECT f()";
        assert_eq!((c(func).class, c(func).statements), (Ddl, 2));
        let r = c("BEGIN NOT ATOMIC DECLARE x INT; FOR i IN 1..3 DO SELECT i; END FOR; END; SELECT 2");
        assert_eq!((r.class, r.statements), (Write, 2));
        assert_eq!(c("CREATE TABLE t (begin INT); INSERT INTO t VALUES (1)").statements, 2);
        assert_eq!(c("CREATE PROCEDURE IF NOT EXISTS p() SELECT 1; SELECT 2").statements, 2);
        assert_eq!(c("DROP TABLE IF EXISTS t; CREATE TABLE t (a INT)").statements, 2);
        assert_eq!(c("BEGIN; SELECT 1; COMMIT").statements, 3);
    }

    #[rustfmt::skip]
    #[test]
    fn never_panics() {
        let ok = |v: &[u8]| {
            let r = classify(v);
            assert_eq!(classify_class(v), r.class);
            assert_eq!(r.tx.is_some(), r.class == Transaction);
            assert!(r.use_db.is_none() || r.class != Read);
        };
        let pieces: &[&[u8]] = &[
            b"", b"SELECT ", b"BEGIN ", b"END ", b"IF ", b"CASE ", b"SET ", b"USE ", b"INTO ",
            b"(", b")", b";", b"'", b"\"", b"`", b"\\", b"/*", b"*/", b"/*!", b"/*M!", b"--",
            b"#", b"\n", b":", b"=", b"@", b"WITH ", b"CREATE PROCEDURE p() BEGIN ", b"ANALYZE ",
            b"FOR ", b"STATEMENT ", b"\xff", b"\x00", b"x",
        ];
        for b in 0..=255u8 {
            (0..=255u8).for_each(|b2| ok(&[b, b2]));
            pieces.iter().for_each(|p| ok(&[p, &[b][..]].concat()));
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            let mut v = Vec::new();
            for _ in 0..seed % 40 {
                seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
                match seed % 4 {
                    0 => v.push((seed >> 8) as u8),
                    _ => v.extend_from_slice(pieces[(seed >> 8) as usize % pieces.len()]),
                }
            }
            ok(&v);
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
        }
        assert_eq!(c(&"ANALYZE ".repeat(100_000)).class, Write);
        assert_eq!(c(&format!("{}SELECT 1", "SET STATEMENT a=1 FOR ".repeat(1000))).class, Write);
        assert_eq!(c(&"(".repeat(100_000)).class, Write);
        let deep = format!("BEGIN NOT ATOMIC {}", "BEGIN CASE ".repeat(10_000));
        assert_eq!(c(&deep).statements, 1);
        assert_eq!(c("SELECT 'unterminated; SELECT 2").statements, 1);
        assert_eq!(c("SELECT 1 /* unterminated; SELECT 2").statements, 1);
    }
}
