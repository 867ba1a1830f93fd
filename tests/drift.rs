//! Issue #19: servers configured differently (time zone, charset, sql_mode)
//! still store the same values for mirrored statements, and the drift is
//! reported before it bites.

mod proxy_support;
mod support;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use proxy_support::TestProxy;
use support::{MariaDb, Pair};

/// Source: local time +02:00, latin1, strict; destination: UTC, utf8mb4, lax.
async fn drifted_pair() -> Pair {
    Pair::start_with(
        &[
            "--default-time-zone=+02:00",
            "--character-set-server=latin1",
            "--collation-server=latin1_swedish_ci",
            "--sql-mode=STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION",
        ],
        &[
            "--default-time-zone=+00:00",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            "--sql-mode=",
        ],
    )
    .await
}

const TIME_TABLE: &str = "CREATE TABLE shop.times (id INT PRIMARY KEY, dt DATETIME(6), d DATE, \
     fu DATETIME, ts TIMESTAMP(6) NULL, q DECIMAL(20,10))";

type TimeRow = (i32, String, String, String, String, String);

async fn times(db: &MariaDb) -> Vec<TimeRow> {
    db.query(
        "SELECT id, CAST(dt AS CHAR), CAST(d AS CHAR), CAST(fu AS CHAR), \
         CAST(UNIX_TIMESTAMP(ts) AS CHAR), CAST(q AS CHAR) FROM shop.times ORDER BY id",
    )
    .await
}

#[tokio::test]
async fn time_functions_store_the_same_values_in_src_first_and_dst_first() {
    let pair = drifted_pair().await;
    for db in [&pair.source, &pair.destination] {
        db.exec(TIME_TABLE).await;
    }
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    for (id, pattern) in [(1, Pattern::SrcFirst), (2, Pattern::DstFirst)] {
        proxy.set_pattern(pattern);
        let mut c = proxy.conn().await;
        c.query_drop(format!(
            "INSERT INTO times VALUES ({id}, NOW(6), CURDATE(), FROM_UNIXTIME(1700000000), NOW(6), 1/3)"
        ))
        .await
        .unwrap();
        c.disconnect().await.unwrap();
    }
    let (s, d) = (times(&pair.source).await, times(&pair.destination).await);
    assert_eq!(s.len(), 2);
    assert_eq!(
        s, d,
        "DATETIME/DATE/FROM_UNIXTIME/division stored alike on both sides"
    );
    // FROM_UNIXTIME(1700000000) is 2023-11-14 22:13:20 UTC: the src_first row is
    // in the source's +02:00, the dst_first row in the destination's UTC.
    assert_eq!(s[0].3, "2023-11-15 00:13:20");
    assert_eq!(s[1].3, "2023-11-14 22:13:20");
    proxy.stop().await;
}

#[tokio::test]
async fn a_session_keeps_its_time_zone_across_an_authority_switch() {
    let pair = drifted_pair().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    let probe =
        "SELECT @@port, @@time_zone, TIMESTAMPDIFF(MINUTE, UTC_TIMESTAMP(), NOW()), @@sql_mode";
    let before: (u16, String, i64, String) = c.query_first(probe).await.unwrap().unwrap();
    proxy.set_pattern(Pattern::DstFirst);
    let after: (u16, String, i64, String) = c.query_first(probe).await.unwrap().unwrap();
    assert_eq!(before.0, pair.source.port, "src_first reads the source");
    assert_eq!(
        after.0, pair.destination.port,
        "dst_first reads the destination"
    );
    assert_eq!((before.1.as_str(), before.2), ("+02:00", 120));
    assert_eq!(
        (&after.1, after.2, &after.3),
        (&before.1, before.2, &before.3)
    );
    // A new session takes the then-primary (destination) side's values.
    let mut fresh = proxy.conn().await;
    let now: (u16, String) = fresh
        .query_first("SELECT @@port, @@time_zone")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now, (pair.destination.port, "+00:00".to_string()));
    proxy.stop().await;
}

#[tokio::test]
async fn client_sets_are_replayed_on_top_of_the_reference_values() {
    let pair = drifted_pair().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    c.query_drop("SET time_zone = '+05:00'").await.unwrap();
    proxy.set_pattern(Pattern::DstFirst);
    let tz: String = c.query_first("SELECT @@time_zone").await.unwrap().unwrap();
    assert_eq!(tz, "+05:00");
    // COM_RESET_CONNECTION clears the client's SET; the reference stays.
    c.reset().await.unwrap();
    let tz: String = c.query_first("SELECT @@time_zone").await.unwrap().unwrap();
    assert_eq!(
        tz, "+02:00",
        "after a reset the session's reference zone again"
    );
    proxy.stop().await;
}
