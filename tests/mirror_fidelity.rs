//! Mirroring fidelity (issue 9): for each kind of input that could make the
//! two databases differ silently, or make a client see something a direct
//! connection would not, the client-visible values through cutover equal a
//! direct connection's and the rows are equal on both backends — or, where
//! a statement cannot be made deterministic (triggers), it is counted and
//! repaired. Against real MariaDB pairs, in src_first and dst_first.

mod support;

use std::time::Duration;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};
use support::proxy::TestProxy;
use support::{MariaDb, Pair};

const DOUBLE: [Pattern; 2] = [Pattern::SrcFirst, Pattern::DstFirst];

/// Every row of `sql` as text cells (NULL as "NULL"), for comparisons.
async fn cells(c: &mut Conn, sql: &str) -> Vec<Vec<String>> {
    let rows: Vec<Row> = c.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql_async::Value::NULL) | None => "NULL".to_string(),
                    Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(v) => v.as_sql(true),
                })
                .collect()
        })
        .collect()
}

async fn both(pair: &Pair, sql: &str) {
    pair.source.exec(sql).await;
    pair.destination.exec(sql).await;
}

async fn dump(db: &MariaDb, sql: &str) -> Vec<Vec<String>> {
    let mut c = db.conn().await;
    let out = cells(&mut c, sql).await;
    let _ = c.disconnect().await;
    out
}

/// The rows of `sql` on both sides, asserted equal.
async fn equal_on_both(pair: &Pair, sql: &str) -> Vec<Vec<String>> {
    let (s, d) = (
        dump(&pair.source, sql).await,
        dump(&pair.destination, sql).await,
    );
    assert_eq!(s, d, "{sql}: source and destination differ");
    s
}

/// The sides of a pattern: where a direct connection sees what the client
/// of cutover should see.
fn primary(pair: &Pair, p: Pattern) -> &MariaDb {
    match p {
        Pattern::DstFirst | Pattern::DstOnly => &pair.destination,
        _ => &pair.source,
    }
}

// ---- kind 1: per-statement results after a mirrored write -----------------

/// What a client reads about its previous statements, on table `tbl`.
async fn diagnostics_script(c: &mut Conn, tbl: &str) -> Vec<Vec<Vec<String>>> {
    let mut seen = Vec::new();
    let steps: &[(&str, &str)] = &[
        (
            "INSERT INTO {t} (id, v) VALUES (2, 'b'), (3, 'c')",
            "SELECT ROW_COUNT()",
        ),
        ("UPDATE {t} SET v = 'x' WHERE id >= 2", "SELECT ROW_COUNT()"),
        ("BEGIN", "SELECT 1"),
        ("DELETE FROM {t} WHERE id = 3", "SELECT ROW_COUNT()"),
        ("COMMIT", "SELECT 1"),
        (
            "INSERT INTO {t} (v) VALUES ('d')",
            "SELECT LAST_INSERT_ID(), @@identity",
        ),
        (
            "INSERT IGNORE INTO {t} (id, v) VALUES (2, 'dup')",
            "SELECT @@warning_count, ROW_COUNT()",
        ),
        (
            "INSERT IGNORE INTO {t} (id, v) VALUES (2, 'dup')",
            "SHOW WARNINGS",
        ),
        (
            "UPDATE {t} SET v = 'y' WHERE id = 2",
            "GET DIAGNOSTICS @n = NUMBER, @r = ROW_COUNT",
        ),
        ("SELECT 1", "SELECT @n, @r"),
    ];
    for (write, read) in steps {
        c.query_drop(write.replace("{t}", tbl)).await.unwrap();
        if read.starts_with("GET") {
            c.query_drop(*read).await.unwrap();
        } else {
            seen.push(cells(c, read).await);
        }
    }
    seen
}

#[tokio::test]
async fn row_count_and_diagnostics_after_a_mirrored_write_are_the_direct_ones() {
    for p in DOUBLE {
        let pair = Pair::start().await;
        let ddl = "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10) NOT NULL) AUTO_INCREMENT = 10";
        both(&pair, ddl).await;
        primary(&pair, p).exec(&ddl.replace(" t ", " d ")).await;
        let proxy = TestProxy::start(&pair, p).await;
        let mut via = proxy.conn().await;
        let through = diagnostics_script(&mut via, "t").await;
        let mut direct = primary(&pair, p).conn().await;
        let expected = diagnostics_script(&mut direct, "d").await;
        assert_eq!(
            through, expected,
            "{p}: what the client reads differs from a direct connection"
        );
        assert_eq!(
            through[0],
            vec![vec!["2".to_string()]],
            "{p}: ROW_COUNT() after INSERT of 2 rows"
        );
        equal_on_both(&pair, "SELECT id, v FROM t ORDER BY id").await;
        let s = proxy.stats();
        assert_eq!(
            (s.double_write_failure, s.mirror_mismatches),
            (0, 0),
            "{p}: {s:?}"
        );
        proxy.stop().await;
    }
}

