//! Issue #19: servers configured differently (time zone, charset, sql_mode)
//! still store the same values for mirrored statements, and the drift is
//! reported before it bites.

mod support;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use support::proxy::TestProxy;
use support::{MariaDb, Pair};

/// Source: local time +02:00, latin1, strict, 8 division digits;
/// destination: UTC, utf8mb4, lax, the default 4.
async fn drifted_pair() -> Pair {
    Pair::start_with(
        &[
            "--default-time-zone=+02:00",
            "--character-set-server=latin1",
            "--collation-server=latin1_swedish_ci",
            "--sql-mode=STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION",
            "--div-precision-increment=8",
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

fn admin_config(pair: &Pair, dir: &std::path::Path, extra: &str) -> cutover::config::Config {
    support::control::config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.join("state.json"),
        &format!("initial_pattern = \"src_first\"\n{extra}"),
    )
}

fn drift_names(status: &serde_json::Value) -> Vec<(String, bool)> {
    status["drift"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no drift items in {status}"))
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["blocking"] == true,
            )
        })
        .collect()
}

#[tokio::test]
async fn status_shows_drift_and_an_authority_move_with_blocking_drift_is_409() {
    let pair = drifted_pair().await;
    let dir = tempfile::tempdir().unwrap();
    let ddl = "CREATE TABLE shop.x (id INT PRIMARY KEY, s VARCHAR(10))";
    pair.source.exec(ddl).await;
    pair.destination.exec(ddl).await;
    let admin = support::control::Admin::start(&admin_config(&pair, dir.path(), "")).await;
    let st = admin.get("/status").await.json();
    let names = drift_names(&st);
    for blocking in [
        "time_zone",
        "sql_mode",
        "character_set_server",
        "collation_server",
    ] {
        assert!(
            names.contains(&(blocking.to_string(), true)),
            "{blocking} in {names:?}"
        );
    }
    assert!(
        names.iter().any(|(n, b)| n.starts_with("x ") && *b),
        "table x's latin1/utf8mb4 definitions differ: {names:?}"
    );
    assert!(
        !names.iter().any(|(n, _)| n == "version"),
        "same server version: {names:?}"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "ctl",
            "--admin",
            &format!("http://{}", admin.addr),
            "status",
        ])
        .env("CUTOVER_LOG", "warn")
        .env_remove("CUTOVER_ADMIN_TOKEN")
        .env_remove("CUTOVER_CONFIG")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BLOCKING variable time_zone: source +02:00, destination +00:00"),
        "cutover ctl status names the drift:\n{text}"
    );
    let r = admin.post("/dst_first", "").await;
    assert_eq!(r.status, 409, "{}", r.error());
    assert!(
        r.error().contains("server drift in variable time_zone"),
        "{}",
        r.error()
    );
    let variables = st["drift"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "variable")
        .count();
    let metrics = admin.get("/metrics").await.body;
    let line = format!("cutover_drift{{kind=\"variable\"}} {variables}");
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
    assert!(!metrics.contains("cutover_drift_blocking 0\n"), "{metrics}");
    let r = admin.post("/dst_first?force=true", "").await;
    assert_eq!(r.status, 200, "force overrides: {}", r.error());
    admin.stop().await;
}

#[tokio::test]
async fn drift_declared_intended_does_not_block() {
    let pair = drifted_pair().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[mirror]\nddl_defaults = \"own\"\n\
                 intended_drift = [\"time_zone\", \"sql_mode\", \"DIV_PRECISION_INCREMENT\"]\n";
    let admin = support::control::Admin::start(&admin_config(&pair, dir.path(), extra)).await;
    let st = admin.get("/status").await.json();
    let names = drift_names(&st);
    assert!(
        names.contains(&("time_zone".to_string(), false)),
        "{names:?}"
    );
    assert!(
        names.contains(&("character_set_server".to_string(), false)),
        "own: {names:?}"
    );
    assert!(!names.iter().any(|(_, b)| *b), "nothing blocks: {names:?}");
    let r = admin.post("/dst_first", "").await;
    assert!(!r.error().contains("server drift"), "{}", r.error());
    admin.stop().await;
}

async fn show_create(db: &MariaDb, table: &str) -> String {
    let r: Vec<(String, String)> = db.query(&format!("SHOW CREATE TABLE {table}")).await;
    r.into_iter().next().unwrap().1
}

