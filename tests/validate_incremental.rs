//! Incremental validation: keyset on (utime, pk) from a start point; rows
//! updated while the scan runs are not skipped.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cutover::pattern::Pattern;
use cutover::validate::{EventStatus, Kind, Outcome};
use serde_json::json;
use support::validate::*;
use support::Pair;

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
    let mut run_ids = vec![report.run_id];
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
    run_ids.push(report.run_id);
    let report = v
        .run_incremental_to_completion(None, 100_000, false)
        .await
        .unwrap();
    assert_eq!(report.totals.found(), 0, "{report:?}");
    run_ids.push(report.run_id);
    // three runs (the run counter lives in the control plane's migration_stats now)
    run_ids.dedup();
    assert_eq!(run_ids.len(), 3);
    assert_eq!(v.status().last_incremental.unwrap().run_id, report.run_id);
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

#[tokio::test]
async fn tails_with_an_interval_on_a_datetime_column_until_stopped() {
    let pair = Pair::start().await;
    let fill = "CREATE TABLE d (id INT PRIMARY KEY, v INT, \
                  utime DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)); \
                INSERT INTO d (id, v, utime) SELECT seq, seq, '2020-01-01' + INTERVAL seq SECOND FROM seq_1_to_500;";
    tokio::join!(pair.source.exec(fill), pair.destination.exec(fill));
    pair.destination
        .exec("UPDATE d SET v = 0 WHERE id = 10")
        .await; // utime becomes now
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), "recheck_delay_ms = 0");
    // since = 2020-01-01 00:05:00 UTC: ids 300.. and the freshly updated row 10.
    let since = 1_577_836_800_000 + 300_000;
    v.start_incremental(since, Some(100), false).await.unwrap();
    let wait_for = |n: usize| {
        let v = v.clone();
        async move {
            for _ in 0..500 {
                if v.inconsistencies(Some(EventStatus::Open), 100, None).len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!(
                "expected {n} events, got {:?}",
                events(&v, EventStatus::Open)
            );
        }
    };
    wait_for(1).await;
    // Written after the first pass: found by a later pass of the same run.
    pair.source.exec("UPDATE d SET v = -5 WHERE id = 20").await;
    pair.source
        .exec("INSERT INTO d (id, v) VALUES (600, 1)")
        .await;
    wait_for(3).await;
    let status = v.status();
    let live = status.incremental.expect("still tailing");
    assert!(live.passes >= 1, "{live:?}");
    v.stop_incremental().await.unwrap();
    let report = v.status().last_incremental.unwrap();
    assert_eq!(report.outcome, Outcome::Stopped);
    assert_eq!(
        events(&v, EventStatus::Open),
        sorted(vec![
            ev("d", json!({"id": 10}), Kind::Neq),
            ev("d", json!({"id": 20}), Kind::Neq),
            ev("d", json!({"id": 600}), Kind::TargetMissing),
        ])
    );
    // A row deleted on one side leaves no update time behind: once the pass that
    // covered its old utime is over, only a full run or a targeted re-check finds it.
    pair.source.exec("DELETE FROM d WHERE id = 450").await;
    let again = v.recheck("d", json!({"id": 450})).await.unwrap().unwrap();
    assert_eq!(again.kind, Kind::BaseMissing);
}
