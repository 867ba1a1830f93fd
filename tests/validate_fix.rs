//! The fixer repairs open events while an application writes the same rows
//! through cutover (src_first): the end state is consistent.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover::pattern::Pattern;
use cutover::validate::EventStatus;
use mysql_async::prelude::*;
use support::proxy::TestProxy;
use support::validate::*;
use support::Pair;

#[tokio::test]
async fn fixer_repairs_while_a_writer_updates_the_same_rows_through_the_proxy() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut app = proxy.conn().await;
    app.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL, note VARCHAR(20))")
        .await
        .unwrap();
    app.query_drop("INSERT INTO t SELECT seq, seq, 'seed' FROM seq_1_to_12000")
        .await
        .unwrap();
    // Divergence on the destination only: 1500 rows missing, 1500 changed, 5 extra
    // (enough that the fix lasts while the writer runs, also with the fast crc32 hash).
    pair.destination
        .exec(
            "DELETE FROM t WHERE id % 8 = 0;\n\
             UPDATE t SET v = -1, note = NULL WHERE id % 8 = 1;\n\
             INSERT INTO t VALUES (20001, 1, 'x'), (20002, 1, 'x'), (20003, 1, 'x'), (20004, 1, 'x'), (20005, 1, 'x');",
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), "recheck_delay_ms = 0");
    let report = v.run_full_to_completion(None, false).await.unwrap();
    assert_eq!(report.totals.found(), 3005, "{report:?}");

    // The writer hammers exactly the divergent rows with absolute values, in
    // autocommit statements and in two-row transactions.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes) = (stop.clone(), writes.clone());
        let mut c = proxy.conn().await;
        tokio::spawn(async move {
            // Newest first, so the writer and the fixer (oldest first) cross.
            let ids: Vec<i32> = (1..=12000).rev().filter(|i| i % 8 <= 1).collect();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let id = ids[i % ids.len()];
                let val = 10_000 + i as i32;
                let ok = if i.is_multiple_of(3) {
                    let other = ids[(i + 1) % ids.len()];
                    let r = async {
                        c.query_drop("BEGIN").await?;
                        c.exec_drop(
                            "UPDATE t SET v = ?, note = 'tx' WHERE id = ?",
                            (val, id.min(other)),
                        )
                        .await?;
                        c.exec_drop(
                            "UPDATE t SET v = ?, note = 'tx' WHERE id = ?",
                            (val, id.max(other)),
                        )
                        .await?;
                        c.query_drop("COMMIT").await
                    }
                    .await;
                    if r.is_err() {
                        let _ = c.query_drop("ROLLBACK").await;
                    }
                    r.is_ok()
                } else {
                    c.exec_drop("UPDATE t SET v = ?, note = 'auto' WHERE id = ?", (val, id))
                        .await
                        .is_ok()
                };
                if ok {
                    writes.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        })
    };
    // The writer is running before the fix starts (a liveness bound, not a timing assertion).
    for _ in 0..1000 {
        if writes.load(Ordering::Relaxed) >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = writes.load(Ordering::Relaxed);
    let fixed = v.fix_open().await.unwrap();
    let during = writes.load(Ordering::Relaxed) - before;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    eprintln!("writes before the fix: {before}, during: {during}; {fixed:?}");
    assert!(
        before > 0 && during > 10,
        "writer ran before ({before}) and during ({during}) the fix"
    );
    assert_eq!(fixed.failed, 0, "{fixed:?}");
    assert_eq!(fixed.fixed + fixed.obsolete, 3005, "{fixed:?}");
    assert!(v
        .inconsistencies(Some(EventStatus::Open), 10, None)
        .is_empty());

    let report = v.run_full_to_completion(None, false).await.unwrap();
    assert!(report.consistent(), "{report:?}");
    assert!(same_checksum(&pair, "t").await);
    proxy.stop().await;
}
