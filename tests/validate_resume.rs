//! A stopped full run resumes from its checkpoint; restart=true starts over.
//! Backfill: a full run with fixing enabled fills an empty destination.

mod support;

use std::time::Duration;

use cutover::pattern::Pattern;
use cutover::validate::{EventStatus, Kind, Outcome};
use serde_json::json;
use support::validate::*;
use support::Pair;

#[tokio::test]
async fn stopped_run_resumes_from_checkpoint() {
    let pair = Pair::start().await;
    let fill = "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));\n\
                INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_20000;";
    tokio::join!(pair.source.exec(fill), pair.destination.exec(fill));
    let dir = tempfile::tempdir().unwrap();
    // ~2.5 s for the table at 8000 rows/s: plenty of time to stop it midway.
    let v = validator(
        &pair,
        Pattern::SrcFirst,
        dir.path(),
        "max_rows_per_second = 8000\nchunk_min_rows = 100\nchunk_max_rows = 500\nrecheck_delay_ms = 0",
    );
    let run = v.start_full(None, false, false).await.unwrap();
    assert!(
        v.start_full(None, false, false).await.is_err(),
        "second concurrent run refused"
    );
    loop {
        let s = v.status();
        let full = s.full.expect("run is going");
        let Some(t) = full.tables.first() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if t.tally.rows_checked >= 5000 {
            assert!(t.percent > 0.0 && t.percent < 100.0, "{t:?}");
            assert!(t.estimated_total > 0, "{t:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    v.stop_full().await.unwrap();
    let stopped = v.status().last_full.unwrap();
    assert_eq!(stopped.outcome, Outcome::Stopped);
    let checked = stopped.totals.rows_checked;
    assert!(checked < 20_000, "stopped early: {checked}");
    assert!(dir.path().join("full-checkpoint.json").exists());

    // One difference in the part already validated, one in the rest.
    pair.destination
        .exec("UPDATE t SET v = 'early' WHERE id = 10; UPDATE t SET v = 'late' WHERE id = 19990;")
        .await;
    let resumed = v.start_full(None, false, false).await.unwrap();
    assert_eq!(resumed, run, "resuming keeps the run id");
    let report = wait_full(&v).await;
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(report.tables[0].tally.rows_checked, 20_000, "{report:?}");
    // Only the unvalidated part was read again: id 10 was not re-checked.
    assert_eq!(
        events(&v, EventStatus::Open),
        vec![ev("t", json!({"id": 19990}), Kind::Neq)]
    );
    assert!(!dir.path().join("full-checkpoint.json").exists());

    // restart=true starts from scratch and finds the early one too.
    let fresh = v.start_full(None, false, true).await.unwrap();
    assert_ne!(fresh, run);
    v.stop_full().await.unwrap(); // stop right away, then restart from scratch
    let again = v.start_full(None, false, true).await.unwrap();
    assert_ne!(again, fresh);
    let report = wait_full(&v).await;
    assert_eq!(report.outcome, Outcome::Completed);
    assert_eq!(report.totals.neq, 2, "{report:?}");
    assert_eq!(
        events(&v, EventStatus::Open),
        sorted(vec![
            ev("t", json!({"id": 10}), Kind::Neq),
            ev("t", json!({"id": 19990}), Kind::Neq),
        ])
    );
}

#[tokio::test]
async fn backfill_fills_an_empty_destination() {
    backfill("recheck_delay_ms = 0").await;
}

/// Chunks of 20 000 rows, drill-down bound 500: the empty target ranges are
/// split and copied in parts of at most 500 rows (integer key and composite key).
#[tokio::test]
async fn backfill_of_chunks_larger_than_the_drill_down_bound() {
    backfill("recheck_delay_ms = 0\nchunk_min_rows = 20000\ndrill_down_rows = 500").await;
}

async fn backfill(validation: &str) {
    let pair = Pair::start().await;
    let schema = "CREATE TABLE orders (id BIGINT UNSIGNED PRIMARY KEY, customer VARCHAR(40), \
                    total DECIMAL(12,2), placed DATETIME(6), meta JSON, blobby BLOB, flag BIT(3));\n\
                  CREATE TABLE order_lines (order_id BIGINT UNSIGNED, line INT, sku VARBINARY(16), \
                    qty INT, PRIMARY KEY (order_id, line));";
    tokio::join!(pair.source.exec(schema), pair.destination.exec(schema));
    pair.source
        .exec(
            "INSERT INTO orders SELECT seq, CONCAT('cüstomer ', seq), seq * 0.5, \
               '2020-01-01' + INTERVAL seq MINUTE + INTERVAL 7 MICROSECOND, JSON_ARRAY(seq, 'x'), \
               IF(seq % 5 = 0, NULL, UNHEX(REPEAT('00ff', seq % 50))), seq % 8 FROM seq_1_to_20000;\n\
             INSERT INTO order_lines SELECT seq DIV 3 + 1, seq % 3, UNHEX(MD5(seq)), seq % 9 FROM seq_1_to_15000;",
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), validation);
    let report = v.run_full_to_completion(None, true).await.unwrap();
    assert_eq!(report.outcome, Outcome::Completed, "{report:?}");
    assert_eq!(report.totals.target_missing, 35_000, "{report:?}");
    assert_eq!(report.totals.repaired, 35_000, "{report:?}");
    assert!(report.consistent());
    // Bulk copies are counted, not written as 35 000 events.
    assert!(v.inconsistencies(None, 10, None).is_empty());
    let n: Vec<i64> = pair.destination.query("SELECT COUNT(*) FROM orders").await;
    assert_eq!(n, vec![20_000]);
    assert!(same_checksum(&pair, "orders").await);
    assert!(same_checksum(&pair, "order_lines").await);
    // An independent second run finds nothing.
    let again = v.run_full_to_completion(None, false).await.unwrap();
    assert!(again.consistent(), "{again:?}");
    assert_eq!(again.totals.found(), 0);
    assert_eq!(again.totals.rows_checked, 35_000);
}

#[tokio::test]
async fn run_that_failed_when_a_backend_crashed_resumes_after_restart() {
    let mut pair = Pair::start().await;
    let fill = "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t SELECT seq, seq FROM seq_1_to_20000;";
    tokio::join!(pair.source.exec(fill), pair.destination.exec(fill));
    pair.destination
        .exec("UPDATE t SET v = 0 WHERE id = 19000")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(
        &pair,
        Pattern::SrcFirst,
        dir.path(),
        "max_rows_per_second = 8000\nchunk_max_rows = 500\nrecheck_delay_ms = 0",
    );
    let run = v.start_full(None, false, false).await.unwrap();
    loop {
        let rows = v
            .status()
            .full
            .and_then(|f| f.tables.first().map(|t| t.tally.rows_checked))
            .unwrap_or(0);
        if rows >= 4000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pair.destination.kill();
    let failed = wait_full(&v).await;
    assert_eq!(failed.outcome, Outcome::Failed, "{failed:?}");
    assert!(v.status().last_error.is_some());
    assert!(dir.path().join("full-checkpoint.json").exists());

    pair.destination.restart().await;
    assert_eq!(v.start_full(None, false, false).await.unwrap(), run);
    let report = wait_full(&v).await;
    assert_eq!(report.outcome, Outcome::Completed, "{report:?}");
    assert_eq!(report.totals.rows_checked, 20_000);
    assert_eq!(
        events(&v, EventStatus::Open),
        vec![ev("t", json!({"id": 19000}), Kind::Neq)]
    );
}

#[tokio::test]
async fn control_plane_seam_runs_and_cancels_full_validations() {
    use cutover::control::{FullRequest, ValidationService};
    let pair = Pair::start().await;
    let fill = "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t SELECT seq, seq FROM seq_1_to_20000;";
    tokio::join!(pair.source.exec(fill), pair.destination.exec(fill));
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), "recheck_delay_ms = 0");
    let seam: &dyn ValidationService = &v;
    let run = seam.start_full(FullRequest::default()).await.unwrap();
    let r = run.done.await;
    assert!(r.completed && r.all_tables, "{r:?}");
    assert_eq!(
        (r.tables_checked, r.rows_checked, r.remaining()),
        (1, 20_000, 0)
    );
    pair.destination.exec("DELETE FROM t WHERE id = 7").await;
    let r = seam
        .start_full(FullRequest::default())
        .await
        .unwrap()
        .done
        .await;
    assert_eq!(r.remaining(), 1);

    // Stopped mid-run: the run ends soon, not completed, and says why.
    // (One writer per data_dir: the second validator gets its own.)
    let dir2 = tempfile::tempdir().unwrap();
    let slow = validator(
        &pair,
        Pattern::SrcFirst,
        dir2.path(),
        "max_rows_per_second = 2000\nchunk_max_rows = 200\nrecheck_delay_ms = 0",
    );
    let slow_seam: &dyn ValidationService = &slow;
    let run = slow_seam.start_full(FullRequest::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    slow_seam.stop_full().await;
    let r = run.done.await;
    assert!(!r.completed, "{r:?}");
    assert!(
        r.error.as_deref().unwrap_or("").contains("cancelled"),
        "{r:?}"
    );
    assert_eq!(slow.status().last_full.unwrap().outcome, Outcome::Stopped);
}
