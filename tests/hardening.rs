//! Issue 16: bounded work before login, and what a reliability run found on
//! both ports — each finding as a regression test against real MariaDB
//! servers and the real binary where memory or start-up is the subject.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cutover::pattern::Pattern;
use cutover::wire::PacketIo;
use mysql_async::prelude::*;
use support::proxy::raw::{self, err_code, login_as};
use support::proxy::{config_text, server_code, TestProxy};
use support::{free_port, Pair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous bound for what must happen (liveness, not timing).
const LIVE: Duration = Duration::from_secs(10);

/// Whether the server closed `s` (EOF or reset) within `wait`; bytes it
/// sends first (an ERR) are read and dropped.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn idle_sockets_cannot_keep_clients_out_beyond_the_handshake_timeout() {
    let pair = Pair::start().await;
    let extra = "max_connections = 16\nhandshake_timeout_ms = 1000";
    let proxy = TestProxy::start_with(&pair, Pattern::SrcOnly, extra).await;
    // Every slot taken by a socket that never says anything.
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap());
    }
    let started = Instant::now();
    let mut c = loop {
        match mysql_async::Conn::new(proxy.opts()).await {
            Ok(c) => break c,
            Err(e) => {
                assert_eq!(server_code(&e), 1040, "{e}");
                assert!(started.elapsed() < LIVE, "never got in");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(
        started.elapsed() < Duration::from_millis(1000) + Duration::from_secs(4),
        "a real client got in only after {:?}",
        started.elapsed()
    );
    c.query_drop("DO 1").await.unwrap();
    for s in &mut idle {
        assert!(closed_within(s, LIVE).await, "idle socket left open");
    }
    // Only half of the slots may be unauthenticated (the default share):
    // the rest were refused at once; those let in were timed out.
    let timeouts = proxy.stats.snapshot().handshake_timeouts;
    assert_eq!(timeouts, 8, "max_unauthenticated_connections = 16 / 2");
    proxy.stop().await;
}

#[tokio::test]
async fn authenticated_clients_keep_their_room_while_idle_sockets_pile_up() {
    let pair = Pair::start().await;
    let extra =
        "max_connections = 6\nmax_unauthenticated_connections = 2\nhandshake_timeout_ms = 60000";
    let proxy = TestProxy::start_with(&pair, Pattern::SrcOnly, extra).await;
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap());
    }
    // The flood is held to 2 slots; once those time out (here: never
    // within the test) new logins would be let in again. What the issue
    // asks: the flood cannot take the other 4.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.stats().connections_refused, 8);
    assert_eq!(proxy.stats().client_connections, 2);
    drop(idle);
    let mut held = Vec::new();
    let deadline = Instant::now() + LIVE;
    while held.len() < 4 {
        match mysql_async::Conn::new(proxy.opts()).await {
            Ok(c) => held.push(c),
            Err(_) => {
                assert!(Instant::now() < deadline, "room for 4 logged-in clients");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    proxy.stop().await;
}

/// `cutover serve` on free ports with `extra` keys, state under `dir`.
fn spawn_binary(pair: &Pair, dir: &Path, extra: &str, args: &[&str]) -> (Child, u16, u16) {
    let (port, admin) = (free_port(), free_port());
    let text = config_text(pair, Pattern::SrcOnly, extra).replacen(
        "listen = \"127.0.0.1:0\"",
        &format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nstate_file = \"{}\"",
            dir.join("state.json").display()
        ),
        1,
    );
    let path = dir.join("cutover.toml");
    std::fs::write(&path, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["serve", "--config"])
        .arg(&path)
        .args(args)
        .env("CUTOVER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, port, admin)
}

async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "cutover did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn packets_before_login_are_bounded_from_their_header() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port, _) = spawn_binary(&pair, dir.path(), "", &[]);
    wait_listening(port).await;
    let before = rss_kb(child.id(), "VmRSS:");
    let mut tasks = Vec::new();
    for _ in 0..30 {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let mut greeting = [0u8; 4];
            s.read_exact(&mut greeting).await.unwrap();
            let len = u32::from_le_bytes([greeting[0], greeting[1], greeting[2], 0]) as usize;
            let mut rest = vec![0u8; len];
            s.read_exact(&mut rest).await.unwrap();
            // A handshake response claiming 15 MB, then the bytes.
            let claimed: u32 = 15 << 20;
            let mut header = claimed.to_le_bytes();
            header[3] = 1;
            let _ = s.write_all(&header).await;
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..15 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(LIVE, s.read_to_end(&mut answer)).await;
            answer
        }));
    }
    let mut refused = 0;
    for t in tasks {
        let answer = t.await.unwrap();
        if answer.len() > 7 && answer[4] == 0xFF {
            assert_eq!(
                u16::from_le_bytes([answer[5], answer[6]]),
                1043,
                "Bad handshake"
            );
            refused += 1;
        }
    }
    let peak = rss_kb(child.id(), "VmHWM:");
    eprintln!("30 × 15 MB pre-auth packets: RSS {before} kB before, peak {peak} kB");
    assert!(refused > 0, "the ERR reaches clients that still read");
    assert!(peak < 100 * 1024, "peak RSS {peak} kB");
    // Still serving.
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("app"))
        .prefer_socket(false);
    mysql_async::Conn::new(opts)
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_70_mb_query_gets_1153_and_the_connection_closes() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcOnly).await;
    let mut l = login_as(proxy.port, raw::default_caps(), 0, "app", "app").await;
    assert_eq!(l.reply[0], 0);
    let mut q = vec![0x03];
    q.extend_from_slice(b"SELECT '");
    q.resize(70 << 20, b'x');
    q.push(b'\'');
    // The proxy stops reading once the limit is passed (the rest of the
    // write may fail); its ERR is already on the way.
    let _ = l.io.send_packet(0, &q).await;
    let p = tokio::time::timeout(LIVE, l.io.expect_frame())
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(err_code(p.payload()), 1153);
    let end = tokio::time::timeout(LIVE, l.io.read_frame()).await;
    assert!(
        matches!(end, Ok(Ok(None)) | Ok(Err(_))),
        "the connection closes"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn failed_logins_are_answered_later_and_later_but_a_right_one_at_once() {
    let pair = Pair::start().await;
    let extra = "failed_login_threshold = 2\nfailed_login_delay_min_ms = 400\nfailed_login_delay_max_ms = 1200";
    let proxy = TestProxy::start_with(&pair, Pattern::SrcOnly, extra).await;
    let mut delays = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        let e = mysql_async::Conn::new(proxy.opts().pass(Some("wrong")))
            .await
            .unwrap_err();
        assert_eq!(server_code(&e), 1045);
        delays.push(started.elapsed());
    }
    eprintln!("failed login answer times: {delays:?}");
    // Past the threshold each failure waits at least min × (failures − threshold), capped.
    for (i, floor_ms) in [(2, 400), (3, 800), (4, 1200), (5, 1200)] {
        assert!(
            delays[i] >= Duration::from_millis(floor_ms),
            "failure {} answered after {:?}",
            i + 1,
            delays[i]
        );
    }
    assert!(delays[5] < Duration::from_millis(1200) + LIVE, "capped");
    let started = Instant::now();
    let mut ok = proxy.conn().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1200),
        "a right password is not throttled (took {took:?})"
    );
    ok.query_drop("DO 1").await.unwrap();
    let s = proxy.stats.snapshot();
    assert_eq!((s.login_failures, s.login_delays), (6, 4));
    proxy.stop().await;
}

