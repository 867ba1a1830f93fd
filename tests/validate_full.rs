//! Full validation against a real MariaDB pair: every kind of difference is
//! found (and nothing else), the fixer repairs them, tables without a primary
//! key are reported as skipped.

mod support;

use cutover::pattern::Pattern;
use cutover::validate::{EventStatus, Kind, Outcome};
use serde_json::json;
use support::validate::*;
use support::Pair;

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
    every_kind_of_difference("checksum = \"crc32\"").await;
}

#[tokio::test]
async fn finds_every_kind_of_difference_with_md5_too() {
    every_kind_of_difference("checksum = \"md5\"").await;
}

async fn every_kind_of_difference(checksum: &str) {
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
        &format!("chunk_min_rows = 10\nchunk_max_rows = 300\nrecheck_delay_ms = 0\n{checksum}"),
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
    let v = validator(
        &pair,
        Pattern::SrcFirst,
        dir.path(),
        &format!("recheck_delay_ms = 0\n{checksum}"),
    );
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

/// Two rows whose CRC32 collide: the bytes of one differ from the other's by
/// the CRC-32 polynomial itself (x^32 + x^26 + … + 1, 33 bits, in the
/// reflected bit order CRC-32 reads bytes in), which is a multiple of the
/// polynomial wherever it sits in the row, so `CRC32(row)` — and the
/// pt-table-checksum chunk checksum built on it — is identical on both
/// sides. The second CRC (CRC32C) differs, so the chunk checksum differs and
/// the drill-down finds the row.
#[tokio::test]
async fn rows_whose_crc32_collide_are_found() {
    const POLY: [u8; 5] = [0x41, 0x06, 0x71, 0xDB, 0x01];
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE k (id INT PRIMARY KEY, payload VARBINARY(32) NOT NULL, n INT);\n\
               INSERT INTO k SELECT seq, UNHEX(MD5(seq)), seq FROM seq_1_to_5000;";
    tokio::join!(pair.source.exec(ddl), pair.destination.exec(ddl));
    // XOR the polynomial into five bytes in the middle of row 2500's payload.
    let payload: Vec<String> = pair
        .source
        .query("SELECT HEX(payload) FROM k WHERE id = 2500")
        .await;
    let mut bytes: Vec<u8> = (0..payload[0].len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&payload[0][i..i + 2], 16).unwrap())
        .collect();
    for (b, p) in bytes[6..11].iter_mut().zip(POLY) {
        *b ^= p;
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    pair.destination
        .exec(&format!("UPDATE k SET payload = X'{hex}' WHERE id = 2500"))
        .await;
    // The precondition: the rows differ, and every CRC32-only checksum says they are equal.
    let row = "SELECT HEX(payload), CRC32(CONCAT_WS('#', id, payload, n)), CRC32(payload), \
               CRC32C(CONCAT_WS('#', id, payload, n)) FROM k WHERE id = 2500";
    let a: Vec<(String, u32, u32, u32)> = pair.source.query(row).await;
    let b: Vec<(String, u32, u32, u32)> = pair.destination.query(row).await;
    assert_ne!(a[0].0, b[0].0, "the payloads differ");
    assert_eq!(a[0].1, b[0].1, "CRC32 of the rows collides");
    assert_eq!(a[0].2, b[0].2, "CRC32 of the payloads collides");
    assert_ne!(a[0].3, b[0].3, "CRC32C does not");
    let floor = "SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', id, payload, n, \
                 CONCAT(ISNULL(id), ISNULL(payload), ISNULL(n))))) FROM k";
    let fa: Vec<(i64, u64)> = pair.source.query(floor).await;
    let fb: Vec<(i64, u64)> = pair.destination.query(floor).await;
    assert_eq!(
        fa, fb,
        "a single-CRC32 table checksum misses the difference"
    );

    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), "recheck_delay_ms = 0");
    let report = v.run_full_to_completion(None, false).await.unwrap();
    assert_eq!(
        events(&v, EventStatus::Open),
        vec![ev("k", json!({"id": 2500}), Kind::Neq)],
        "{report:?}"
    );
}

/// Swapping one column's values between two rows of equal length leaves the
/// XOR of every row's CRC unchanged (CRC is linear); the validator sums the
/// 64-bit row hashes instead, so the chunk differs and both rows are found.
#[tokio::test]
async fn values_swapped_between_rows_are_found() {
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE s (id INT PRIMARY KEY, email VARCHAR(40) NOT NULL);\n\
               INSERT INTO s SELECT seq, CONCAT('user', seq, '@example.com') FROM seq_1_to_3000;";
    tokio::join!(pair.source.exec(ddl), pair.destination.exec(ddl));
    pair.destination
        .exec(
            "UPDATE s SET email = CASE id WHEN 1234 THEN 'user1235@example.com' \
             ELSE 'user1234@example.com' END WHERE id IN (1234, 1235)",
        )
        .await;
    let xor = "SELECT BIT_XOR(CRC32(CONCAT_WS('#', id, email))), BIT_XOR(CRC32C(CONCAT_WS('#', id, email))) FROM s";
    let xa: Vec<(u64, u64)> = pair.source.query(xor).await;
    let xb: Vec<(u64, u64)> = pair.destination.query(xor).await;
    assert_eq!(xa, xb, "XOR-folded CRCs cancel the swap");
    let dir = tempfile::tempdir().unwrap();
    let v = validator(&pair, Pattern::SrcFirst, dir.path(), "recheck_delay_ms = 0");
    v.run_full_to_completion(None, false).await.unwrap();
    assert_eq!(
        events(&v, EventStatus::Open),
        sorted(vec![
            ev("s", json!({"id": 1234}), Kind::Neq),
            ev("s", json!({"id": 1235}), Kind::Neq),
        ])
    );
}
