//! Proves the MariaDB test harness (tests/support) works: two independent
//! servers, crash (SIGKILL) and restart on the same datadir and port.

mod support;

use std::time::Instant;

use support::{binlog_flags, MariaDb, Pair};

#[tokio::test]
async fn pair_is_independent_and_survives_kill_restart() {
    let t = Instant::now();
    let mut pair = Pair::start().await;
    eprintln!("pair started in {:?}", t.elapsed());
    assert_ne!(pair.source.port, pair.destination.port);
    assert_eq!(
        pair.source.url("shop"),
        format!("mysql://app:app@127.0.0.1:{}/shop", pair.source.port)
    );

    pair.source
        .exec("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .await;
    let rows: Vec<(i32, String)> = pair.source.query("SELECT id, v FROM t ORDER BY id").await;
    assert_eq!(rows, vec![(1, "one".to_string()), (2, "two".to_string())]);

    // The destination is a different server: no table t there.
    let tables: Vec<String> = pair.destination.query("SHOW TABLES").await;
    assert!(tables.is_empty(), "destination has tables: {tables:?}");

    // Crash the destination; connections fail while it is down.
    pair.destination
        .exec("CREATE TABLE d (id INT PRIMARY KEY); INSERT INTO d VALUES (7)")
        .await;
    let port = pair.destination.port;
    pair.destination.kill();
    let down = mysql_async::Conn::new(pair.destination.opts(Some("shop"))).await;
    assert!(down.is_err(), "destination still answers after kill");

    let t = Instant::now();
    pair.destination.restart().await;
    eprintln!("destination restarted in {:?}", t.elapsed());
    assert_eq!(pair.destination.port, port);
    // Same datadir: committed data survived the crash.
    let ids: Vec<i32> = pair.destination.query("SELECT id FROM d").await;
    assert_eq!(ids, vec![7]);
    let tables: Vec<String> = pair.destination.query("SHOW TABLES").await;
    assert_eq!(tables, vec!["d".to_string()]);

    // The source was not affected.
    let n: Vec<i64> = pair.source.query("SELECT COUNT(*) FROM t").await;
    assert_eq!(n, vec![2]);
}

#[tokio::test]
async fn errors_carry_the_sql_and_drop_reaps() {
    let db = MariaDb::start("solo").await;
    let dir = db.dir().to_path_buf();
    let pid: i32 = std::fs::read_to_string(dir.join("data/../mariadbd.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("pid file");
    let caught = tokio::spawn(async move {
        let _: Vec<i32> = db.query("SELECT * FROM no_such_table").await;
    })
    .await
    .unwrap_err();
    let msg = caught.into_panic();
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("SELECT * FROM no_such_table"), "{msg}");
    assert!(msg.contains("1146"), "{msg}");
    // The panic dropped the MariaDb: server gone, datadir removed.
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "mariadbd {pid} still exists"
    );
    assert!(!dir.exists(), "tempdir not removed");
}

#[tokio::test]
async fn extra_server_flags_apply_and_survive_restart() {
    let mut flags = binlog_flags(42);
    flags.push("--default-time-zone=+02:00".into());
    let mut db = MariaDb::start_with("flags", &flags).await;
    let check = |db: &MariaDb| {
        let conn = db.opts(None);
        async move {
            let mut c = mysql_async::Conn::new(conn).await.unwrap();
            use mysql_async::prelude::*;
            let row: (i64, String, u32, String) = c
                .query_first("SELECT @@log_bin, @@binlog_format, @@server_id, @@time_zone")
                .await
                .unwrap()
                .unwrap();
            let _ = c.disconnect().await;
            row
        }
    };
    let want = (1, "ROW".to_string(), 42, "+02:00".to_string());
    assert_eq!(check(&db).await, want);
    db.restart().await;
    assert_eq!(check(&db).await, want, "flags are kept across restart");
    // Default flags stay when nothing overrides them.
    let plain = MariaDb::start("plain").await;
    let (log_bin,): (i64,) = {
        use mysql_async::prelude::*;
        let mut c = plain.conn().await;
        c.query_first("SELECT @@log_bin").await.unwrap().unwrap()
    };
    assert_eq!(log_bin, 0);
}

/// deploy/cutover.example.toml documents every key: it must stay loadable.
#[test]
fn example_config_parses() {
    let text = include_str!("../deploy/cutover.example.toml");
    let cfg = cutover::config::Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.listen, "127.0.0.1:6033");
    assert_eq!(cfg.limits.max_allowed_packet, 67_108_864);
    assert_eq!(cfg.users.len(), 1);
}
