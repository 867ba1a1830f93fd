//! Routing by pattern, checked by reading each backend directly.

mod support;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use support::proxy::TestProxy;
use support::Pair;

async fn with_table(pair: &Pair) {
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(32))";
    pair.source.exec(ddl).await;
    pair.destination.exec(ddl).await;
}

async fn ids(db: &support::MariaDb) -> Vec<i32> {
    db.query("SELECT id FROM t ORDER BY id").await
}

#[tokio::test]
async fn writes_land_where_each_pattern_says() {
    let pair = Pair::start().await;
    with_table(&pair).await;
    let expect = [
        (Pattern::SrcOnly, true, false),
        (Pattern::SrcFirst, true, true),
        (Pattern::DstFirst, true, true),
        (Pattern::DstOnly, false, true),
    ];
    for (i, (pattern, on_src, on_dst)) in expect.into_iter().enumerate() {
        let proxy = TestProxy::start(&pair, pattern).await;
        let mut c = proxy.conn().await;
        let id = i as i32 + 1;
        c.query_drop(format!("INSERT INTO t VALUES ({id}, '{pattern}')"))
            .await
            .unwrap();
        let src = ids(&pair.source).await;
        let dst = ids(&pair.destination).await;
        assert_eq!(src.contains(&id), on_src, "{pattern}: source has {src:?}");
        assert_eq!(
            dst.contains(&id),
            on_dst,
            "{pattern}: destination has {dst:?}"
        );
        proxy.stop().await;
    }
}

#[tokio::test]
async fn reads_come_from_the_authoritative_side_only() {
    let pair = Pair::start().await;
    with_table(&pair).await;
    pair.source
        .exec("INSERT INTO t VALUES (1, 'from-source')")
        .await;
    pair.destination
        .exec("INSERT INTO t VALUES (1, 'from-destination')")
        .await;
    for (pattern, want) in [
        (Pattern::SrcOnly, "from-source"),
        (Pattern::SrcFirst, "from-source"),
        (Pattern::DstFirst, "from-destination"),
        (Pattern::DstOnly, "from-destination"),
    ] {
        let proxy = TestProxy::start(&pair, pattern).await;
        let mut c = proxy.conn().await;
        let v: Option<String> = c.query_first("SELECT v FROM t WHERE id = 1").await.unwrap();
        assert_eq!(v.as_deref(), Some(want), "{pattern}");
        // prepared (binary protocol) reads too
        let v: Option<String> = c
            .exec_first("SELECT v FROM t WHERE id = ?", (1,))
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some(want), "{pattern} prepared");
        // SELECT ... FOR UPDATE is a read: it must not be mirrored (no lock wait on the other side)
        c.query_drop("BEGIN").await.unwrap();
        let v: Option<String> = c
            .query_first("SELECT v FROM t WHERE id = 1 FOR UPDATE")
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some(want));
        c.query_drop("COMMIT").await.unwrap();
        proxy.stop().await;
    }
}

#[tokio::test]
async fn transactions_commit_and_roll_back_on_both_sides() {
    let pair = Pair::start().await;
    with_table(&pair).await;
    for pattern in [Pattern::SrcFirst, Pattern::DstFirst] {
        pair.source.exec("DELETE FROM t").await;
        pair.destination.exec("DELETE FROM t").await;
        let proxy = TestProxy::start(&pair, pattern).await;
        let mut c = proxy.conn().await;
        c.query_drop("BEGIN").await.unwrap();
        c.query_drop("INSERT INTO t VALUES (1, 'kept')")
            .await
            .unwrap();
        c.query_drop("INSERT INTO t VALUES (2, 'kept')")
            .await
            .unwrap();
        c.query_drop("COMMIT").await.unwrap();
        c.query_drop("START TRANSACTION").await.unwrap();
        c.query_drop("INSERT INTO t VALUES (3, 'discarded')")
            .await
            .unwrap();
        c.query_drop("ROLLBACK").await.unwrap();
        // autocommit=0 style transaction
        c.query_drop("SET autocommit = 0").await.unwrap();
        c.query_drop("INSERT INTO t VALUES (4, 'kept')")
            .await
            .unwrap();
        c.query_drop("COMMIT").await.unwrap();
        c.query_drop("INSERT INTO t VALUES (5, 'discarded')")
            .await
            .unwrap();
        c.query_drop("ROLLBACK").await.unwrap();
        c.query_drop("SET autocommit = 1").await.unwrap();
        // savepoints
        c.query_drop("BEGIN").await.unwrap();
        c.query_drop("INSERT INTO t VALUES (6, 'kept')")
            .await
            .unwrap();
        c.query_drop("SAVEPOINT s1").await.unwrap();
        c.query_drop("INSERT INTO t VALUES (7, 'discarded')")
            .await
            .unwrap();
        c.query_drop("ROLLBACK TO SAVEPOINT s1").await.unwrap();
        c.query_drop("COMMIT").await.unwrap();
        assert_eq!(
            ids(&pair.source).await,
            vec![1, 2, 4, 6],
            "{pattern} source"
        );
        assert_eq!(
            ids(&pair.destination).await,
            vec![1, 2, 4, 6],
            "{pattern} destination"
        );
        assert_eq!(proxy.stats().double_write_failure, 0);
        proxy.stop().await;
    }
}

