//! Binlog change capture against a real MariaDB pair with `log_bin` and
//! `binlog_format=ROW`: rows changed directly on the authoritative side —
//! bypassing cutover — are found (inserts, updates, deletes, composite and
//! unsigned and latin1 keys), repaired with `auto_fix`, capture follows the
//! authority to the destination, resumes from its checkpoint after a
//! restart, falls back to a full run when the binlog was purged, and refuses
//! to start without its prerequisites.

mod support;

use cutover::pattern::Pattern;
use cutover::validate::capture::{CaptureError, DirtyKey, ReaderState};
use cutover::validate::{EventStatus, Kind, Validator};
use serde_json::json;
use support::validate::*;
use support::{binlog_flags, Pair};

const SCHEMA: &str = "CREATE TABLE t (id INT UNSIGNED PRIMARY KEY, v VARCHAR(20), n INT);\n\
    CREATE TABLE c (a INT NOT NULL, b VARCHAR(10) CHARACTER SET latin1 NOT NULL, v INT, PRIMARY KEY (a, b));\n\
    CREATE TABLE nopk (x INT);\n\
    INSERT INTO t SELECT seq, CONCAT('v', seq), seq FROM seq_1_to_100;\n\
    INSERT INTO c VALUES (1, 'é', 1), (2, 'x', 2), (3, 'y', 3);";

const CAPTURE: &str =
    "change_capture = \"binlog\"\ncapture_settle_ms = 200\nrecheck_delay_ms = 100";

async fn seeded() -> Pair {
    let pair = Pair::start_binlog().await;
    tokio::join!(pair.source.exec(SCHEMA), pair.destination.exec(SCHEMA));
    pair
}

/// Writes straight to one server (not through cutover).
const DIRECT: &str = "INSERT INTO t VALUES (4000000000, 'big', 0), (200, 'new', 0);\n\
    UPDATE t SET v = 'changed' WHERE id = 5;\n\
    DELETE FROM t WHERE id = 7;\n\
    UPDATE c SET v = v + 1 WHERE a = 1 AND b = 'é';\n\
    DELETE FROM c WHERE a = 2 AND b = 'x';\n\
    INSERT INTO nopk VALUES (1);";

/// What DIRECT on the base leaves different, seen from that base.
fn direct_diffs() -> Vec<(String, serde_json::Value, Kind)> {
    sorted(vec![
        ev("t", json!({"id": 4_000_000_000u64}), Kind::TargetMissing),
        ev("t", json!({"id": 200}), Kind::TargetMissing),
        ev("t", json!({"id": 5}), Kind::Neq),
        ev("t", json!({"id": 7}), Kind::BaseMissing),
        ev("c", json!({"a": 1, "b": "é"}), Kind::Neq),
        ev("c", json!({"a": 2, "b": "x"}), Kind::BaseMissing),
    ])
}

async fn wait_events(
    v: &Validator,
    status: EventStatus,
    want: &[(String, serde_json::Value, Kind)],
) {
    let got = eventually(20, "capture reports the direct writes", || async {
        let e = events(v, status);
        (e.len() >= want.len()).then_some(e)
    })
    .await;
    assert_eq!(got, want);
}

#[tokio::test]
async fn direct_writes_on_the_source_become_events_in_src_first() {
    logs();
    let pair = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), CAPTURE);
    v.start_change_capture().await.unwrap();
    let s = v.capture_status();
    assert_eq!(s.state, ReaderState::Running);
    assert_eq!(s.side.map(|s| s.as_str()), Some("source"));
    assert_eq!(s.resume_by, Some("gtid"));
    assert!(s.checkpoint.is_some(), "{s:?}");

    pair.source.exec(DIRECT).await;
    // The same change on both sides (as a mirrored write would be) is re-checked and equal.
    let same = "UPDATE t SET n = -1 WHERE id = 50";
    tokio::join!(pair.source.exec(same), pair.destination.exec(same));
    // A write on the non-authoritative side is not in the base's binlog.
    pair.destination
        .exec("UPDATE t SET v = 'dst only' WHERE id = 60")
        .await;

    wait_events(&v, EventStatus::Open, &direct_diffs()).await;
    let s = eventually(10, "queue drained", || async {
        let s = v.capture_status();
        (s.queue_depth == 0).then_some(s)
    })
    .await;
    assert!(s.keys_reverified_total >= 8, "{s:?}");
    assert_eq!(s.differences_total, 6, "{s:?}");
    assert!(s.unkeyed_changes_total >= 1, "nopk rows are counted: {s:?}");
    assert!(s.changes_read_total >= 8, "{s:?}");
    assert!(s.last_error.is_none(), "{s:?}");
    let status = v.status();
    assert_eq!(status.change_capture.differences_total, 6);
    assert!(serde_json::to_value(&status).unwrap()["change_capture"]["lag_seconds"].is_number());

    // The events are ordinary events: the fixer repairs them.
    let fixed = v.fix_open().await.unwrap();
    assert_eq!((fixed.fixed, fixed.failed), (6, 0), "{fixed:?}");
    assert!(same_checksum(&pair, "c").await);
    v.stop_change_capture().await;
    assert_eq!(v.capture_status().state, ReaderState::Stopped);
}

