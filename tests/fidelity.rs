//! What the client receives through cutover is exactly what the server sent:
//! values, column definitions, OK/ERR packets, multiple result sets.

mod support;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use support::proxy::{server_code, TestProxy};
use support::Pair;

const TYPES_DDL: &str = "CREATE TABLE typed (
    id INT PRIMARY KEY AUTO_INCREMENT,
    b BLOB, vb VARBINARY(300), d DECIMAL(10,3), dt DATETIME(6), ts TIMESTAMP(3) NULL,
    j JSON, n VARCHAR(10) NULL, e ENUM('a','b'), f DOUBLE, u BIGINT UNSIGNED, bits BIT(9),
    txt TEXT CHARACTER SET utf8mb4, dd DATE, tm TIME(6), y YEAR
)";

async fn fill_typed(c: &mut Conn) {
    let all: Vec<u8> = (0..=255u8).collect();
    c.exec_drop(
        "INSERT INTO typed (b, vb, d, dt, ts, j, n, e, f, u, bits, txt, dd, tm, y) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        mysql_async::Params::Positional(vec![
            all.clone().into(),
            all.clone().into(),
            "-1234567.891".into(),
            "2024-02-29 23:59:59.123456".into(),
            "2024-01-01 00:00:00.125".into(),
            r#"{"k": [1, 2.5, "x", null], "ü": true}"#.into(),
            Value::NULL,
            "b".into(),
            (-1.5e300).into(),
            u64::MAX.into(),
            0x1FFu64.into(),
            "日本語 and emoji 🚀".into(),
            "1999-12-31".into(),
            "-838:59:59.000000".into(),
            2155.into(),
        ]),
    )
    .await
    .unwrap();
    c.query_drop("INSERT INTO typed (b, n, txt) VALUES ('', '', '')")
        .await
        .unwrap();
}

/// Columns (every attribute) and rows of a text-protocol query.
async fn text_result(c: &mut Conn, sql: &str) -> (String, Vec<Vec<Value>>) {
    let mut r = c.query_iter(sql).await.unwrap();
    let cols = format!("{:?}", r.columns().map(|c| c.to_vec()));
    let rows: Vec<Row> = r.collect().await.unwrap();
    (cols, rows.into_iter().map(Row::unwrap).collect())
}

async fn binary_result(c: &mut Conn, sql: &str) -> (String, Vec<Vec<Value>>) {
    let stmt = c.prep(sql).await.unwrap();
    let cols = format!("{:?}", stmt.columns());
    let rows: Vec<Row> = c.exec(&stmt, ()).await.unwrap();
    (cols, rows.into_iter().map(Row::unwrap).collect())
}

#[tokio::test]
async fn values_and_column_definitions_match_a_direct_connection() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut via = proxy.conn().await;
    via.query_drop(TYPES_DDL).await.unwrap();
    fill_typed(&mut via).await;
    let mut direct = pair.source.conn().await;
    let sql = "SELECT * FROM typed ORDER BY id";
    let (pc, pr) = text_result(&mut via, sql).await;
    let (dc, dr) = text_result(&mut direct, sql).await;
    assert_eq!(pc, dc, "text protocol column definitions");
    assert_eq!(pr, dr, "text protocol rows");
    let (pc, pr) = binary_result(&mut via, sql).await;
    let (dc, dr) = binary_result(&mut direct, sql).await;
    assert_eq!(pc, dc, "binary protocol column definitions");
    assert_eq!(pr, dr, "binary protocol rows");

    // Exact bytes of the BLOB, on both sides (mirrored by a prepared INSERT).
    let all: Vec<u8> = (0..=255u8).collect();
    let blob: Vec<u8> = via
        .query_first("SELECT b FROM typed WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(blob, all);
    let on_dst: Vec<Vec<u8>> = pair
        .destination
        .query("SELECT b FROM typed WHERE id = 1")
        .await;
    assert_eq!(on_dst, vec![all]);
    // NULL vs empty string survive
    let (n1, n2): (Option<String>, Option<String>) = via
        .query_first("SELECT (SELECT n FROM typed WHERE id=1), (SELECT n FROM typed WHERE id=2)")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n1, n2), (None, Some(String::new())));
    // and the whole table is identical on both sides
    let src: Vec<(i32, Option<String>)> = pair.source.query("SELECT id, MD5(CONCAT_WS('|', HEX(b), HEX(vb), d, dt, ts, j, n, e, f, u, bits+0, txt, dd, tm, y)) FROM typed ORDER BY id").await;
    let dst: Vec<(i32, Option<String>)> = pair.destination.query("SELECT id, MD5(CONCAT_WS('|', HEX(b), HEX(vb), d, dt, ts, j, n, e, f, u, bits+0, txt, dd, tm, y)) FROM typed ORDER BY id").await;
    assert_eq!(src, dst);
    proxy.stop().await;
}

async fn err_of(c: &mut Conn, sql: &str) -> (u16, String, String) {
    match c.query_drop(sql).await.unwrap_err() {
        mysql_async::Error::Server(e) => (e.code, e.state, e.message),
        other => panic!("{sql}: expected server error, got {other:?}"),
    }
}