/// The same kind through other write forms: ON DUPLICATE KEY UPDATE,
/// REPLACE, a prepared (binary protocol) INSERT, FOUND_ROWS() after a
/// mirrored write.
async fn more_diagnostics(c: &mut Conn, tbl: &str) -> Vec<Vec<Vec<String>>> {
    let mut seen = Vec::new();
    c.query_drop(format!(
        "INSERT INTO {tbl} (id, v) VALUES (1, 'a') ON DUPLICATE KEY UPDATE v = 'z'"
    ))
    .await
    .unwrap();
    seen.push(cells(c, "SELECT ROW_COUNT(), LAST_INSERT_ID()").await);
    c.query_drop(format!(
        "REPLACE INTO {tbl} (id, v) VALUES (1, 'r'), (7, 's')"
    ))
    .await
    .unwrap();
    seen.push(cells(c, "SELECT ROW_COUNT()").await);
    c.exec_drop(format!("INSERT INTO {tbl} (v) VALUES (?), (?)"), ("p", "q"))
        .await
        .unwrap();
    seen.push(cells(c, "SELECT ROW_COUNT(), LAST_INSERT_ID()").await);
    c.exec_drop(format!("UPDATE {tbl} SET v = ? WHERE id > ?"), ("u", 1))
        .await
        .unwrap();
    seen.push(cells(c, "SELECT ROW_COUNT()").await);
    let _: Vec<Row> = c
        .query(format!(
            "SELECT SQL_CALC_FOUND_ROWS id FROM {tbl} ORDER BY id LIMIT 1"
        ))
        .await
        .unwrap();
    c.query_drop(format!("DELETE FROM {tbl} WHERE id = 7"))
        .await
        .unwrap();
    seen.push(cells(c, "SELECT ROW_COUNT()").await);
    seen
}

#[tokio::test]
async fn other_writes_odku_replace_and_prepared_keep_their_diagnostics() {
    for p in DOUBLE {
        let pair = Pair::start().await;
        let ddl = "CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(10) NOT NULL); INSERT INTO t VALUES (1, 'a')";
        both(&pair, ddl).await;
        primary(&pair, p).exec(&ddl.replace(" t ", " d ")).await;
        let proxy = TestProxy::start(&pair, p).await;
        let mut via = proxy.conn().await;
        let through = more_diagnostics(&mut via, "t").await;
        let mut direct = primary(&pair, p).conn().await;
        let expected = more_diagnostics(&mut direct, "d").await;
        assert_eq!(through, expected, "{p}");
        assert_eq!(
            through[0][0][0], "2",
            "{p}: ODKU that updated a row counts 2"
        );
        equal_on_both(&pair, "SELECT id, v FROM t ORDER BY id").await;
        proxy.stop().await;
    }
}

// ---- kind 2: writes hidden inside reads -----------------------------------

const BUMP: &str = "CREATE FUNCTION bump(k VARCHAR(20)) RETURNS INT MODIFIES SQL DATA \
                    BEGIN INSERT INTO hits (k) VALUES (k); RETURN (SELECT COUNT(*) FROM hits); END";

