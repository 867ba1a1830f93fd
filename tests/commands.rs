//! The less common commands and framings, spoken byte by byte: classic EOF,
//! FIELD_LIST, STATISTICS, SET_OPTION, SEND_LONG_DATA, LOCAL INFILE, KILL.

mod support;

use std::time::Duration;

use cutover::pattern::Pattern;
use mysql_async::prelude::*;
use mysql_common::constants::CapabilityFlags;
use support::proxy::raw::{self, command, err_code, next, until_terminator};
use support::proxy::TestProxy;
use support::Pair;

fn classic_caps() -> CapabilityFlags {
    let mut c = raw::default_caps()
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS;
    c.remove(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    c
}

fn query(sql: &str) -> Vec<u8> {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    p
}

#[tokio::test]
async fn classic_eof_framing_for_text_and_prepared_results() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let (mut io, ok) = raw::login(proxy.port, classic_caps(), "mysql_native_password", "app").await;
    assert_eq!(ok[0], 0);
    // text result: count, 2 defs, EOF, 1 row, EOF
    assert_eq!(
        command(&mut io, &query("SELECT 1 AS a, NULL AS b")).await,
        vec![2]
    );
    let rest = until_terminator(&mut io).await; // def, def, EOF
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[2][0], 0xFE);
    let rest = until_terminator(&mut io).await; // row, EOF
    assert_eq!(rest[0], vec![1, b'1', 0xFB]);
    assert_eq!(rest[1][0], 0xFE);
    assert_eq!(rest[1].len(), 5, "classic EOF is 5 bytes");

    // prepare: PREPARE_OK with cutover's id, 1 param def + EOF, 1 column def + EOF
    let ok = command(&mut io, &{
        let mut p = vec![0x16];
        p.extend_from_slice(b"SELECT ? + 1 AS n");
        p
    })
    .await;
    assert_eq!(ok[0], 0);
    let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    assert_eq!(id, 1, "first statement of the session gets cutover id 1");
    assert_eq!(u16::from_le_bytes([ok[5], ok[6]]), 1, "columns");
    assert_eq!(u16::from_le_bytes([ok[7], ok[8]]), 1, "params");
    let params = until_terminator(&mut io).await;
    assert_eq!(params.len(), 2);
    let cols = until_terminator(&mut io).await;
    assert_eq!(cols.len(), 2);
    // execute with a LONGLONG 41
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 8, 0]);
    exec.extend_from_slice(&41i64.to_le_bytes());
    assert_eq!(command(&mut io, &exec).await, vec![1]);
    let defs = until_terminator(&mut io).await;
    assert_eq!(defs.len(), 2);
    let rows = until_terminator(&mut io).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][0], 0x00, "binary row header");
    assert_eq!(&rows[0][2..10], &42i64.to_le_bytes());
    // execute again WITHOUT re-sending types (new_params_bound = 0)
    let mut exec2 = vec![0x17];
    exec2.extend_from_slice(&id.to_le_bytes());
    exec2.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0]);
    exec2.extend_from_slice(&1i64.to_le_bytes());
    assert_eq!(command(&mut io, &exec2).await, vec![1]);
    until_terminator(&mut io).await;
    let rows = until_terminator(&mut io).await;
    assert_eq!(&rows[0][2..10], &2i64.to_le_bytes());
    // after a switch to dst_only the statement is prepared lazily on the
    // destination and the remembered types are sent with it
    proxy.set_pattern(Pattern::DstOnly);
    assert_eq!(command(&mut io, &exec2).await, vec![1]);
    until_terminator(&mut io).await;
    let rows = until_terminator(&mut io).await;
    assert_eq!(&rows[0][2..10], &2i64.to_le_bytes());
    proxy.stop().await;
}