#[tokio::test]
async fn mirrored_create_table_without_charset_is_identical_on_both_sides() {
    let pair = drifted_pair().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    // `shop` exists on both, latin1 on the source and utf8mb4 on the destination.
    c.query_drop("CREATE TABLE x (id INT PRIMARY KEY, s VARCHAR(10))")
        .await
        .unwrap();
    c.query_drop("CREATE DATABASE mig").await.unwrap();
    c.query_drop("CREATE TABLE mig.y (id INT PRIMARY KEY, s TEXT) ENGINE=InnoDB")
        .await
        .unwrap();
    for t in ["shop.x", "mig.y"] {
        let (s, d) = (
            show_create(&pair.source, t).await,
            show_create(&pair.destination, t).await,
        );
        assert!(s.contains("latin1"), "{t} takes the source's defaults: {s}");
        assert_eq!(s, d, "{t}");
    }
    // The other direction: dst_first gives the source the destination's defaults.
    proxy.set_pattern(Pattern::DstFirst);
    c.query_drop("CREATE TABLE z (id INT PRIMARY KEY, s VARCHAR(10))")
        .await
        .unwrap();
    let (s, d) = (
        show_create(&pair.source, "shop.z").await,
        show_create(&pair.destination, "shop.z").await,
    );
    assert!(d.contains("utf8mb4"), "{d}");
    assert_eq!(s, d);
    proxy.stop().await;
}

#[tokio::test]
async fn ddl_defaults_own_keeps_each_sides_defaults() {
    let pair = drifted_pair().await;
    let proxy = TestProxy::start_with(
        &pair,
        Pattern::SrcFirst,
        "[mirror]\nddl_defaults = \"own\"\n",
    )
    .await;
    let mut c = proxy.conn().await;
    c.query_drop("CREATE TABLE x (id INT PRIMARY KEY, s VARCHAR(10))")
        .await
        .unwrap();
    let (s, d) = (
        show_create(&pair.source, "shop.x").await,
        show_create(&pair.destination, "shop.x").await,
    );
    assert!(s.contains("latin1") && d.contains("utf8mb4"), "{s}\n{d}");
    proxy.stop().await;
}

/// Same text and instants on both sides, stored in latin1 / utf8mb4 and
/// written in +02:00 / UTC sessions.
async fn names_table(pair: &Pair) {
    let fill =
        "CREATE TABLE shop.names (id INT PRIMARY KEY, s VARCHAR(20), t TEXT, ts TIMESTAMP NULL); \
                INSERT INTO shop.names VALUES (1, 'café', 'Grüße', FROM_UNIXTIME(1700000000)), \
                (2, 'plain', NULL, NULL), (3, 'naïve', 'x', FROM_UNIXTIME(1)) ";
    tokio::join!(pair.source.exec(fill), pair.destination.exec(fill));
}

#[tokio::test]
async fn validator_compares_text_across_intended_charset_drift_and_reports_schema_mismatch_otherwise(
) {
    let pair = drifted_pair().await;
    names_table(&pair).await;
    let dir = tempfile::tempdir().unwrap();
    // ddl_defaults = "primary": a charset difference is a schema mismatch, per table, before rows.
    let strict = support::validate::validator(&pair, Pattern::SrcFirst, &dir.path().join("a"), "");
    let r = strict.run_full_to_completion(None, false).await.unwrap();
    assert_eq!(r.skipped.len(), 1, "{r:?}");
    assert_eq!(r.skipped[0].table, "names");
    assert!(
        r.skipped[0].reason.contains("column definitions differ"),
        "{:?}",
        r.skipped
    );
    assert!(r.skipped[0].reason.contains("latin1") && r.skipped[0].reason.contains("utf8mb4"));
    // ddl_defaults = "own": converted text and UTC instants compare equal …
    let own = "[mirror]\nddl_defaults = \"own\"";
    let v = support::validate::validator(&pair, Pattern::SrcFirst, &dir.path().join("b"), own);
    let r = v.run_full_to_completion(None, false).await.unwrap();
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    assert_eq!(r.totals.found(), 0, "{r:?}");
    assert!(r.consistent());
    // … and a real difference is still found.
    pair.destination
        .exec("UPDATE shop.names SET s = 'cafe' WHERE id = 1")
        .await;
    let r = v.run_full_to_completion(None, false).await.unwrap();
    assert_eq!(r.totals.found(), 1, "{r:?}");
}

#[tokio::test]
async fn the_mirror_uses_the_primary_sessions_sql_mode() {
    let pair = drifted_pair().await;
    for db in [&pair.source, &pair.destination] {
        db.exec("CREATE TABLE shop.short (id INT PRIMARY KEY, s VARCHAR(3))")
            .await;
    }
    let proxy = TestProxy::start(&pair, Pattern::DstFirst).await;
    let mut c = proxy.conn().await;
    // Lax destination primary: truncated with a warning; the strict source
    // would refuse it (ER_DATA_TOO_LONG) in its own default session.
    c.query_drop("INSERT INTO short VALUES (1, 'abcdef')")
        .await
        .unwrap();
    let q = "SELECT id, s FROM shop.short";
    let s: Vec<(i32, String)> = pair.source.query(q).await;
    let d: Vec<(i32, String)> = pair.destination.query(q).await;
    assert_eq!(d, vec![(1, "abc".to_string())]);
    assert_eq!(s, d, "the mirror stored what the primary stored");
    let stats = proxy.stats();
    assert_eq!(stats.double_write_failure, 0, "{stats:?}");
    assert_eq!(stats.source_secondary_errors, 0, "{stats:?}");
    assert_eq!(stats.mirror_mismatches, 0, "{stats:?}");
    proxy.stop().await;
}
