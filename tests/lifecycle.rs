//! The ends of a session that nobody asks for: a backend dropping an idle
//! session (issue 18 item 3) and a client leaving while its statement runs
//! (issue 16 item 3). Through cutover both are noticed at once, not at the
//! next statement.

mod support;

use std::time::{Duration, Instant};

use cutover::pattern::Pattern;
use cutover::wire::PacketIo;
use mysql_async::prelude::*;
use support::proxy::raw::{self, login_as};
use support::proxy::TestProxy;
use support::{MariaDb, Pair};

/// Generous bound for what must happen (liveness, not timing).
const LIVE: Duration = Duration::from_secs(10);

/// How the peer of `io` ended the connection, waiting up to `wait`:
/// "eof", "reset" or "open" (nothing happened).
async fn end_of(io: &mut PacketIo, wait: Duration) -> &'static str {
    match tokio::time::timeout(wait, io.read_frame()).await {
        Err(_) => "open",
        Ok(Ok(None)) => "eof",
        Ok(Ok(Some(f))) => {
            // A last word (an ERR) before the close is allowed.
            assert_eq!(f.payload()[0], 0xFF, "unexpected packet {:?}", f.payload());
            match io.read_frame().await {
                Ok(None) => "eof",
                Ok(Some(_)) => "open",
                Err(_) => "reset",
            }
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => "reset",
        Ok(Err(_)) => "eof",
    }
}

async fn raw_session(port: u16, sql: &str) -> PacketIo {
    let mut l = login_as(port, raw::default_caps(), 0, "app", "app").await;
    assert_eq!(l.reply[0], 0, "login: {:?}", l.reply);
    let mut q = vec![0x03];
    q.extend_from_slice(sql.as_bytes());
    assert_eq!(raw::command(&mut l.io, &q).await[0], 0, "{sql}");
    l.io
}

