//! Incremental validation: keyset on (utime, pk) from a start point; rows
//! updated while the scan runs are not skipped.

mod support;
mod validate_common;

use std::collections::BTreeSet;
use std::time::Duration;

use cutover::pattern::Pattern;
use cutover::validate::{EventStatus, Kind, Outcome};
use serde_json::json;
use support::Pair;
use validate_common::*;

const T: &str = "CREATE TABLE t (id INT PRIMARY KEY, v INT, utime BIGINT NOT NULL, KEY (utime));";

#[tokio::test]
async fn since_bounds_the_scan_and_both_directions_are_checked() {
    let pair = Pair::start().await;
    // utime = 1000 * id: rows 1..=99 are older than since = 100 000.
    let fill = format!("{T} INSERT INTO t SELECT seq, seq, 1000 * seq FROM seq_1_to_300;");
    tokio::join!(pair.source.exec(&fill), pair.destination.exec(&fill));
    pair.destination
        .exec(
            "UPDATE t SET v = -1 WHERE id IN (50, 150);\n\
             DELETE FROM t WHERE id = 250;\n\
             INSERT INTO t VALUES (400, 1, 400000), (1000, 1, 40);",
        )
        .await;
    pair.source.exec("DELETE FROM t WHERE id = 260").await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(
        &pair,
        Pattern::SrcFirst,
        dir.path(),
        "chunk_min_rows = 10\nchunk_max_rows = 40\nrecheck_delay_ms = 0",
    );
    let report = v
        .run_incremental_to_completion(None, 100_000, false)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed, "{report:?}");
    assert_eq!(report.passes, 2, "main pass + catch-up");
    // Rows 50 and 1000 are older than `since`: not looked at.
    assert_eq!(
        events(&v, EventStatus::Open),
        sorted(vec![
            ev("t", json!({"id": 150}), Kind::Neq),
            ev("t", json!({"id": 250}), Kind::TargetMissing),
            ev("t", json!({"id": 260}), Kind::BaseMissing),
            ev("t", json!({"id": 400}), Kind::BaseMissing),
        ])
    );
    // With fix the same run repairs what it finds.
    let report = v
        .run_incremental_to_completion(None, 100_000, true)
        .await
        .unwrap();
    assert!(report.totals.repaired >= 4, "{report:?}");
    let report = v
        .run_incremental_to_completion(None, 100_000, false)
        .await
        .unwrap();
    assert_eq!(report.totals.found(), 0, "{report:?}");
    assert_eq!(v.status().incr_validation_runs, 3);
}

#[tokio::test]
async fn rows_updated_during_the_scan_are_not_skipped() {
    let pair = Pair::start().await;
    let fill = format!("{T} INSERT INTO t SELECT seq, seq, 1000 + seq FROM seq_1_to_20000;");
    tokio::join!(pair.source.exec(&fill), pair.destination.exec(&fill));
    let dir = tempfile::tempdir().unwrap();
    // Slow scan (~2.5 s per side per pass) so the writer runs while it is going.
    let v = validator(
        &pair,
        Pattern::SrcFirst,
        dir.path(),
        "max_rows_per_second = 8000\nchunk_min_rows = 100\nchunk_max_rows = 200\nrecheck_delay_ms = 0",
    );
    let runner = {
        let v = v.clone();
        tokio::spawn(async move { v.run_incremental_to_completion(None, 0, false).await })
    };
    // Wait until the base scan is well past the rows we are going to update.
    loop {
        let s = v.status();
        let checked = s
            .incremental
            .and_then(|r| r.tables.first().map(|t| t.tally.rows_checked))
            .unwrap_or(0);
        if checked >= 3000 {
            break;
        }
        assert!(
            !runner.is_finished(),
            "scan ended before the writer started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Update rows the scan has already passed, on the base only (a divergence
    // the scan must catch): their utime moves ahead of the scan position.
    let mut updated = BTreeSet::new();
    let mut conn = pair.source.conn().await;
    for i in 0..60 {
        let id = 1 + i * 37;
        use mysql_async::prelude::*;
        conn.exec_drop(
            "UPDATE t SET v = -v, utime = UNIX_TIMESTAMP(NOW(3)) * 1000 WHERE id = ?",
            (id,),
        )
        .await
        .unwrap();
        updated.insert(id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let still_running = !runner.is_finished();
    let report = runner.await.unwrap().unwrap();
    assert!(
        still_running,
        "writer finished after the scan: the test proves nothing"
    );
    assert_eq!(report.outcome, Outcome::Completed);
    let found: BTreeSet<i64> = events(&v, EventStatus::Open)
        .into_iter()
        .map(|(_, pk, kind)| {
            assert_eq!(kind, Kind::Neq);
            pk["id"].as_i64().unwrap()
        })
        .collect();
    let updated: BTreeSet<i64> = updated.into_iter().map(i64::from).collect();
    assert_eq!(
        found, updated,
        "every row updated during the scan is reported"
    );
}