#[tokio::test]
async fn auto_fix_repairs_within_seconds_and_capture_follows_the_authority() {
    logs();
    let pair = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let (v, handle) = validator_with_handle(
        &pair,
        Pattern::SrcFirst,
        dir.path(),
        &format!("{CAPTURE}\nauto_fix = true"),
    );
    v.start_change_capture().await.unwrap();
    pair.source.exec(DIRECT).await;
    eventually(
        20,
        "the destination is repaired from the source",
        || async {
            (same_checksum(&pair, "t").await && same_checksum(&pair, "c").await).then_some(())
        },
    )
    .await;
    wait_events(&v, EventStatus::Fixed, &direct_diffs()).await;
    assert!(events(&v, EventStatus::Open).is_empty());

    // dst_first: the destination is authoritative now; capture reads its binlog.
    handle.swap(Pattern::DstFirst);
    eventually(10, "capture moved to the destination", || async {
        let s = v.capture_status();
        (s.side.map(|s| s.as_str()) == Some("destination") && s.state == ReaderState::Running)
            .then_some(())
    })
    .await;
    pair.destination
        .exec(
            "INSERT INTO t VALUES (300, 'dst', 0);\n\
             UPDATE t SET v = 'dst changed' WHERE id = 9;\n\
             DELETE FROM t WHERE id = 10;\n\
             UPDATE c SET v = 99 WHERE a = 3 AND b = 'y';",
        )
        .await;
    eventually(
        20,
        "the source is repaired from the destination",
        || async {
            (same_checksum(&pair, "t").await && same_checksum(&pair, "c").await).then_some(())
        },
    )
    .await;
    let src: Vec<(u32, String)> = pair
        .source
        .query("SELECT id, v FROM t WHERE id IN (9, 10, 300) ORDER BY id")
        .await;
    assert_eq!(src, vec![(9, "dst changed".into()), (300, "dst".into())]);
    let dst_fixes: Vec<_> = v
        .inconsistencies(Some(EventStatus::Fixed), 100, None)
        .into_iter()
        .filter(|e| e.direction.as_str() == "DST")
        .map(|e| (e.table, e.pk, e.kind))
        .collect();
    assert_eq!(
        sorted(dst_fixes),
        sorted(vec![
            ev("t", json!({"id": 300}), Kind::TargetMissing),
            ev("t", json!({"id": 9}), Kind::Neq),
            ev("t", json!({"id": 10}), Kind::BaseMissing),
            ev("c", json!({"a": 3, "b": "y"}), Kind::Neq),
        ])
    );
    v.stop_change_capture().await;
}

