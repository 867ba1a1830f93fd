//! Full validation against a real MariaDB pair: every kind of difference is
//! found (and nothing else), the fixer repairs them, tables without a primary
//! key are reported as skipped.

mod support;
mod validate_common;

use cutover::pattern::Pattern;
use cutover::validate::{EventStatus, Kind, Outcome};
use serde_json::json;
use support::Pair;
use validate_common::*;

const ITEMS: &str = "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(40) NOT NULL, \
    note VARCHAR(40) NULL, price DECIMAL(12,2), at DATETIME(6), doc JSON, bin VARBINARY(16), \
    ts TIMESTAMP(3) NULL)";
const PAIRS: &str = "CREATE TABLE pairs (a INT NOT NULL, b VARCHAR(10) NOT NULL, v INT, \
    PRIMARY KEY (a, b))";
const NOPK: &str = "CREATE TABLE nopk (x INT, y VARCHAR(5))";

async fn seed(pair: &Pair) {
    let fill = format!(
        "{ITEMS}; {PAIRS}; {NOPK};\n\
         INSERT INTO items SELECT seq, CONCAT('item-', seq), IF(seq % 3 = 0, NULL, 'n'), seq * 1.25, \
           '2024-01-02 03:04:05.123456' + INTERVAL seq SECOND, JSON_OBJECT('k', seq), \
           UNHEX(LPAD(HEX(seq), 8, '0')), '2024-05-06 07:08:09.123' FROM seq_1_to_2000;\n\
         INSERT INTO pairs SELECT seq DIV 10, CONCAT('b', seq MOD 10), seq FROM seq_1_to_3000;\n\
         INSERT INTO nopk SELECT seq, 'x' FROM seq_1_to_10;"
    );
    tokio::join!(pair.source.exec(&fill), pair.destination.exec(&fill));
}

#[tokio::test]
async fn finds_every_kind_of_difference_then_fixes_them() {
    let pair = Pair::start().await;
    seed(&pair).await;
    // Divergence made directly on one side, bypassing any proxy.
    pair.destination
        .exec(
            "DELETE FROM items WHERE id = 5;\n\
             UPDATE items SET price = price + 0.01 WHERE id = 100;\n\
             UPDATE items SET note = '' WHERE id = 201;\n\
             UPDATE items SET bin = UNHEX('000001FF') WHERE id = 300;\n\
             UPDATE items SET at = at + INTERVAL 1 MICROSECOND WHERE id = 400;\n\
             UPDATE items SET doc = JSON_OBJECT('k', 'x') WHERE id = 500;\n\
             UPDATE items SET ts = ts + INTERVAL 1 SECOND WHERE id = 600;\n\
             INSERT INTO items (id, name) VALUES (5000, 'extra'), (5001, 'extra');\n\
             DELETE FROM pairs WHERE a = 7 AND b = 'b3';\n\
             UPDATE pairs SET v = -1 WHERE a = 150 AND b = 'b0';\n\
             INSERT INTO pairs VALUES (150, 'zz', 1);\n\
             DELETE FROM nopk WHERE x = 1;",
        )
        .await;
    pair.source
        .exec("DELETE FROM items WHERE id = 7; UPDATE items SET note = NULL WHERE id = 202;")
        .await;
    // Text equal under the case-insensitive collation but not byte-equal is a difference.
    pair.source
        .exec("UPDATE items SET name = 'ITEM-900' WHERE id = 900")
        .await;

    let dir = tempfile::tempdir().unwrap();
    let v = validator(
        &pair,
        Pattern::SrcFirst,
        dir.path(),
        "chunk_min_rows = 10\nchunk_max_rows = 300\nrecheck_delay_ms = 0",
    );
    let report = v.run_full_to_completion(None, false).await.unwrap();
    assert_eq!(report.outcome, Outcome::Completed, "{report:?}");
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    assert_eq!(report.skipped[0].table, "nopk");
    assert_eq!(report.skipped[0].reason, "no primary key");
    let expected = sorted(vec![
        ev("items", json!({"id": 5}), Kind::TargetMissing),
        ev("items", json!({"id": 7}), Kind::BaseMissing),
        ev("items", json!({"id": 100}), Kind::Neq),
        ev("items", json!({"id": 201}), Kind::Neq),
        ev("items", json!({"id": 202}), Kind::Neq),
        ev("items", json!({"id": 300}), Kind::Neq),
        ev("items", json!({"id": 400}), Kind::Neq),
        ev("items", json!({"id": 500}), Kind::Neq),
        ev("items", json!({"id": 600}), Kind::Neq),
        ev("items", json!({"id": 900}), Kind::Neq),
        ev("items", json!({"id": 5000}), Kind::BaseMissing),
        ev("items", json!({"id": 5001}), Kind::BaseMissing),
        ev("pairs", json!({"a": 7, "b": "b3"}), Kind::TargetMissing),
        ev("pairs", json!({"a": 150, "b": "b0"}), Kind::Neq),
        ev("pairs", json!({"a": 150, "b": "zz"}), Kind::BaseMissing),
    ]);
    assert_eq!(events(&v, EventStatus::Open), expected);
    assert_eq!(report.totals.found(), 15);
    assert!(!report.consistent());
    let items = report.tables.iter().find(|t| t.table == "items").unwrap();
    assert_eq!(items.tally.rows_checked, 2001, "{items:?}");
    assert!(items.chunks > 5, "chunked: {items:?}");
    for e in v.inconsistencies(None, 100, None) {
        assert_eq!(e.direction.as_str(), "SRC");
        assert_eq!(e.run_id, report.run_id);
    }

    // A targeted re-check finds the open event; an equal row finds nothing.
    let again = v
        .recheck("items", json!({"id": 100}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.kind, Kind::Neq);
    assert!(v
        .recheck("items", json!({"id": 101}))
        .await
        .unwrap()
        .is_none());

    // The events survive a restart of the validator (durable file).
    drop(v);
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), "recheck_delay_ms = 0");
    assert_eq!(events(&v, EventStatus::Open), expected);

    let fixed = v.fix_open().await.unwrap();
    assert_eq!(
        (fixed.fixed, fixed.obsolete, fixed.failed),
        (15, 0, 0),
        "{fixed:?}"
    );
    assert!(events(&v, EventStatus::Open).is_empty());
    let report = v.run_full_to_completion(None, false).await.unwrap();
    assert!(report.consistent(), "{report:?}");
    assert!(same_checksum(&pair, "items").await);
    assert!(same_checksum(&pair, "pairs").await);
    let s = v.status();
    // run counters live in the control plane's migration_stats now (one definition)
    assert!(
        s.last_full.as_ref().is_some_and(|r| r.consistent()),
        "{s:?}"
    );
    assert_eq!(s.open_inconsistencies, 0);
}