#[tokio::test]
async fn a_select_calling_a_function_that_writes_is_mirrored() {
    for p in DOUBLE {
        let pair = Pair::start().await;
        both(
            &pair,
            "CREATE TABLE hits (id INT AUTO_INCREMENT PRIMARY KEY, k VARCHAR(20))",
        )
        .await;
        let proxy = TestProxy::start(&pair, p).await;
        let mut c = proxy.conn().await;
        // created through cutover: the catalog is re-read at once
        c.query_drop(BUMP).await.unwrap();
        let n: Option<i64> = c.query_first("SELECT bump('x')").await.unwrap();
        assert_eq!(
            n,
            Some(1),
            "{p}: the function's value, as a direct connection returns it"
        );
        // further inputs of the kind: a call in WHERE, in SET, in DO, qualified
        let _: Vec<Row> = c
            .query("SELECT 1 FROM DUAL WHERE bump('w') > 0")
            .await
            .unwrap();
        c.query_drop("SET @b = bump('s')").await.unwrap();
        c.query_drop("DO shop.bump('d')").await.unwrap();
        let b: Option<i64> = c.query_first("SELECT @b").await.unwrap();
        let rows = equal_on_both(&pair, "SELECT id, k FROM hits ORDER BY id").await;
        assert_eq!(rows.len(), 4, "{p}: {rows:?}");
        assert_eq!(b, Some(3), "{p}");
        // a plain read stays a read: nothing more is mirrored
        let before = proxy.stats().double_write_success;
        let _: Vec<Row> = c
            .query("SELECT COUNT(*), UPPER('x') FROM hits")
            .await
            .unwrap();
        assert_eq!(proxy.stats().double_write_success, before, "{p}");
        proxy.stop().await;
    }
}

#[tokio::test]
async fn a_function_created_directly_is_known_after_the_periodic_refresh() {
    let pair = Pair::start().await;
    both(
        &pair,
        "CREATE TABLE hits (id INT AUTO_INCREMENT PRIMARY KEY, k VARCHAR(20))",
    )
    .await;
    let proxy = TestProxy::start_with(
        &pair,
        Pattern::SrcFirst,
        "[mirror]\ncatalog_refresh_ms = 200",
    )
    .await;
    both(&pair, BUMP).await; // not through cutover (e.g. a schema tool)
    tokio::time::sleep(Duration::from_millis(2500)).await; // a liveness bound: refreshes every 200 ms
    let mut c = proxy.conn().await;
    let _: Option<i64> = c.query_first("SELECT bump('x')").await.unwrap();
    let rows = equal_on_both(&pair, "SELECT id, k FROM hits ORDER BY id").await;
    assert_eq!(rows.len(), 1);
    proxy.stop().await;
}

// ---- kind 3: non-deterministic values assigned to user variables ----------

#[tokio::test]
async fn user_variables_hold_the_primary_s_values_on_both_sides() {
    for p in DOUBLE {
        let pair = Pair::start().await;
        both(&pair, "CREATE TABLE uv (id INT PRIMARY KEY, u VARCHAR(36), t DATETIME(6), r DOUBLE, d DECIMAL(20,6), s VARCHAR(20) CHARACTER SET utf8mb4, b VARBINARY(16))").await;
        let proxy = TestProxy::start(&pair, p).await;
        let mut c = proxy.conn().await;
        c.query_drop("SET @u = UUID(), @t = NOW(6), @r = RAND()")
            .await
            .unwrap();
        c.query_drop("INSERT INTO uv (id, u, t, r) VALUES (1, @u, @t, @r)")
            .await
            .unwrap();
        let seen = cells(&mut c, "SELECT @u, CAST(@t AS CHAR), @r").await;
        // further inputs: SELECT … INTO, :=, values computed from table data, typed values
        c.query_drop("SELECT UUID(), RAND() * 1000 INTO @u2, @r2")
            .await
            .unwrap();
        let _: Vec<Row> = c
            .query("SELECT @d := SUM(r) * 1.5 + 0.000001, @s := CONCAT('é', UUID_SHORT()) FROM uv")
            .await
            .unwrap();
        c.query_drop("SET @b = UNHEX(MD5(RAND()))").await.unwrap();
        c.query_drop("INSERT INTO uv (id, u, r, d, s, b) VALUES (2, @u2, @r2, @d, @s, @b)")
            .await
            .unwrap();
        let rows = equal_on_both(
            &pair,
            "SELECT id, u, CAST(t AS CHAR), r, d, s, HEX(b) FROM uv ORDER BY id",
        )
        .await;
        assert_eq!(rows.len(), 2, "{p}");
        assert_eq!(
            rows[0][1], seen[0][0],
            "{p}: the client's @u is the stored one"
        );
        assert_eq!(rows[0][2], seen[0][1], "{p}");
        proxy.stop().await;
    }
}

// ---- kind 4: the client's own pinning variables ---------------------------

