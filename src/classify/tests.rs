//! Classification cases, one assertion table per class.

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
