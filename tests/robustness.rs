//! Bad input, limits, failures and shutdown: clear MySQL errors, no panics,
//! no hangs, bounded memory.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use cutover::pattern::Pattern;
use cutover::wire::PacketIo;
use mysql_async::prelude::*;
use mysql_common::scramble::scramble_native;
use support::proxy::raw::{self, command, err_code};
use support::proxy::{config_text, server_code, TestProxy};
use support::Pair;
use tokio::net::TcpStream;

async fn raw_login(port: u16, plugin: &str, password: &str) -> (PacketIo, Vec<u8>) {
    raw::login(port, raw::default_caps(), plugin, password).await
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_1045() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcOnly).await;
    for (user, pass) in [("app", "wrong"), ("nobody", "app"), ("app", "")] {
        let opts = proxy.opts().user(Some(user)).pass(Some(pass));
        let e = mysql_async::Conn::new(opts).await.unwrap_err();
        assert_eq!(server_code(&e), 1045, "{user}/{pass}");
        match e {
            mysql_async::Error::Server(s) => assert_eq!(s.state, "28000"),
            _ => unreachable!(),
        }
    }
    proxy.stop().await;
}

#[tokio::test]
async fn caching_sha2_clients_are_switched_to_native_password() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcOnly).await;
    let (mut io, reply) = raw_login(proxy.port, "caching_sha2_password", "app").await;
    assert_eq!(reply[0], 0xFE, "auth switch request expected");
    assert!(reply.starts_with(b"\xFEmysql_native_password\0"));
    let nonce = &reply[23..43];
    let answer = scramble_native(nonce, b"app").unwrap();
    io.send_packet(3, &answer).await.unwrap();
    let ok = io.expect_frame().await.unwrap();
    assert_eq!(ok.payload()[0], 0x00, "{:?}", ok.payload());
    // and a switched client with the wrong password is refused
    let (mut io, reply) = raw_login(proxy.port, "caching_sha2_password", "x").await;
    io.send_packet(3, &scramble_native(&reply[23..43], b"x").unwrap())
        .await
        .unwrap();
    assert_eq!(err_code(io.expect_frame().await.unwrap().payload()), 1045);
    proxy.stop().await;
}