#[tokio::test]
async fn hundred_thousand_rows_ten_scattered_differences() {
    let pair = Pair::start().await;
    let fill = "CREATE TABLE big (id BIGINT PRIMARY KEY, a INT, b VARCHAR(32), c DOUBLE);\n\
                INSERT INTO big SELECT seq, seq % 97, MD5(seq), seq / 7 FROM seq_1_to_100000;";
    tokio::join!(pair.source.exec(fill), pair.destination.exec(fill));
    pair.destination
        .exec(
            "UPDATE big SET a = a + 1 WHERE id IN (17, 23456, 99999);\n\
             UPDATE big SET b = NULL WHERE id = 50000;\n\
             UPDATE big SET c = c + 1e-9 WHERE id = 77777;\n\
             DELETE FROM big WHERE id IN (1, 64000);\n\
             INSERT INTO big VALUES (100001, 1, 'x', 1), (100500, 2, 'y', 2);",
        )
        .await;
    pair.source.exec("DELETE FROM big WHERE id = 31337").await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), "recheck_delay_ms = 0");
    let report = v
        .run_full_to_completion(Some(vec!["big".into()]), false)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Completed);
    let expected = sorted(vec![
        ev("big", json!({"id": 1}), Kind::TargetMissing),
        ev("big", json!({"id": 17}), Kind::Neq),
        ev("big", json!({"id": 23456}), Kind::Neq),
        ev("big", json!({"id": 31337}), Kind::BaseMissing),
        ev("big", json!({"id": 50000}), Kind::Neq),
        ev("big", json!({"id": 64000}), Kind::TargetMissing),
        ev("big", json!({"id": 77777}), Kind::Neq),
        ev("big", json!({"id": 99999}), Kind::Neq),
        ev("big", json!({"id": 100001}), Kind::BaseMissing),
        ev("big", json!({"id": 100500}), Kind::BaseMissing),
    ]);
    assert_eq!(events(&v, EventStatus::Open), expected);
    assert_eq!(report.totals.found(), 10);
    let t = &report.tables[0];
    assert!(t.tally.rows_checked >= 100_000, "{t:?}");
    assert!(t.differing_chunks <= 10, "{t:?}");
    eprintln!(
        "100k rows: {} chunks, {} differing, last chunk size {}",
        t.chunks, t.differing_chunks, t.chunk_rows
    );
}

#[tokio::test]
async fn destination_authority_flips_direction() {
    let pair = Pair::start().await;
    let fill = "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t SELECT seq, seq FROM seq_1_to_50;";
    tokio::join!(pair.source.exec(fill), pair.destination.exec(fill));
    pair.source.exec("DELETE FROM t WHERE id = 3").await;
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::DstFirst, dir.path(), "recheck_delay_ms = 0");
    let report = v.run_full_to_completion(None, false).await.unwrap();
    // Base is the destination: a row missing from the source is target_missing.
    assert_eq!(
        events(&v, EventStatus::Open),
        vec![ev("t", json!({"id": 3}), Kind::TargetMissing)]
    );
    assert_eq!(
        v.inconsistencies(None, 10, None)[0].direction.as_str(),
        "DST"
    );
    assert_eq!(report.direction.as_str(), "DST");
    // fix copies destination → source
    let f = v.fix_open().await.unwrap();
    assert_eq!(f.fixed, 1);
    let n: Vec<i64> = pair.source.query("SELECT COUNT(*) FROM t").await;
    assert_eq!(n, vec![50]);

    // Beyond max_events_per_run, differences are counted but not recorded.
    pair.source
        .exec("DELETE FROM t WHERE id BETWEEN 10 AND 14")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let capped = validator(
        &pair,
        Pattern::DstFirst,
        dir.path(),
        "recheck_delay_ms = 0\nmax_events_per_run = 2",
    );
    let report = capped.run_full_to_completion(None, false).await.unwrap();
    assert_eq!(report.totals.target_missing, 5, "{report:?}");
    assert_eq!((report.events_recorded, report.events_dropped), (2, 3));
    assert_eq!(capped.inconsistencies(None, 10, None).len(), 2);
    // found = recorded + dropped; the table is named for `/fix` to finish it
    assert_eq!(report.found, 5);
    let f = capped.fix_open().await.unwrap();
    assert_eq!(f.unrecorded_tables, vec!["t".to_string()], "{f:?}");
}