#[tokio::test]
async fn restart_resumes_from_the_checkpoint_and_reports_nothing_twice() {
    logs();
    let pair = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), CAPTURE);
    v.start_change_capture().await.unwrap();
    pair.source
        .exec("UPDATE t SET v = 'a' WHERE id = 1; DELETE FROM t WHERE id = 2;")
        .await;
    let first = sorted(vec![
        ev("t", json!({"id": 1}), Kind::Neq),
        ev("t", json!({"id": 2}), Kind::BaseMissing),
    ]);
    wait_events(&v, EventStatus::Open, &first).await;
    // Changes whose re-check is still pending when cutover stops (a long
    // settle delay holds them), and changes made while it is down.
    v.shutdown().await; // as a process exit: releases data_dir
    drop(v);
    let slow = "change_capture = \"binlog\"\ncapture_settle_ms = 60000\nrecheck_delay_ms = 100";
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), slow);
    v.start_change_capture().await.unwrap();
    pair.source.exec("UPDATE t SET v = 'b' WHERE id = 3").await;
    eventually(10, "the change is read and queued", || async {
        (v.capture_status().queue_depth == 1).then_some(())
    })
    .await;
    v.shutdown().await; // as a process exit: releases data_dir
    drop(v);
    pair.source
        .exec("INSERT INTO t VALUES (500, 'while down', 0); UPDATE c SET v = 7 WHERE a = 3;")
        .await;

    let v = validator(&pair, Pattern::SrcFirst, dir.path(), CAPTURE);
    v.start_change_capture().await.unwrap();
    let all = sorted(vec![
        ev("t", json!({"id": 1}), Kind::Neq),
        ev("t", json!({"id": 2}), Kind::BaseMissing),
        ev("t", json!({"id": 3}), Kind::Neq),
        ev("t", json!({"id": 500}), Kind::TargetMissing),
        ev("c", json!({"a": 3, "b": "y"}), Kind::Neq),
    ]);
    wait_events(&v, EventStatus::Open, &all).await;
    // Quiet for a while: nothing is reported again (events are not duplicated).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(v.inconsistencies(None, 100, None).len(), all.len());
    assert_eq!(v.capture_status().queue_depth, 0);
    let cp = v.capture_status().checkpoint.unwrap();
    v.shutdown().await; // as a process exit: releases data_dir
                        // The checkpoint moved past everything re-verified: another restart re-reads nothing.
    drop(v); // one validator per data_dir (lock file)
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), CAPTURE);
    v.start_change_capture().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let s = v.capture_status();
    assert_eq!(s.changes_read_total, 0, "resumed at {cp}: {s:?}");
    assert_eq!(v.inconsistencies(None, 100, None).len(), all.len());
    v.stop_change_capture().await;
}

#[tokio::test]
async fn purged_binlog_falls_back_to_a_full_run() {
    logs();
    let pair = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), CAPTURE);
    v.start_change_capture().await.unwrap();
    v.shutdown().await; // as a process exit: releases data_dir
    drop(v);
    // While cutover is down the source changes and its binlog is purged past the checkpoint.
    pair.source
        .exec("UPDATE t SET v = 'lost' WHERE id = 11")
        .await;
    pair.source.exec("FLUSH BINARY LOGS").await;
    // (the stopped reader's dump thread may hold its file for a moment)
    eventually(10, "the source purged its older binlogs", || async {
        let files: Vec<(String, u64)> = pair.source.query("SHOW BINARY LOGS").await;
        let last = &files.last().unwrap().0;
        pair.source
            .exec(&format!("PURGE BINARY LOGS TO '{last}'"))
            .await;
        let left: Vec<(String, u64)> = pair.source.query("SHOW BINARY LOGS").await;
        (left.len() == 1).then_some(())
    })
    .await;
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), CAPTURE);
    v.start_change_capture().await.unwrap();
    let s = v.capture_status();
    let why = s.fell_back_to_full.clone().expect("fallback reported");
    assert!(why.contains("full validation"), "{why}");
    assert_eq!(s.state, ReaderState::Running);
    let report = wait_full(&v).await;
    assert_eq!(
        events(&v, EventStatus::Open),
        vec![ev("t", json!({"id": 11}), Kind::Neq)],
        "{report:?}"
    );
    // and capture goes on from the current position
    pair.source.exec("DELETE FROM t WHERE id = 12").await;
    wait_events(
        &v,
        EventStatus::Open,
        &sorted(vec![
            ev("t", json!({"id": 11}), Kind::Neq),
            ev("t", json!({"id": 12}), Kind::BaseMissing),
        ]),
    )
    .await;
    v.stop_change_capture().await;
}