#[tokio::test]
async fn unknown_statements_and_commands_get_errors_not_disconnects() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let (mut io, reply) = raw_login(proxy.port, "mysql_native_password", "app").await;
    assert_eq!(reply[0], 0x00);
    let mut exec = vec![0x17];
    exec.extend_from_slice(&999u32.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0, 0, 0]);
    assert_eq!(err_code(&command(&mut io, &exec).await), 1243);
    assert_eq!(err_code(&command(&mut io, &[0x17, 1]).await), 1210);
    assert_eq!(err_code(&command(&mut io, &[0x1A, 9, 0, 0, 0]).await), 1243);
    for unknown in [0x00u8, 0x05, 0x0C, 0x1D, 0x1E, 0x20, 0xFA, 0xFF] {
        assert_eq!(
            err_code(&command(&mut io, &[unknown]).await),
            1047,
            "command {unknown:#x}"
        );
    }
    // SEND_LONG_DATA and STMT_CLOSE for unknown ids have no response by protocol.
    io.send_packet(0, &[0x19, 7, 0, 0, 0]).await.unwrap();
    io.send_packet(0, &[0x18, 7, 0, 0, 0, 0, 0, b'x'])
        .await
        .unwrap();
    // still alive
    assert_eq!(command(&mut io, &[0x0E]).await[0], 0x00);
    proxy.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_packets_close_only_that_connection() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start_with(&pair, Pattern::SrcOnly, "max_allowed_packet = 4096").await;
    let (mut io, _) = raw_login(proxy.port, "mysql_native_password", "app").await;
    let mut big = vec![0x03];
    big.extend_from_slice(format!("SELECT '{}'", "x".repeat(5000)).as_bytes());
    io.send_packet(0, &big).await.unwrap();
    assert_eq!(err_code(io.expect_frame().await.unwrap().payload()), 1153);
    assert!(
        io.read_frame().await.map(|f| f.is_none()).unwrap_or(true),
        "connection must close"
    );
    // garbage instead of a handshake response
    let mut io = PacketIo::new(TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap());
    let _greeting = io.expect_frame().await.unwrap();
    io.send_packet(1, &[0xFF; 40]).await.unwrap();
    let _ = io.read_frame().await; // ERR or close; must not hang
                                   // a header announcing more bytes than ever arrive, then close
    let mut io = PacketIo::new(TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap());
    let _greeting = io.expect_frame().await.unwrap();
    drop(io);
    // the proxy still serves others
    let mut c = proxy.conn().await;
    let one: i64 = c.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn connection_limit_answers_1040() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start_with(&pair, Pattern::SrcOnly, "max_connections = 3").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(proxy.conn().await);
    }
    let e = mysql_async::Conn::new(proxy.opts()).await.unwrap_err();
    assert_eq!(server_code(&e), 1040);
    assert_eq!(proxy.stats().connections_refused, 1);
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.conn().await.ping().await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_clients() {
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE c (id INT PRIMARY KEY, n INT)";
    pair.source.exec(ddl).await;
    pair.destination.exec(ddl).await;
    let proxy = TestProxy::start(&pair, Pattern::SrcFirst).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let opts = proxy.opts();
        tasks.push(tokio::spawn(async move {
            let mut c = mysql_async::Conn::new(opts).await.unwrap();
            c.query_drop(format!("INSERT INTO c VALUES ({i}, 0)"))
                .await
                .unwrap();
            for _ in 0..5 {
                c.query_drop(format!("UPDATE c SET n = n + 1 WHERE id = {i}"))
                    .await
                    .unwrap();
                let n: i64 = c
                    .query_first(format!("SELECT n FROM c WHERE id = {i}"))
                    .await
                    .unwrap()
                    .unwrap();
                assert!(n > 0);
            }
            c.disconnect().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sum = |v: Vec<(i64, Option<String>)>| v;
    let src = sum(pair
        .source
        .query("SELECT COUNT(*), CAST(SUM(n) AS CHAR) FROM c")
        .await);
    let dst = sum(pair
        .destination
        .query("SELECT COUNT(*), CAST(SUM(n) AS CHAR) FROM c")
        .await);
    assert_eq!(src, vec![(200, Some("1000".into()))]);
    assert_eq!(src, dst);
    assert_eq!(proxy.stats().double_write_failure, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn unreachable_backend_gives_an_error_naming_it_not_a_hang() {
    let pair = Pair::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = config_text(&pair, Pattern::DstOnly, "").replace(
        &format!(":{}/", pair.destination.port),
        &format!(":{closed}/"),
    );
    let proxy = TestProxy::from_config(cutover::config::Config::parse(&text).unwrap()).await;
    let started = Instant::now();
    let e = mysql_async::Conn::new(proxy.opts()).await.unwrap_err();
    // a server-range code (issue 10: 2003 is a client-side code libmariadb rejects)
    assert_eq!(
        server_code(&e),
        cutover::codes::ER_CONNECT_TO_FOREIGN_DATA_SOURCE.code
    );
    assert!(e.to_string().contains("destination"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // switching back to the source makes it usable again
    proxy.set_pattern(Pattern::SrcOnly);
    proxy.conn().await.ping().await.unwrap();
    proxy.stop().await;
}

fn rss_hwm_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[allow(clippy::zombie_processes)] // the caller waits for (or kills and reaps) the child
async fn spawn_binary(config: &str, dir: &std::path::Path) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.join("cutover.toml");
    // listen on the chosen port; admin API on any free port; state in `dir`
    let config = config.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
        1,
    );
    let state = dir.join("state.json");
    let config = format!(
        "admin_listen = \"127.0.0.1:0\"\nstate_file = \"{}\"\n{config}",
        state.display()
    );
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("CUTOVER_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return (child, port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // do not leave the process behind
    let _ = child.kill();
    let _ = child.wait();
    panic!("cutover did not start listening");
}

fn opts(port: u16) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(Some("shop"))
        .prefer_socket(false)
}

#[tokio::test]
async fn two_million_row_select_streams_with_bounded_memory() {
    let pair = Pair::start().await;
    pair.source
        .exec("CREATE TABLE big (id INT PRIMARY KEY, pad CHAR(100))")
        .await;
    pair.source
        .exec("INSERT INTO big SELECT seq, REPEAT('p', 100) FROM seq_1_to_2000000")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) =
        spawn_binary(&config_text(&pair, Pattern::SrcOnly, ""), dir.path()).await;
    let mut c = mysql_async::Conn::new(opts(port)).await.unwrap();
    let before = rss_hwm_kb(child.id());
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let mut r = c.query_iter("SELECT id, pad FROM big").await.unwrap();
    while let Some(row) = r.next().await.unwrap() {
        let (_, pad): (i32, String) = mysql_async::from_row(row);
        rows += 1;
        bytes += pad.len() as u64;
    }
    drop(r);
    let after = rss_hwm_kb(child.id());
    eprintln!(
        "2M rows ({} MB): proxy peak RSS {before} kB before, {after} kB after",
        bytes >> 20
    );
    assert_eq!(rows, 2_000_000);
    assert!(
        after < 64 * 1024,
        "peak RSS {after} kB while streaming ~200 MB"
    );
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} kB to {after} kB"
    );
    drop(c);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn sigterm_lets_in_flight_statements_finish_then_exits() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_binary(
        &config_text(&pair, Pattern::SrcOnly, "shutdown_timeout_ms = 5000"),
        dir.path(),
    )
    .await;
    let mut c = mysql_async::Conn::new(opts(port)).await.unwrap();
    let slow = tokio::spawn(async move {
        let v: Option<i64> = c.query_first("SELECT SLEEP(1)").await.unwrap();
        v
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let got = slow.await.unwrap();
    assert_eq!(got, Some(0), "in-flight statement completed");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // new connections are refused once draining started
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
}

#[test]
fn invalid_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run = |body: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, body).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("[source]\nurl = \"mysql://a:b@h:1/db\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("destination.url"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let (code, err) = run("initial_pattern = \"sideways\"\n[source]\nurl = \"mysql://a:b@h:1/db\"\n[destination]\nurl = \"mysql://a:b@h:2/db\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("initial_pattern"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["serve", "--config", "/nonexistent/cutover.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cutover.toml"));
}