#[tokio::test]
async fn an_idle_session_dropped_by_the_authoritative_backend_is_closed_at_once() {
    let pair = Pair::start().await;
    let mut direct = raw_session(pair.source.port, "SET wait_timeout = 1").await;
    let expected = end_of(&mut direct, LIVE).await;
    assert_ne!(expected, "open", "MariaDB drops the idle session");
    for pattern in [Pattern::SrcOnly, Pattern::SrcFirst, Pattern::DstFirst] {
        let proxy = TestProxy::start(&pair, pattern).await;
        // SET is applied to both sides in double-write patterns: whichever
        // is authoritative drops the session after a second.
        let mut io = raw_session(proxy.port, "SET wait_timeout = 1").await;
        let started = Instant::now();
        let how = end_of(&mut io, LIVE).await;
        assert_eq!(
            how, expected,
            "{pattern}: closed the way the server closed it"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{pattern}: noticed while idle, not at the next statement"
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn an_idle_close_on_the_mirror_side_does_not_touch_the_client() {
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY)";
    pair.source.exec(ddl).await;
    pair.destination.exec(ddl).await;
    // Only the destination drops idle sessions quickly.
    pair.destination.exec("SET GLOBAL wait_timeout = 1").await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The client's session is intact; the mirror is reopened on next use.
    c.query_drop("INSERT INTO t VALUES (2)").await.unwrap();
    let one: Option<i64> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    let dst: Vec<i32> = pair.destination.query("SELECT id FROM t ORDER BY id").await;
    assert_eq!(dst, [1, 2], "both writes mirrored");
    assert_eq!(
        proxy.stats().double_write_failure,
        0,
        "an idle close is no failure"
    );
    pair.destination
        .exec("SET GLOBAL wait_timeout = 28800")
        .await;
    proxy.stop().await;
}

/// Backend threads running `sql_prefix` on `db`, as sent or pinned by the
/// mirror (`SET STATEMENT … FOR <statement>`, issue 20).
async fn running(db: &MariaDb, sql_prefix: &str) -> i64 {
    let rows: Vec<i64> = db
        .query(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
             WHERE (INFO LIKE '{sql_prefix}%' OR INFO LIKE 'SET STATEMENT % FOR {sql_prefix}%') \
             AND COMMAND = 'Query'"
        ))
        .await;
    rows[0]
}

async fn wait_until_running(db: &MariaDb, sql_prefix: &str) {
    let deadline = Instant::now() + LIVE;
    while running(db, sql_prefix).await == 0 {
        assert!(Instant::now() < deadline, "{sql_prefix} never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_leaves_mid_statement_frees_the_backend_and_its_slot() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start_with(&pair, Pattern::SrcFirst, "max_connections = 1").await;
    for sql in [
        "SELECT SLEEP(8)",
        // Writes nothing until it ends: a server alone never notices.
        "SELECT BENCHMARK(2000000000, MD5('x'))",
    ] {
        let mut l = login_as(proxy.port, raw::default_caps(), 0, "app", "app").await;
        assert_eq!(l.reply[0], 0);
        let mut q = vec![0x03];
        q.extend_from_slice(sql.as_bytes());
        l.io.send_packet(0, &q).await.unwrap();
        let prefix = &sql[..12];
        wait_until_running(&pair.source, prefix).await;
        drop(l); // the client closes its socket
        let left = Instant::now();
        while running(&pair.source, prefix).await > 0 {
            assert!(
                left.elapsed() < Duration::from_secs(1),
                "{sql}: the backend query outlived its client by a second"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The slot is free: with max_connections = 1 the next client gets in.
        let mut next = None;
        while next.is_none() {
            match mysql_async::Conn::new(proxy.opts()).await {
                Ok(c) => next = Some(c),
                Err(_) if left.elapsed() < LIVE => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{sql}: slot still taken: {e}"),
            }
        }
        next.unwrap().disconnect().await.unwrap();
    }
    assert_eq!(proxy.stats().abandoned_statements, 2);
    proxy.stop().await;
}

#[tokio::test]
async fn a_mirror_write_already_applied_on_the_primary_completes_after_the_client_left() {
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY)";
    pair.source.exec(ddl).await;
    pair.destination.exec(ddl).await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    // The destination's table is locked: the mirrored INSERT waits there.
    let mut lock = pair.destination.conn().await;
    lock.query_drop("LOCK TABLES t WRITE").await.unwrap();
    let mut l = login_as(proxy.port, raw::default_caps(), 0, "app", "app").await;
    l.io.send_packet(0, b"\x03INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    wait_until_running(&pair.destination, "INSERT INTO t").await;
    drop(l); // the client leaves while the mirror waits for the lock
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        running(&pair.destination, "INSERT INTO t").await,
        1,
        "the mirror write is not killed"
    );
    lock.query_drop("UNLOCK TABLES").await.unwrap();
    let deadline = Instant::now() + LIVE;
    loop {
        let dst: Vec<i32> = pair.destination.query("SELECT id FROM t").await;
        if dst == [7] {
            break;
        }
        assert!(Instant::now() < deadline, "mirror write never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let src: Vec<i32> = pair.source.query("SELECT id FROM t").await;
    assert_eq!(src, [7]);
    assert_eq!(proxy.stats().double_write_failure, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_transaction_abandoned_mid_way_stops_the_mirror_too_and_neither_side_keeps_it() {
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY)";
    pair.source.exec(ddl).await;
    pair.destination.exec(ddl).await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    // The destination's table is locked: the mirrored INSERT, sent ahead
    // inside the transaction, waits there.
    let mut lock = pair.destination.conn().await;
    lock.query_drop("LOCK TABLES t WRITE").await.unwrap();
    let mut l = login_as(proxy.port, raw::default_caps(), 0, "app", "app").await;
    assert_eq!(l.reply[0], 0, "login: {:?}", l.reply);
    for sql in ["BEGIN", "INSERT INTO t VALUES (7)"] {
        let mut q = vec![0x03];
        q.extend_from_slice(sql.as_bytes());
        assert_eq!(raw::command(&mut l.io, &q).await[0], 0, "{sql}");
    }
    wait_until_running(&pair.destination, "INSERT INTO t").await;
    l.io.send_packet(0, b"\x03SELECT SLEEP(8)").await.unwrap();
    wait_until_running(&pair.source, "SELECT SLEEP(8)").await;
    drop(l); // the client leaves with its transaction open
    let left = Instant::now();
    // The authoritative side's answer shows the transaction still open, so
    // the mirror's queued write is stopped as well.
    while running(&pair.source, "SELECT SLEEP(8)").await > 0
        || running(&pair.destination, "INSERT INTO t").await > 0
    {
        assert!(
            left.elapsed() < LIVE,
            "backend work outlived its client ({:?})",
            left.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lock.query_drop("UNLOCK TABLES").await.unwrap();
    // Nothing was committed: the transaction is gone on both sides.
    let deadline = Instant::now() + LIVE;
    while running(&pair.destination, "INSERT INTO t").await > 0 {
        assert!(Instant::now() < deadline, "the mirror write still runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let src: Vec<i32> = pair.source.query("SELECT id FROM t").await;
    let dst: Vec<i32> = pair.destination.query("SELECT id FROM t").await;
    assert_eq!((src, dst), (vec![], vec![]), "rolled back on both sides");
    assert_eq!(proxy.stats().abandoned_statements, 1);
    proxy.stop().await;
}