#[tokio::test]
async fn packets_out_of_order_get_1156_and_close() {
    let pair = Pair::start().await;
    let proxy = TestProxy::start(&pair, Pattern::SrcOnly).await;
    // A handshake response with sequence id 2 instead of 1.
    let mut io = PacketIo::new(TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap());
    let _greeting = io.expect_frame().await.unwrap();
    io.send_packet(2, &[0u8; 40]).await.unwrap();
    assert_eq!(err_code(io.expect_frame().await.unwrap().payload()), 1156);
    assert!(
        io.read_frame().await.map(|f| f.is_none()).unwrap_or(true),
        "closed"
    );
    // A command with sequence id 3 instead of 0.
    let mut l = login_as(proxy.port, raw::default_caps(), 0, "app", "app").await;
    assert_eq!(l.reply[0], 0);
    l.io.send_packet(3, b"\x03SELECT 1").await.unwrap();
    let p = raw::next(&mut l.io).await;
    assert_eq!(err_code(&p), 1156);
    assert!(
        l.io.read_frame().await.map(|f| f.is_none()).unwrap_or(true),
        "closed"
    );
    // The proxy serves others.
    proxy.conn().await.ping().await.unwrap();
    proxy.stop().await;
}

#[tokio::test]
async fn a_deleted_state_file_is_refused_when_data_dir_shows_the_migration_moved_on() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port, admin) = spawn_binary(&pair, dir.path(), "", &[]);
    wait_listening(port).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], admin));
    for step in ["/src_only", "/src_first"] {
        let r = support::control::request(addr, "POST", step, "", None).await;
        assert_eq!(r.status, 200, "{step}: {}", r.body);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let state = dir.path().join("state.json");
    std::fs::remove_file(&state).unwrap();
    // Refused, naming the file and what data_dir shows.
    let (child, _, _) = spawn_binary(&pair, dir.path(), "", &[]);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started over silently: {err}");
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert!(
        err.contains("src_first") && err.contains("--init-state"),
        "{err}"
    );
    // --init-state starts over deliberately.
    let (mut child, port, _) = spawn_binary(&pair, dir.path(), "", &["--init-state"]);
    wait_listening(port).await;
    assert!(state.exists(), "a fresh state was written");
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn the_admin_api_refuses_oversized_requests_and_times_out_a_short_body() {
    let dir = tempfile::tempdir().unwrap();
    let url = support::control::closed_port_url();
    let cfg = support::control::config(&url, &url, &dir.path().join("state.json"), "");
    let admin = support::control::Admin::start(&cfg).await;
    let send = |raw: Vec<u8>| async move {
        let mut s = TcpStream::connect(admin.addr).await.unwrap();
        let _ = s.write_all(&raw).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(LIVE, s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        text.split(' ').nth(1).unwrap_or("none").to_string()
    };
    let host = format!("Host: {}\r\nConnection: close\r\n", admin.addr);
    // 413: a body over 64 KiB.
    let body = "x".repeat(70 * 1024);
    let req = format!(
        "POST /full/start HTTP/1.1\r\n{host}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(send(req.into_bytes()).await, "413");
    // 414: a URI longer than the server reads.
    let req = format!("GET /status?{} HTTP/1.1\r\n{host}\r\n", "a".repeat(70_000));
    assert_eq!(send(req.into_bytes()).await, "414");
    // 431: header fields larger than the server reads.
    let req = format!(
        "GET /status HTTP/1.1\r\n{host}X-Big: {}\r\n\r\n",
        "b".repeat(500_000)
    );
    assert_eq!(send(req.into_bytes()).await, "431");
    // 408, promptly: Content-Length larger than the body that arrives.
    let req = format!("POST /full/start HTTP/1.1\r\n{host}Content-Length: 100\r\n\r\n{{}}");
    let started = Instant::now();
    assert_eq!(send(req.into_bytes()).await, "408");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    admin.stop().await;
}