#[tokio::test]
async fn prerequisites_are_checked_with_clear_errors() {
    logs();
    // No binlog at all.
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), CAPTURE);
    let e = v.start_change_capture().await.unwrap_err();
    assert!(matches!(e, CaptureError::BinlogOff { .. }), "{e}");
    assert!(e.to_string().contains("log_bin is OFF"), "{e}");
    drop(pair);

    // Statement format.
    let mut flags = binlog_flags(7);
    flags[1] = "--binlog-format=STATEMENT".into();
    let pair = Pair::start_with(&flags, &binlog_flags(8)).await;
    v.shutdown().await;
    drop(v); // one validator per data_dir (lock file)
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), CAPTURE);
    let e = v.start_change_capture().await.unwrap_err();
    assert!(e.to_string().contains("binlog_format=ROW"), "{e}");
    assert!(e.to_string().contains("STATEMENT"), "{e}");
    drop(pair);

    // Missing privileges: none at all, then BINLOG MONITOR without REPLICATION SLAVE.
    v.shutdown().await;
    drop(v); // one validator per data_dir (lock file)
    let pair = Pair::start_binlog().await;
    pair.source
        .exec(
            "CREATE USER 'ro'@'%' IDENTIFIED BY 'ro'; GRANT SELECT ON shop.* TO 'ro'@'%';\n\
             CREATE USER 'mon'@'%' IDENTIFIED BY 'mon'; GRANT SELECT ON shop.* TO 'mon'@'%';\n\
             GRANT BINLOG MONITOR ON *.* TO 'mon'@'%';",
        )
        .await;
    for (user, missing) in [("ro", "REPLICATION CLIENT"), ("mon", "REPLICATION SLAVE")] {
        let text = config_text(&pair, Pattern::SrcFirst, dir.path(), CAPTURE)
            .replace("app:app@", &format!("{user}:{user}@"));
        // (only the source URL matters: it is the authoritative side)
        let cfg = cutover::config::Config::parse(&text).unwrap();
        let v = Validator::new(
            std::sync::Arc::new(cfg),
            cutover::pattern::PatternHandle::new(Pattern::SrcFirst),
        )
        .unwrap();
        let e = v.start_change_capture().await.unwrap_err();
        assert!(matches!(e, CaptureError::Privilege { .. }), "{user}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(missing) && msg.contains(&format!("`{user}`")),
            "{msg}"
        );
        assert!(
            msg.contains("GRANT REPLICATION SLAVE, REPLICATION CLIENT"),
            "{msg}"
        );
        v.shutdown().await; // the next user's validator takes the same data_dir
    }
}

#[tokio::test]
async fn dirty_records_are_rechecked_through_the_queue() {
    logs();
    let pair = Pair::start().await; // no binlog needed
    let ddl =
        "CREATE TABLE m (id INT PRIMARY KEY, v INT); INSERT INTO m VALUES (1, 1), (2, 2), (3, 3);";
    tokio::join!(pair.source.exec(ddl), pair.destination.exec(ddl));
    pair.destination
        .exec("UPDATE m SET v = 20 WHERE id = 2")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(
        &pair,
        Pattern::SrcFirst,
        dir.path(),
        "recheck_delay_ms = 50",
    );
    let dirty = |key: Option<u64>| DirtyKey {
        table: "m".into(),
        key,
        reason: "mismatch:affected_rows".into(),
    };
    v.enqueue_dirty(vec![dirty(Some(1)), dirty(Some(2)), dirty(None)]);
    wait_events(
        &v,
        EventStatus::Open,
        &[ev("m", json!({"id": 2}), Kind::Neq)],
    )
    .await;
    let s = eventually(10, "dirty keys re-checked", || async {
        let s = v.capture_status();
        (s.queue_depth == 0).then_some(s)
    })
    .await;
    assert_eq!(s.dirty_records_total, 2, "{s:?}");
    assert_eq!(s.state, ReaderState::Off);
    assert!(s.keys_reverified_total >= 2, "{s:?}");
}

#[tokio::test]
async fn nothing_is_compared_while_only_one_side_is_written() {
    logs();
    let pair = seeded().await;
    let dir = tempfile::tempdir().unwrap();
    let (v, handle) = validator_with_handle(&pair, Pattern::SrcOnly, dir.path(), CAPTURE);
    v.start_change_capture().await.unwrap();
    pair.source.exec(DIRECT).await;
    let s = eventually(10, "changes read and skipped", || async {
        let s = v.capture_status();
        (s.keys_skipped_total >= 6 && s.queue_depth == 0).then_some(s)
    })
    .await;
    assert_eq!(s.keys_reverified_total, 0, "{s:?}");
    assert!(v.inconsistencies(None, 10, None).is_empty());
    // Once both sides are written, changes are compared again.
    handle.swap(Pattern::SrcFirst);
    pair.source.exec("UPDATE t SET v = 'x' WHERE id = 20").await;
    wait_events(
        &v,
        EventStatus::Open,
        &[ev("t", json!({"id": 20}), Kind::Neq)],
    )
    .await;
    v.stop_change_capture().await;
}