#[tokio::test]
async fn errors_are_relayed_verbatim_and_ok_packets_keep_their_fields() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcOnly).await;
    let mut via = proxy.conn().await;
    let mut direct = pair.source.conn().await;
    direct
        .query_drop("CREATE TABLE k (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
        .await
        .unwrap();
    direct
        .query_drop("INSERT INTO k VALUES (1, 1)")
        .await
        .unwrap();
    for (sql, code) in [
        ("INSERT INTO k VALUES (1, 2)", 1062),
        ("SELECT * FROM no_such_table", 1146),
        ("SELEKT 1", 1064),
    ] {
        let p = err_of(&mut via, sql).await;
        let d = err_of(&mut direct, sql).await;
        assert_eq!(p.0, code, "{sql}");
        assert_eq!(p, d, "{sql}");
    }
    // OK packet: affected rows, last insert id, warnings, info
    via.query_drop("INSERT INTO k (v) VALUES (10), (11), (12)")
        .await
        .unwrap();
    assert_eq!(via.affected_rows(), 3);
    assert_eq!(via.last_insert_id(), Some(2));
    assert_eq!(
        via.info(),
        direct_info(&mut direct, "INSERT INTO k (v) VALUES (20), (21), (22)").await
    );
    via.query_drop("UPDATE k SET v = v WHERE id > 0")
        .await
        .unwrap();
    assert_eq!(
        via.affected_rows(),
        0,
        "changed rows, not matched rows (no CLIENT_FOUND_ROWS)"
    );
    via.query_drop("INSERT IGNORE INTO k VALUES (1, 1)")
        .await
        .unwrap();
    assert_eq!(via.get_warnings(), 1);
    let w: Vec<(String, u16, String)> = via.query("SHOW WARNINGS").await.unwrap();
    assert_eq!(w[0].1, 1062);
    proxy.stop().await;
}

async fn direct_info(c: &mut Conn, sql: &str) -> std::borrow::Cow<'static, str> {
    c.query_drop(sql).await.unwrap();
    std::borrow::Cow::Owned(c.info().into_owned())
}

#[tokio::test]
async fn multiple_result_sets_from_call_and_multi_statements() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut via = proxy.conn().await;
    via.query_drop("CREATE TABLE m (id INT PRIMARY KEY)")
        .await
        .unwrap();
    via.query_drop("CREATE PROCEDURE two() BEGIN SELECT 1 AS a; SELECT 'x' AS b, 2 AS c; END")
        .await
        .unwrap();
    let mut r = via.query_iter("CALL two()").await.unwrap();
    let first: Vec<i64> = r.collect().await.unwrap();
    let second: Vec<(String, i64)> = r.collect().await.unwrap();
    drop(r);
    assert_eq!(first, vec![1]);
    assert_eq!(second, vec![("x".to_string(), 2)]);
    let mut r = via
        .query_iter("INSERT INTO m VALUES (1); SELECT id FROM m; INSERT INTO m VALUES (2)")
        .await
        .unwrap();
    let _: Vec<Row> = r.collect().await.unwrap();
    let ids: Vec<i32> = r.collect().await.unwrap();
    let _: Vec<Row> = r.collect().await.unwrap();
    drop(r);
    assert_eq!(ids, vec![1]);
    // Still in sync afterwards, and the procedure + rows exist on both sides.
    let one: i32 = via.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1);
    let on_dst: Vec<i32> = pair.destination.query("SELECT id FROM m ORDER BY id").await;
    assert_eq!(on_dst, vec![1, 2]);
    let _: Vec<Row> = pair.destination.query("CALL two()").await;
    proxy.stop().await;
}

#[tokio::test]
async fn ping_init_db_reset_and_change_user() {
    let pair = Pair::start().await;
    pair.source.exec("CREATE DATABASE other").await;
    pair.destination.exec("CREATE DATABASE other").await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut c = proxy.conn().await;
    c.ping().await.unwrap();
    c.query_drop("USE other").await.unwrap();
    c.query_drop("CREATE TABLE o (id INT)").await.unwrap();
    let db: String = c.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(db, "other");
    let on_dst: Vec<String> = pair.destination.query("SHOW TABLES FROM other").await;
    assert_eq!(on_dst, vec!["o".to_string()]);
    // COM_RESET_CONNECTION clears user variables and prepared statements on both sides.
    c.query_drop("SET @v = 42").await.unwrap();
    c.reset().await.unwrap();
    let v: Option<i64> = c.query_first("SELECT @v").await.unwrap().unwrap();
    assert_eq!(v, None);
    // COM_CHANGE_USER re-authenticates (wrong password refused).
    let ok = c
        .change_user(
            mysql_async::ChangeUserOpts::default()
                .with_user(Some("app".into()))
                .with_pass(Some("app".into()))
                .with_db_name(Some("shop".into())),
        )
        .await;
    ok.unwrap();
    let db: String = c.query_first("SELECT DATABASE()").await.unwrap().unwrap();
    assert_eq!(db, "shop");
    let bad = c
        .change_user(
            mysql_async::ChangeUserOpts::default()
                .with_user(Some("app".into()))
                .with_pass(Some("nope".into())),
        )
        .await
        .unwrap_err();
    assert_eq!(server_code(&bad), 1045);
    proxy.stop().await;
}