#[tokio::test]
async fn the_client_s_timestamp_insert_id_and_rand_seeds_behave_as_directly() {
    for p in DOUBLE {
        let pair = Pair::start().await;
        both(
            &pair,
            "CREATE TABLE ts (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6), r DOUBLE)",
        )
        .await;
        let proxy = TestProxy::start(&pair, p).await;
        let mut c = proxy.conn().await;
        c.query_drop("SET timestamp = 1000000000").await.unwrap();
        c.query_drop("INSERT INTO ts (at) VALUES (NOW(6))")
            .await
            .unwrap();
        let now = cells(&mut c, "SELECT CAST(NOW() AS CHAR), @@timestamp").await;
        let mut d = primary(&pair, p).conn().await;
        d.query_drop("SET timestamp = 1000000000").await.unwrap();
        let direct = cells(&mut d, "SELECT CAST(NOW() AS CHAR), @@timestamp").await;
        assert_eq!(now, direct, "{p}");
        assert_eq!(now[0][0], "2001-09-09 01:46:40", "{p}");
        // after another write the client's clock is still set
        c.query_drop("INSERT INTO ts (at) VALUES (NOW(6))")
            .await
            .unwrap();
        let again: Option<String> = c.query_first("SELECT CAST(NOW() AS CHAR)").await.unwrap();
        assert_eq!(again.as_deref(), Some("2001-09-09 01:46:40"), "{p}");
        // further inputs: insert_id, and the RNG seeded by the client
        c.query_drop("SET insert_id = 500").await.unwrap();
        c.query_drop("INSERT INTO ts (at) VALUES ('2020-01-01')")
            .await
            .unwrap();
        c.query_drop("SET rand_seed1 = 12345, rand_seed2 = 67890")
            .await
            .unwrap();
        c.query_drop("INSERT INTO ts (at, r) VALUES (NOW(), RAND())")
            .await
            .unwrap();
        let r_through: Option<f64> = c
            .query_first("SELECT r FROM ts WHERE r IS NOT NULL")
            .await
            .unwrap();
        d.query_drop("SET rand_seed1 = 12345, rand_seed2 = 67890")
            .await
            .unwrap();
        let r_direct: Option<f64> = d.query_first("SELECT RAND()").await.unwrap();
        assert_eq!(r_through, r_direct, "{p}: RAND() after the client's seeds");
        let rows = equal_on_both(&pair, "SELECT id, CAST(at AS CHAR), r FROM ts ORDER BY id").await;
        assert_eq!(rows[0][1], "2001-09-09 01:46:40.000000", "{p}");
        assert!(rows.iter().any(|r| r[0] == "500"), "{p}: {rows:?}");
        c.query_drop("SET timestamp = DEFAULT").await.unwrap();
        let year: Option<i64> = c.query_first("SELECT YEAR(NOW())").await.unwrap();
        assert!(year.unwrap() >= 2024, "{p}");
        proxy.stop().await;
    }
}

// ---- kind 5: temporary tables across a pattern change ---------------------

#[tokio::test]
async fn a_temporary_table_created_before_mirroring_exists_on_the_mirror() {
    for (before, after) in [
        (Pattern::SrcOnly, Pattern::SrcFirst),
        (Pattern::DstOnly, Pattern::DstFirst),
    ] {
        let pair = Pair::start().await;
        both(
            &pair,
            "CREATE TABLE perm (id INT PRIMARY KEY, note VARCHAR(20))",
        )
        .await;
        let proxy = TestProxy::start(&pair, before).await;
        let mut c = proxy.conn().await;
        c.query_drop("CREATE TEMPORARY TABLE staging (id INT PRIMARY KEY, note VARCHAR(20) CHARACTER SET utf8mb4, b BLOB)")
            .await
            .unwrap();
        c.query_drop(
            "INSERT INTO staging VALUES (3, 'drei', NULL), (1, 'één', X'00ff'), (2, NULL, '')",
        )
        .await
        .unwrap();
        proxy.set_pattern(after);
        c.query_drop("INSERT INTO perm SELECT id, note FROM staging ORDER BY id")
            .await
            .unwrap();
        // further input: the temporary table written and joined after the change
        c.query_drop("UPDATE staging SET note = 'x' WHERE id = 2")
            .await
            .unwrap();
        c.query_drop(
            "UPDATE perm JOIN staging USING (id) SET perm.note = staging.note WHERE perm.id = 2",
        )
        .await
        .unwrap();
        let rows = equal_on_both(&pair, "SELECT id, note FROM perm ORDER BY id").await;
        assert_eq!(rows.len(), 3, "{after}: {rows:?}");
        assert_eq!(rows[1][1], "x", "{after}");
        assert_eq!(rows[0][1], "één", "{after}");
        let s = proxy.stats();
        assert_eq!(s.double_write_failure, 0, "{after}: {s:?}");
        proxy.stop().await;
    }
}