#[tokio::test]
async fn field_list_statistics_and_set_option() {
    let pair = Pair::start().await;
    pair.source
        .exec("CREATE TABLE fl (id INT, name VARCHAR(5))")
        .await;
    let proxy = TestProxy::start(&pair, Pattern::SrcOnly).await;
    for caps in [
        raw::default_caps() | CapabilityFlags::CLIENT_MULTI_STATEMENTS,
        classic_caps(),
    ] {
        let (mut io, _) = raw::login(proxy.port, caps, "mysql_native_password", "app").await;
        io.send_packet(0, b"\x04fl\x00").await.unwrap();
        let defs = until_terminator(&mut io).await;
        assert_eq!(defs.len(), 3, "two column definitions and a terminator");
        let stats = command(&mut io, &[0x09]).await;
        assert!(
            stats.starts_with(b"Uptime: "),
            "{}",
            String::from_utf8_lossy(&stats)
        );
        // multi-statements off, then a multi-statement is a syntax error
        let r = command(&mut io, &[0x1B, 1, 0]).await;
        assert!(r[0] == 0xFE || r[0] == 0x00, "{r:?}");
        assert_eq!(
            err_code(&command(&mut io, &query("SELECT 1; SELECT 2")).await),
            1064
        );
        let r = command(&mut io, &[0x1B, 0, 0]).await;
        assert!(r[0] == 0xFE || r[0] == 0x00);
        assert_eq!(command(&mut io, &query("DO 1; DO 2")).await[0], 0x00);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn send_long_data_reaches_both_sides() {
    let pair = Pair::start().await;
    for db in [&pair.source, &pair.destination] {
        db.exec("CREATE TABLE lb (id INT PRIMARY KEY, data LONGBLOB)")
            .await;
    }
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let (mut io, _) = raw::login(
        proxy.port,
        raw::default_caps(),
        "mysql_native_password",
        "app",
    )
    .await;
    let ok = command(&mut io, b"\x16INSERT INTO lb VALUES (?, ?)").await;
    let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
    // two parameter definitions; with DEPRECATE_EOF no EOF follows, and an
    // INSERT has no column definitions
    next(&mut io).await;
    next(&mut io).await;
    let mut expected = Vec::new();
    for chunk in 0..3u8 {
        let part: Vec<u8> = (0..=255u8).map(|b| b ^ chunk).collect();
        expected.extend_from_slice(&part);
        let mut p = vec![0x18];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&1u16.to_le_bytes());
        p.extend_from_slice(&part);
        io.send_packet(0, &p).await.unwrap();
    }
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 3, 0, 0xFC, 0]);
    exec.extend_from_slice(&7i32.to_le_bytes());
    let r = command(&mut io, &exec).await;
    assert_eq!(r[0], 0x00, "{r:?}");
    let src: Vec<Vec<u8>> = pair.source.query("SELECT data FROM lb WHERE id = 7").await;
    let dst: Vec<Vec<u8>> = pair
        .destination
        .query("SELECT data FROM lb WHERE id = 7")
        .await;
    assert_eq!(src, vec![expected.clone()]);
    assert_eq!(dst, vec![expected]);
    proxy.stop().await;
}

#[tokio::test]
async fn load_data_local_infile_is_relayed_and_mirrored() {
    let pair = Pair::start().await;
    for db in [&pair.source, &pair.destination] {
        db.exec("CREATE TABLE li (id INT PRIMARY KEY, v VARCHAR(10))")
            .await;
    }
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let caps = raw::default_caps() | CapabilityFlags::CLIENT_LOCAL_FILES;
    let (mut io, _) = raw::login(proxy.port, caps, "mysql_native_password", "app").await;
    let r = command(
        &mut io,
        &query("LOAD DATA LOCAL INFILE 'rows.tsv' INTO TABLE li"),
    )
    .await;
    assert_eq!(r[0], 0xFB, "server asks for the file: {r:?}");
    io.send_packet(2, b"1\tone\n2\ttwo\n3\tthree\n")
        .await
        .unwrap();
    io.send_packet(3, b"").await.unwrap();
    let ok = next(&mut io).await;
    assert_eq!(ok[0], 0x00, "{ok:?}");
    assert_eq!(ok[1], 3, "3 rows affected");
    // the session is still in sync
    assert_eq!(command(&mut io, &[0x0E]).await[0], 0);
    let src: Vec<(i32, String)> = pair.source.query("SELECT id, v FROM li ORDER BY id").await;
    let dst: Vec<(i32, String)> = pair
        .destination
        .query("SELECT id, v FROM li ORDER BY id")
        .await;
    assert_eq!(src.len(), 3);
    assert_eq!(src, dst);
    proxy.stop().await;
}

#[tokio::test]
async fn kill_uses_cutover_connection_ids() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut victim = proxy.conn().await;
    let victim_id = victim.id();
    let sleeper = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = victim.query_first("SELECT SLEEP(20)").await;
        r
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut killer = proxy.conn().await;
    killer
        .query_drop(format!("KILL QUERY {victim_id}"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("query was killed")
        .unwrap();
    // SLEEP() interrupted by KILL QUERY returns 1 (or the query is aborted)
    match got {
        Ok(v) => assert_eq!(v, Some(1)),
        Err(e) => assert_eq!(support::proxy::server_code(&e), 1317),
    }
    // an id cutover never handed out is not passed to the backend
    let e = killer.query_drop("KILL 999999").await.unwrap_err();
    assert_eq!(support::proxy::server_code(&e), 1094);
    proxy.stop().await;
}
