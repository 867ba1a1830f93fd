//! What cutover sends around a mirrored write besides the write itself
//! (issue 17): a pinned prepared write costs one `SET` on each side; the
//! `SET timestamp=DEFAULT` after it is owed and sent only before a statement
//! that may read the clock; the mirror's `SET autocommit=1` after a
//! transaction is owed and sent before anything but the next BEGIN. Read
//! from each server's general log (real MariaDB pairs), and checked by what
//! a client sees: NOW() is the real time again, an autocommit write after a
//! transaction is committed on the mirror, also after the mirror became the
//! authoritative side.

mod support;

use std::time::Duration;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use support::proxy::TestProxy;
use support::{MariaDb, Pair};

const GENERAL_LOG: [&str; 2] = ["--general-log=1", "--log-output=TABLE"];

async fn pair_with_general_log() -> Pair {
    let pair = Pair::start_with(&GENERAL_LOG, &GENERAL_LOG).await;
    for db in [&pair.source, &pair.destination] {
        db.exec(
            "CREATE TABLE t (id INT PRIMARY KEY, v INT, \
             at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
        )
        .await;
    }
    pair
}

/// The queries the connection that ran `marker` sent, in order, from its
/// first statement on (general log: `Query` and `Execute` entries).
async fn commands_of_connection(db: &MariaDb, marker: &str) -> Vec<String> {
    let thread: Vec<u64> = db
        .query(&format!(
            "SELECT thread_id FROM mysql.general_log WHERE argument LIKE '%{marker}%' \
             AND command_type IN ('Query', 'Execute') LIMIT 1"
        ))
        .await;
    let thread = *thread
        .first()
        .unwrap_or_else(|| panic!("{marker} not in the general log"));
    let rows: Vec<(String, Vec<u8>)> = db
        .query(&format!(
            "SELECT command_type, argument FROM mysql.general_log WHERE thread_id = {thread} \
             AND command_type IN ('Query', 'Execute')"
        ))
        .await;
    rows.into_iter()
        .map(|(_, a)| String::from_utf8_lossy(&a).into_owned())
        .collect()
}

const ROWS: &str = "SELECT id, v, CAST(at AS CHAR) FROM t ORDER BY id";

/// The rows of `sql` on the source and on the destination.
async fn on_both<T: FromRow + Send + 'static>(pair: &Pair, sql: &str) -> [Vec<T>; 2] {
    [
        pair.source.query(sql).await,
        pair.destination.query(sql).await,
    ]
}

fn count(cmds: &[String], prefix: &str) -> usize {
    cmds.iter().filter(|c| c.starts_with(prefix)).count()
}

