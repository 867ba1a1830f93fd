//! Mirror-health counters mean divergence (issue 20): a transaction the
//! source itself rolls back (a deadlock victim) is no mirror failure; a
//! mirror-only lock conflict is retried, and counts as one failure and one
//! dirty record only when the retries do not help. Against real MariaDB
//! pairs, through cutover in src_first.

mod support;

use std::time::Duration;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use support::control::Admin;
use support::proxy::{server_code, TestProxy};
use support::{MariaDb, Pair};

const LIVE: Duration = Duration::from_secs(30);

async fn with_rows(pair: &Pair) {
    for db in [&pair.source, &pair.destination] {
        db.exec("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL); INSERT INTO t VALUES (1, 0), (2, 0)")
            .await;
    }
}

async fn rows(db: &MariaDb) -> Vec<(i32, i32)> {
    db.query("SELECT id, v FROM t ORDER BY id").await
}

/// Wait until `n` transactions wait for a lock on `db`.
async fn lock_waits(db: &MariaDb, n: u64) {
    let deadline = std::time::Instant::now() + LIVE;
    loop {
        let waiting: Vec<u64> = db
            .query(
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'",
            )
            .await;
        if waiting[0] >= n {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no lock wait");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn control_with_proxy(pair: &Pair, dir: &std::path::Path, extra: &str) -> (Admin, TestProxy) {
    let cfg = support::control::config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.join("state.json"),
        extra,
    );
    let admin = Admin::start_with_validation(&cfg).await;
    let mut proxy_cfg = cfg.clone();
    proxy_cfg.listen = "127.0.0.1:0".into();
    let proxy = TestProxy::attach(proxy_cfg, admin.pattern.clone(), admin.stats.clone()).await;
    for step in ["/src_only", "/src_first"] {
        assert_eq!(admin.post(step, "").await.status, 200);
    }
    (admin, proxy)
}

/// One metric sample from `/metrics` (0 when absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_deadlock_the_source_resolves_is_no_mirror_failure() {
    let pair = Pair::start().await;
    with_rows(&pair).await;
    let dir = tempfile::tempdir().unwrap();
    let (admin, proxy) = control_with_proxy(&pair, dir.path(), "").await;
    let (mut c1, mut c2) = (proxy.conn().await, proxy.conn().await);
    c1.query_drop("BEGIN").await.unwrap();
    c1.query_drop("UPDATE t SET v = v + 1 WHERE id = 1")
        .await
        .unwrap();
    c2.query_drop("BEGIN").await.unwrap();
    c2.query_drop("UPDATE t SET v = v + 10 WHERE id = 2")
        .await
        .unwrap();
    let first = tokio::spawn(async move {
        let r = c1.query_drop("UPDATE t SET v = v + 1 WHERE id = 2").await;
        (c1, r)
    });
    lock_waits(&pair.source, 1).await;
    let second = c2.query_drop("UPDATE t SET v = v + 10 WHERE id = 1").await;
    let (mut c1, first) = tokio::time::timeout(LIVE, first).await.unwrap().unwrap();
    let victims = [&first, &second]
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| server_code(e) == 1213))
        .count();
    assert_eq!(
        victims, 1,
        "the source picks one victim: {first:?} {second:?}"
    );
    c1.query_drop("COMMIT").await.unwrap();
    c2.query_drop("COMMIT").await.unwrap();

    assert_eq!(rows(&pair.source).await, rows(&pair.destination).await);
    let s = proxy.stats();
    assert_eq!(s.double_write_failure, 0, "{s:?}");
    assert_eq!(s.mirror_mismatches, 0, "{s:?}");
    assert!(
        s.double_write_rolled_back >= 2,
        "the victim's BEGIN and UPDATE: {s:?}"
    );
    assert!(proxy.stats.dirty.is_empty());
    let status = admin.get("/status").await.json();
    assert_eq!(status["mirror_health"]["failures"], 0, "{status}");
    let metrics = admin.get("/metrics").await.body;
    assert_eq!(
        sample(&metrics, "cutover_double_writes_total{outcome=\"failure\"}"),
        0.0
    );
    assert!(
        sample(
            &metrics,
            "cutover_double_writes_total{outcome=\"rolled_back\"}"
        ) >= 2.0
    );
    let lost = metrics
        .lines()
        .filter(|l| l.starts_with("cutover_mirror_failures_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum::<f64>();
    assert_eq!(lost, 0.0, "{metrics}");
    proxy.stop().await;
    admin.stop().await;
}

/// The destination gives up lock waits after 1 s; `holder` keeps row 1
/// locked there.
async fn lock_row_on_destination(pair: &Pair) -> mysql_async::Conn {
    pair.destination
        .exec("SET GLOBAL innodb_lock_wait_timeout = 1")
        .await;
    let mut holder = pair.destination.conn().await;
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("SELECT * FROM t WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    holder
}

#[tokio::test]
async fn a_mirror_only_lock_wait_timeout_without_retries_is_one_failure_and_one_dirty_record() {
    let pair = Pair::start().await;
    with_rows(&pair).await;
    let mut holder = lock_row_on_destination(&pair).await;
    let proxy = TestProxy::start_with(&pair, Pattern::SrcFirst, "[mirror]\nretries = 0").await;
    let mut c = proxy.conn().await;
    c.query_drop("UPDATE t SET v = 100 WHERE id = 1")
        .await
        .expect("the client gets the source's answer");
    let s = proxy.stats();
    assert_eq!(s.double_write_failure, 1, "{s:?}");
    assert_eq!(s.mirror_retries_failed + s.mirror_retries_succeeded, 0);
    let dirty = proxy.stats.dirty.drain();
    assert_eq!(dirty.len(), 1, "{dirty:?}");
    assert_eq!(dirty[0].reason, "failure:lock_conflict");
    assert_eq!(dirty[0].table.as_deref(), Some("t"));
    holder.query_drop("ROLLBACK").await.unwrap();
    assert_eq!(rows(&pair.source).await, [(1, 100), (2, 0)]);
    assert_eq!(rows(&pair.destination).await, [(1, 0), (2, 0)]);
    proxy.stop().await;
}

/// Release `holder`'s lock once the mirror has timed out at least once.
async fn release_after_first_timeout(proxy: &TestProxy, mut holder: mysql_async::Conn) {
    let deadline = std::time::Instant::now() + LIVE;
    while proxy.stats().destination_secondary_errors == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror never timed out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.query_drop("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn a_mirror_only_lock_wait_timeout_is_retried_until_the_lock_is_released() {
    let pair = Pair::start().await;
    with_rows(&pair).await;
    let holder = lock_row_on_destination(&pair).await;
    let proxy = TestProxy::start_with(&pair, Pattern::SrcFirst, "[mirror]\nretries = 5").await;
    let mut c = proxy.conn().await;
    let write = c.query_drop("UPDATE t SET v = 100 WHERE id = 1");
    let (written, ()) = tokio::join!(write, release_after_first_timeout(&proxy, holder));
    written.unwrap();
    assert_eq!(rows(&pair.destination).await, rows(&pair.source).await);
    let s = proxy.stats();
    assert_eq!(
        (s.double_write_failure, s.mirror_retries_succeeded),
        (0, 1),
        "{s:?}"
    );
    // applied after another session's lock: re-checked, not a failure
    let dirty = proxy.stats.dirty.drain();
    assert_eq!(dirty.len(), 1, "{dirty:?}");
    assert_eq!(
        (dirty[0].reason.as_str(), dirty[0].table.as_deref()),
        ("retried", Some("t"))
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_transaction_s_share_is_replayed_after_a_mirror_only_lock_wait_timeout() {
    let pair = Pair::start().await;
    with_rows(&pair).await;
    let holder = lock_row_on_destination(&pair).await;
    let proxy = TestProxy::start_with(&pair, Pattern::SrcFirst, "[mirror]\nretries = 5").await;
    let mut c = proxy.conn().await;
    let txn = async {
        c.query_drop("BEGIN").await?;
        c.query_drop("UPDATE t SET v = v + 5 WHERE id = 2").await?;
        c.query_drop("UPDATE t SET v = 100 WHERE id = 1").await?;
        c.query_drop("INSERT INTO t VALUES (3, 3)").await?;
        c.query_drop("COMMIT").await
    };
    let (done, ()) = tokio::join!(txn, release_after_first_timeout(&proxy, holder));
    done.unwrap();
    let src = rows(&pair.source).await;
    assert_eq!(src, [(1, 100), (2, 5), (3, 3)]);
    assert_eq!(rows(&pair.destination).await, src, "replayed exactly once");
    let s = proxy.stats();
    assert_eq!(s.double_write_failure, 0, "{s:?}");
    assert_eq!(s.mirror_retries_succeeded, 1, "{s:?}");
    // autocommit was given back on the mirror connection: a later
    // autocommit write is visible to others at once
    c.query_drop("UPDATE t SET v = 7 WHERE id = 3")
        .await
        .unwrap();
    assert_eq!(rows(&pair.destination).await[2], (3, 7));
    proxy.stop().await;
}

/// A transaction's mirror share holds its row locks on the mirror before the
/// source commits: a COMMIT (here prepared, as sysbench sends it) waits for
/// the mirror's pipelined UPDATE, so a transaction the source commit
/// unblocks cannot overtake it on the mirror. A destination lock holds the
/// mirror's UPDATE: until it is released the source has not committed.
#[tokio::test]
async fn the_source_commits_only_after_the_mirror_share_holds_its_locks() {
    let pair = Pair::start().await;
    with_rows(&pair).await;
    let mut holder = pair.destination.conn().await;
    holder.query_drop("BEGIN").await.unwrap();
    holder
        .query_drop("SELECT * FROM t WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    // prepared once up front, as sysbench does
    let begin = c.prep("BEGIN").await.unwrap();
    let update = c.prep("UPDATE t SET v = 7 WHERE id = ?").await.unwrap();
    let commit = c.prep("COMMIT").await.unwrap();
    c.exec_drop(&begin, ()).await.unwrap();
    c.exec_drop(&update, (1,)).await.unwrap();
    let commit = tokio::spawn(async move {
        let r = c.exec_drop(&commit, ()).await;
        (c, r)
    });
    lock_waits(&pair.destination, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rows(&pair.source).await,
        [(1, 0), (2, 0)],
        "the source committed while the mirror's share still waited for its lock"
    );
    holder.query_drop("ROLLBACK").await.unwrap();
    let (_c, r) = tokio::time::timeout(LIVE, commit).await.unwrap().unwrap();
    r.unwrap();
    assert_eq!(rows(&pair.source).await, [(1, 7), (2, 0)]);
    assert_eq!(rows(&pair.destination).await, rows(&pair.source).await);
    assert_eq!(proxy.stats().double_write_failure, 0);
    proxy.stop().await;
}
