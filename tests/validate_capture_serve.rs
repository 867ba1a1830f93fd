//! `cutover serve` with `change_capture = "binlog"`, killed (SIGKILL) in the
//! middle and restarted: writes made directly on the source before, around
//! and during the outage are all reported once, and `/status` and
//! `/metrics` show the capture.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::control::request;
use support::{free_port, Pair};

const SCHEMA: &str = "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));\n\
    INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_200;";

struct Serve {
    child: Child,
    admin: SocketAddr,
}

impl Serve {
    fn spawn(config: &Path, admin: SocketAddr) -> Serve {
        let child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["serve", "--config"])
            .arg(config)
            .env("CUTOVER_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn cutover serve");
        Serve { child, admin }
    }

    async fn get(&self, path: &str) -> Option<support::control::Reply> {
        tokio::net::TcpStream::connect(self.admin).await.ok()?;
        Some(request(self.admin, "GET", path, "", None).await)
    }

    /// (table, pk, kind) of the open events, and how many events there are
    /// in all (`None` while the admin API is not up).
    async fn open_events(&self) -> Option<(BTreeSet<String>, usize)> {
        let reply = self.get("/inconsistencies?limit=1000").await?;
        let all = reply.json();
        let all = all
            .as_array()
            .unwrap_or_else(|| panic!("{} {}", reply.status, reply.body));
        let open = all
            .iter()
            .filter(|e| e["status"] == "open")
            .map(|e| format!("{} {} {}", e["table"], e["pk"], e["kind"]))
            .collect();
        Some((open, all.len()))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn until<T>(secs: u64, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn serve_killed_mid_capture_resumes_without_missing_or_repeating() {
    let pair = Pair::start_binlog().await;
    tokio::join!(pair.source.exec(SCHEMA), pair.destination.exec(SCHEMA));
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\nadmin_listen = \"{admin}\"\ninitial_pattern = \"src_first\"\n\
             state_file = \"{}\"\n[source]\nurl = \"{}\"\n[destination]\nurl = \"{}\"\n\
             [validation]\nchange_capture = \"binlog\"\ncapture_settle_ms = 300\nrecheck_delay_ms = 100\n",
            free_port(),
            dir.path().join("state.json").display(),
            pair.source.url("shop"),
            pair.destination.url("shop"),
        ),
    )
    .unwrap();

    let mut serve = Serve::spawn(&config, admin);
    until(30, "capture running", async || {
        let s = serve.get("/status").await?.json();
        (s["validation_detail"]["change_capture"]["state"] == "running").then_some(())
    })
    .await;
    pair.source
        .exec("UPDATE t SET v = 'a' WHERE id = 1; DELETE FROM t WHERE id = 2;")
        .await;
    let a = set(&[
        "\"t\" {\"id\":1} \"neq\"",
        "\"t\" {\"id\":2} \"base_missing\"",
    ]);
    until(20, "first changes reported", async || {
        (serve.open_events().await?.0 == a).then_some(())
    })
    .await;

    let status = serve.get("/status").await.unwrap().json();
    let cc = &status["validation_detail"]["change_capture"];
    for field in [
        "lag_seconds",
        "queue_depth",
        "keys_reverified_per_second",
        "keys_reverified_total",
    ] {
        assert!(cc[field].is_number(), "{field}: {cc}");
    }
    assert_eq!(cc["side"], "source", "{cc}");
    assert_eq!(cc["resume_by"], "gtid", "{cc}");
    let metrics = serve.get("/metrics").await.unwrap().body;
    for m in [
        "cutover_capture_keys_reverified_total",
        "cutover_capture_queue_depth",
        "cutover_capture_lag_seconds",
        "cutover_capture_lag_events",
    ] {
        assert!(metrics.contains(m), "{m} missing from /metrics");
    }

    // Changed just before the crash (likely still settling), and while down.
    pair.source
        .exec("INSERT INTO t VALUES (300, 'new'); UPDATE t SET v = 'b' WHERE id = 3;")
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    serve.kill();
    pair.source
        .exec("DELETE FROM t WHERE id = 4; UPDATE t SET v = 'c' WHERE id = 1;")
        .await;

    let serve = Serve::spawn(&config, admin);
    let all = set(&[
        "\"t\" {\"id\":1} \"neq\"",
        "\"t\" {\"id\":2} \"base_missing\"",
        "\"t\" {\"id\":300} \"target_missing\"",
        "\"t\" {\"id\":3} \"neq\"",
        "\"t\" {\"id\":4} \"base_missing\"",
    ]);
    until(
        30,
        "changes around and during the outage reported",
        async || (serve.open_events().await?.0 == all).then_some(()),
    )
    .await;
    // Nothing is reported twice, now or later.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (open, total) = serve.open_events().await.unwrap();
    assert_eq!((open, total), (all.clone(), all.len()));
}

#[tokio::test]
async fn serve_refuses_to_start_capture_without_a_binlog() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cutover.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\nstate_file = \"{}\"\n\
             [source]\nurl = \"{}\"\n[destination]\nurl = \"{}\"\n[validation]\nchange_capture = \"binlog\"\n",
            free_port(),
            free_port(),
            dir.path().join("state.json").display(),
            pair.source.url("shop"),
            pair.destination.url("shop"),
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("change_capture = \"binlog\"") && stderr.contains("log_bin is OFF"),
        "{stderr}"
    );
}