/// Index of the first command starting with `prefix`.
fn position(cmds: &[String], prefix: &str) -> usize {
    cmds.iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {cmds:#?}"))
}

/// After a pause of 1.2 s, NOW() through `c` is at least 1 s past the last
/// write's pinned `at` in `t`: the session's clock is the real one again (a
/// clock left pinned would give the write's own time).
async fn assert_clock_is_real(c: &mut mysql_async::Conn, what: &str) {
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let lag: Option<i64> = c
        .query_first("SELECT TIMESTAMPDIFF(MICROSECOND, MAX(at), NOW(6)) FROM t")
        .await
        .unwrap();
    assert!(
        lag.unwrap() >= 1_000_000,
        "{what} is the real time: lag {lag:?} µs"
    );
}

/// Two transactions of prepared writes, then an autocommit write.
async fn two_transactions(c: &mut mysql_async::Conn) {
    c.query_drop("BEGIN").await.unwrap();
    for id in 1..=3 {
        c.exec_drop(
            "INSERT INTO t (id, v) VALUES (?, ?) /* mark-insert */",
            (id, id),
        )
        .await
        .unwrap();
    }
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("BEGIN").await.unwrap();
    c.exec_drop("UPDATE t SET v = v + ? WHERE id = ?", (10, 1))
        .await
        .unwrap();
    c.exec_drop("UPDATE t SET v = v + ? WHERE id = ?", (10, 2))
        .await
        .unwrap();
    c.query_drop("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_writes_cost_one_set_each_and_the_owed_commands_go_only_where_needed() {
    let pair = pair_with_general_log().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    two_transactions(&mut c).await;

    for db in [&pair.source, &pair.destination] {
        let cmds = commands_of_connection(db, "mark-insert").await;
        assert_eq!(
            count(&cmds, "SET timestamp="),
            5,
            "one pin per write on {}: {cmds:#?}",
            db.port
        );
        assert_eq!(
            count(&cmds, "SET timestamp=DEFAULT"),
            0,
            "BEGIN, COMMIT and pinned writes read no clock: no reset yet on {}: {cmds:#?}",
            db.port
        );
    }
    let dst = commands_of_connection(&pair.destination, "mark-insert").await;
    assert_eq!(
        count(&dst, "SET autocommit=0"),
        1,
        "switched off once: {dst:#?}"
    );
    assert_eq!(
        count(&dst, "SET autocommit=1"),
        0,
        "still owed after the second COMMIT: {dst:#?}"
    );

    // An autocommit write: the mirror gets its autocommit back first, so the
    // write is committed there (visible to another connection).
    c.exec_drop(
        "INSERT INTO t (id, v) VALUES (?, ?) /* mark-autocommit */",
        (100, 1),
    )
    .await
    .unwrap();
    let dst = commands_of_connection(&pair.destination, "mark-insert").await;
    let restored = position(&dst, "SET autocommit=1");
    let write = position(&dst, "INSERT INTO t (id, v) VALUES (100");
    assert!(
        restored < write,
        "SET autocommit=1 before the autocommit write: {dst:#?}"
    );
    let seen: Vec<i64> = pair
        .destination
        .query("SELECT v FROM t WHERE id = 100")
        .await;
    assert_eq!(
        seen,
        vec![1],
        "the autocommit write is committed on the mirror"
    );

    // The clock is real again for a statement that reads it: the owed reset
    // goes before the SELECT (a pinned clock would give the last write's time).
    assert_clock_is_real(&mut c, "NOW() after pinned writes").await;
    let src = commands_of_connection(&pair.source, "mark-insert").await;
    assert_eq!(count(&src, "SET timestamp=DEFAULT"), 1, "{src:#?}");

    let [s, d] = on_both::<(i32, i32, String)>(&pair, ROWS).await;
    assert_eq!(s, d, "equal to the microsecond on both sides");
    assert_eq!(s.len(), 4);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_mirror_owes_is_paid_when_it_becomes_the_authoritative_side() {
    let pair = pair_with_general_log().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    two_transactions(&mut c).await;
    proxy.set_pattern(Pattern::DstFirst);

    let autocommit: Option<i64> = c.query_first("SELECT @@autocommit").await.unwrap();
    assert_eq!(
        autocommit,
        Some(1),
        "the client's autocommit on the new authoritative side"
    );
    assert_clock_is_real(&mut c, "the former mirror's clock").await;

    c.exec_drop("INSERT INTO t (id, v) VALUES (?, ?)", (200, 2))
        .await
        .unwrap();
    for db in [&pair.destination, &pair.source] {
        let seen: Vec<i64> = db.query("SELECT v FROM t WHERE id = 200").await;
        assert_eq!(seen, vec![2], "committed on {}", db.port);
    }
    let [s, d] = on_both::<(i32, i32, String)>(&pair, ROWS).await;
    assert_eq!(s, d);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_and_a_client_s_own_autocommit_keep_the_mirror_right() {
    let pair = pair_with_general_log().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    two_transactions(&mut c).await;
    c.query_drop("BEGIN").await.unwrap();
    c.exec_drop("INSERT INTO t (id, v) VALUES (?, ?)", (300, 3))
        .await
        .unwrap();
    c.query_drop("ROLLBACK").await.unwrap();
    // the client's own autocommit=0: its writes wait for its COMMIT on both sides
    c.query_drop("SET autocommit = 0").await.unwrap();
    c.exec_drop("INSERT INTO t (id, v) VALUES (?, ?)", (301, 3))
        .await
        .unwrap();
    for db in [&pair.source, &pair.destination] {
        let seen: Vec<i64> = db.query("SELECT v FROM t WHERE id IN (300, 301)").await;
        assert!(
            seen.is_empty(),
            "nothing committed yet on {}: {seen:?}",
            db.port
        );
    }
    c.query_drop("COMMIT").await.unwrap();
    c.query_drop("SET autocommit = 1").await.unwrap();
    c.exec_drop("INSERT INTO t (id, v) VALUES (?, ?)", (302, 3))
        .await
        .unwrap();
    for db in [&pair.source, &pair.destination] {
        let seen: Vec<i32> = db
            .query("SELECT id FROM t WHERE id >= 300 ORDER BY id")
            .await;
        assert_eq!(seen, vec![301, 302], "on {}", db.port);
    }
    proxy.stop().await;
}

// ---- [mirror] pinning = "when_needed" ---------------------------------------

const WHEN_NEEDED: &str = "[mirror]\npinning = \"when_needed\"\ncatalog_refresh_ms = 300";

/// The pinning variables cutover set on a connection (not the client's).
fn pins(cmds: &[String]) -> usize {
    cmds.iter()
        .filter(|c| {
            c.starts_with("SET timestamp=")
                || c.starts_with("SET rand_seed1=")
                || c.starts_with("SET insert_id=")
                || c.starts_with("SET STATEMENT")
        })
        .count()
}

async fn equal(pair: &Pair, sql: &str) -> Vec<(i64, String)> {
    let [s, d] = on_both::<(i64, String)>(pair, sql).await;
    assert_eq!(s, d, "{sql}: the two sides differ");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_needed_pins_only_what_a_write_can_read() {
    let pair = Pair::start_with(&GENERAL_LOG, &GENERAL_LOG).await;
    let proxy = TestProxy::start_with(&pair, Pattern::SrcFirst, WHEN_NEEDED).await;
    let mut c = proxy.conn().await;
    // Created through cutover: each DDL re-reads the catalog before the next statement.
    for ddl in [
        "CREATE TABLE p (id INT PRIMARY KEY, v BIGINT) /* mark-ddl */",
        "CREATE TABLE c (id INT PRIMARY KEY, v INT, \
         at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))",
        "CREATE TABLE a (id INT AUTO_INCREMENT PRIMARY KEY, v INT)",
        "CREATE TABLE r (id INT PRIMARY KEY, x DOUBLE)",
        "CREATE TABLE sv (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING",
    ] {
        c.query_drop(ddl).await.unwrap();
    }
    // the destination hands out other AUTO_INCREMENT values unless pinned
    pair.destination
        .exec("ALTER TABLE a AUTO_INCREMENT = 100")
        .await;
    let pinned_so_far = || async {
        let mut v = Vec::new();
        for db in [&pair.source, &pair.destination] {
            v.push(pins(&commands_of_connection(db, "mark-ddl").await));
        }
        v
    };
    // the DDL itself is pinned whole (SET STATEMENT … FOR CREATE TABLE)
    let after_ddl = pinned_so_far().await;
    assert_eq!(after_ddl, vec![5, 5]);

    // plain writes to a plain table: nothing pinned on either side
    for id in 1..=3 {
        c.exec_drop("INSERT INTO p VALUES (?, ?)", (id, id))
            .await
            .unwrap();
    }
    c.exec_drop("UPDATE p SET v = v + ? WHERE id = ?", (5, 1))
        .await
        .unwrap();
    c.exec_drop("DELETE FROM p WHERE id = ?", (3,))
        .await
        .unwrap();
    let after_plain = pinned_so_far().await;

    // what a write can read is still pinned
    c.exec_drop("INSERT INTO c (id, v) VALUES (?, ?)", (1, 1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.exec_drop("UPDATE c SET v = ? WHERE id = ?", (2, 1))
        .await
        .unwrap();
    for v in 1..=3 {
        c.exec_drop("INSERT INTO a (v) VALUES (?)", (v,))
            .await
            .unwrap();
    }
    c.exec_drop("INSERT INTO r VALUES (?, RAND())", (1,))
        .await
        .unwrap();
    c.query_drop("INSERT INTO p VALUES (10, MICROSECOND(NOW(6)))")
        .await
        .unwrap();
    c.exec_drop("INSERT INTO sv VALUES (?, ?)", (1, 1))
        .await
        .unwrap();
    c.exec_drop("UPDATE sv SET v = ? WHERE id = ?", (2, 1))
        .await
        .unwrap();
    equal(&pair, "SELECT id, CAST(at AS CHAR) FROM c").await;
    let ids = equal(&pair, "SELECT id, CAST(v AS CHAR) FROM a ORDER BY id").await;
    assert_eq!(
        ids.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "the primary's ids"
    );
    equal(&pair, "SELECT id, CAST(x AS CHAR) FROM r").await;
    equal(&pair, "SELECT id, CAST(v AS CHAR) FROM p ORDER BY id").await;
    equal(
        &pair,
        "SELECT id, CONCAT(v, ' ', ROW_START, ' ', ROW_END) FROM sv FOR SYSTEM_TIME ALL ORDER BY ROW_START",
    )
    .await;

    // DDL through cutover that gives a plain table a clock default: pinned at once
    c.query_drop("ALTER TABLE p ADD COLUMN at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)")
        .await
        .unwrap();
    c.exec_drop("INSERT INTO p (id, v) VALUES (?, ?)", (20, 20))
        .await
        .unwrap();
    equal(&pair, "SELECT id, CAST(at AS CHAR) FROM p WHERE id = 20").await;

    // A table created directly on both servers, written at once (before the
    // next catalog read): a target the catalog has not seen is pinned whole.
    for db in [&pair.source, &pair.destination] {
        db.exec("CREATE TABLE d (id INT PRIMARY KEY, at DATETIME(6) DEFAULT NOW(6))")
            .await;
    }
    c.exec_drop("INSERT INTO d (id) VALUES (?)", (1,))
        .await
        .unwrap();
    equal(&pair, "SELECT id, CAST(at AS CHAR) FROM d").await;

    // A temporary table's defaults are not in the catalog, and it may shadow
    // a plain table of the same name (here `r`): while the session holds
    // one, every write is pinned (its rows reach a real table below).
    c.query_drop("CREATE TEMPORARY TABLE r (id INT PRIMARY KEY, at DATETIME(6) DEFAULT NOW(6))")
        .await
        .unwrap();
    c.exec_drop("INSERT INTO r (id) VALUES (?)", (1,))
        .await
        .unwrap();
    c.query_drop("INSERT INTO d SELECT id + 1, at FROM r")
        .await
        .unwrap();
    equal(&pair, "SELECT id, CAST(at AS CHAR) FROM d ORDER BY id").await;

    assert_eq!(
        after_plain, after_ddl,
        "plain writes to a plain table carry no pin"
    );
    let after = pinned_so_far().await;
    for (a, p) in after.iter().zip(&after_plain) {
        // c ×2, a ×3 (the mirror: insert_id; the source: nothing to pin),
        // r, p with NOW(), sv ×2, the ALTER, p after it, d, temporary r, d from r
        assert!(
            a - p >= 9,
            "the other writes were pinned: {after:?} after {after_plain:?}"
        );
    }
    proxy.stop().await;
}