// ---- kind 6: side effects the statement text does not show (triggers) -----

async fn control_with_proxy(
    pair: &Pair,
    dir: &std::path::Path,
    extra: &str,
) -> (support::control::Admin, TestProxy) {
    let cfg = support::control::config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.join("state.json"),
        extra,
    );
    let admin = support::control::Admin::start_with_validation(&cfg).await;
    let mut proxy_cfg = cfg.clone();
    proxy_cfg.listen = "127.0.0.1:0".into();
    let proxy = TestProxy::attach(proxy_cfg, admin.pattern.clone(), admin.stats.clone()).await;
    for step in ["/src_only", "/src_first"] {
        assert_eq!(admin.post(step, "").await.status, 200);
    }
    (admin, proxy)
}

fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const TRIGGERS: &str = "CREATE TABLE orders (id INT PRIMARY KEY, qty INT NOT NULL); \
    CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id INT NOT NULL); \
    CREATE TABLE tags (order_id INT PRIMARY KEY, tag CHAR(36) NOT NULL); \
    CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW \
      INSERT INTO audit (order_id) VALUES (NEW.id); \
    CREATE TRIGGER orders_tag AFTER UPDATE ON orders FOR EACH ROW \
      INSERT INTO tags VALUES (NEW.id, UUID()) ON DUPLICATE KEY UPDATE tag = UUID()";

#[tokio::test]
async fn trigger_side_effects_are_counted_and_repaired_by_auto_fix_within_seconds() {
    let pair = Pair::start().await;
    both(&pair, TRIGGERS).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[validation]\nauto_fix = true\nrecheck_delay_ms = 50";
    let (admin, proxy) = control_with_proxy(&pair, dir.path(), extra).await;
    let mut clients = Vec::new();
    for w in 0..8 {
        let opts = proxy.opts();
        clients.push(tokio::spawn(async move {
            let mut c = Conn::new(opts).await.unwrap();
            for i in 0..15 {
                let id = w * 100 + i;
                c.query_drop(format!("INSERT INTO orders VALUES ({id}, 1)"))
                    .await
                    .unwrap();
                // further input of the kind: a trigger calling UUID()
                c.query_drop(format!("UPDATE orders SET qty = qty + 1 WHERE id = {id}"))
                    .await
                    .unwrap();
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let metrics = admin.get("/metrics").await.body;
    assert!(
        sample(
            &metrics,
            "cutover_unsafe_statements_total{reason=\"trigger\"}"
        ) >= 240.0,
        "every trigger-firing write is counted"
    );
    // the re-check of the trigger's target tables repairs them (liveness bound)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sql = [
            "SELECT id, order_id FROM audit ORDER BY id",
            "SELECT order_id, tag FROM tags ORDER BY order_id",
        ];
        let mut same = true;
        for q in sql {
            same &= dump(&pair.source, q).await == dump(&pair.destination, q).await;
        }
        if same {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "audit/tags still differ after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        equal_on_both(&pair, "SELECT COUNT(*) FROM audit").await[0][0],
        "120"
    );
    equal_on_both(&pair, "SELECT id, qty FROM orders ORDER BY id").await;
    assert_eq!(proxy.stats().double_write_failure, 0);
    proxy.stop().await;
    admin.stop().await;
}

/// The client's clock set after a pattern change that turned its former
/// authoritative connection (which still owed the reset of a prepared
/// write's pin) into the mirror: both sides use the client's clock.
#[tokio::test]
async fn the_client_s_clock_holds_on_a_former_primary_that_owed_a_reset() {
    let pair = Pair::start().await;
    both(
        &pair,
        "CREATE TABLE ts (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6))",
    )
    .await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    c.exec_drop("INSERT INTO ts (at) VALUES (NOW(6))", ())
        .await
        .unwrap();
    proxy.set_pattern(Pattern::DstFirst);
    c.query_drop("SET timestamp = 1000000000").await.unwrap();
    c.query_drop("INSERT INTO ts (at) VALUES (NOW(6))")
        .await
        .unwrap();
    let rows = equal_on_both(&pair, "SELECT id, CAST(at AS CHAR) FROM ts ORDER BY id").await;
    assert_eq!(rows[1][1], "2001-09-09 01:46:40.000000", "{rows:?}");
    proxy.stop().await;
}