#[tokio::test]
async fn pattern_switch_mid_session_opens_and_syncs_the_new_backend() {
    let pair = Pair::start().await;
    with_table(&pair).await;
    let proxy = TestProxy::start(&pair, Pattern::SrcOnly).await;
    let mut c = proxy.conn().await;
    c.query_drop("SET @marker = 'carried'").await.unwrap();
    c.query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'src only')")
        .await
        .unwrap();
    assert_eq!(
        proxy.stats().destination_connects,
        0,
        "src_only must not open the destination"
    );

    proxy.set_pattern(Pattern::SrcFirst);
    c.query_drop("INSERT INTO t VALUES (2, 'both')")
        .await
        .unwrap();
    assert_eq!(ids(&pair.source).await, vec![1, 2]);
    assert_eq!(ids(&pair.destination).await, vec![2]);

    proxy.set_pattern(Pattern::DstOnly);
    // Session state was replayed on the destination connection.
    let (m, mode): (Option<String>, String) = c
        .query_first("SELECT @marker, @@session.sql_mode")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.as_deref(), Some("carried"));
    assert_eq!(mode, "ANSI_QUOTES");
    let port: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
    assert_eq!(port, pair.destination.port);
    proxy.stop().await;
}

#[tokio::test]
async fn a_transaction_never_straddles_two_patterns() {
    let pair = Pair::start().await;
    with_table(&pair).await;
    let proxy = TestProxy::start(&pair, Pattern::SrcOnly).await;
    let mut c = proxy.conn().await;
    c.query_drop("BEGIN").await.unwrap();
    c.query_drop("INSERT INTO t VALUES (1, 'a')").await.unwrap();
    proxy.set_pattern(Pattern::DstOnly);
    c.query_drop("INSERT INTO t VALUES (2, 'b')").await.unwrap();
    let port: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
    assert_eq!(
        port, pair.source.port,
        "still on the pattern the transaction began with"
    );
    c.query_drop("COMMIT").await.unwrap();
    assert_eq!(ids(&pair.source).await, vec![1, 2]);
    assert!(ids(&pair.destination).await.is_empty());
    // The next statement uses the new pattern.
    let port: u16 = c.query_first("SELECT @@port").await.unwrap().unwrap();
    assert_eq!(port, pair.destination.port);
    proxy.stop().await;
}

#[tokio::test]
async fn prepared_statements_in_src_first_land_on_both_sides() {
    let pair = Pair::start().await;
    with_table(&pair).await;
    let proxy = TestProxy::start(&pair, Pattern::SrcOnly).await;
    let mut c = proxy.conn().await;
    let stmt = c.prep("INSERT INTO t VALUES (?, ?)").await.unwrap();
    c.exec_drop(&stmt, (1, "src only")).await.unwrap();
    // Prepared before the switch: lazily prepared on the destination.
    proxy.set_pattern(Pattern::SrcFirst);
    c.exec_drop(&stmt, (2, "both")).await.unwrap();
    c.exec_drop(&stmt, (3, "both")).await.unwrap();
    let fresh = c.prep("INSERT INTO t VALUES (?, ?)").await.unwrap();
    c.exec_drop(&fresh, (4, "both")).await.unwrap();
    c.close(stmt).await.unwrap();
    c.close(fresh).await.unwrap();
    assert_eq!(ids(&pair.source).await, vec![1, 2, 3, 4]);
    assert_eq!(ids(&pair.destination).await, vec![2, 3, 4]);
    assert_eq!(proxy.stats().double_write_failure, 0);
    assert_eq!(proxy.stats().double_write_success, 3);
    proxy.stop().await;
}

#[tokio::test]
async fn destination_killed_during_src_first_writes_keep_succeeding_and_are_counted() {
    let mut pair = Pair::start().await;
    with_table(&pair).await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    c.query_drop("INSERT INTO t VALUES (1, 'both')")
        .await
        .unwrap();
    // The mirror runs after the client has its answer; the session's next
    // command waits for it, so this round trip guarantees row 1 reached it.
    pair.destination.kill();
    let started = std::time::Instant::now();
    for id in 2..=21 {
        c.query_drop(format!("INSERT INTO t VALUES ({id}, 'source only')"))
            .await
            .unwrap();
    }
    // A new client can still log in and write.
    let mut c2 = proxy.conn().await;
    c2.query_drop("INSERT INTO t VALUES (22, 'source only')")
        .await
        .unwrap();
    let s = proxy.stats();
    assert_eq!(ids(&pair.source).await.len(), 22);
    assert!(s.double_write_failure >= 21, "{s:?}");
    assert_eq!(s.destination_secondary_errors, s.double_write_failure);
    // Back-off: 21 writes did not each pay a connect attempt.
    assert!(s.destination_connect_failures < 21, "{s:?}");
    eprintln!(
        "21 writes with a dead destination took {:?}",
        started.elapsed()
    );

    pair.destination.restart().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    c.query_drop("INSERT INTO t VALUES (23, 'both again')")
        .await
        .unwrap();
    assert_eq!(ids(&pair.destination).await, vec![1, 23]);
    proxy.stop().await;
}
