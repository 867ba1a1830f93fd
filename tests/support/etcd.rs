//! Throw-away etcd servers (Debian's etcd-server 3.4, installed by
//! scripts/test), one member each, on free 127.0.0.1 ports, under the same
//! supervisor as MariaDB (it dies with the test process). `kill` (SIGKILL)
//! and `restart` (same data dir and ports: the keys and leases survive) are
//! how tests take the coordinator away.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{free_port, SUPERVISOR};

pub const ETCD: &str = "/usr/bin/etcd";
const NOT_INSTALLED: &str = "etcd not installed: run scripts/test (it installs etcd-server)";

/// One running (or killed) etcd member.
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<(Child, ChildStdin)>,
}

impl Etcd {
    /// A fresh single-member cluster, ready (its `/health` says so).
    pub async fn start() -> Etcd {
        assert!(Path::new(ETCD).exists(), "{NOT_INSTALLED}");
        let dir = tempfile::Builder::new()
            .prefix("etcd-")
            .tempdir()
            .expect("tempdir");
        let mut e = Etcd {
            client_port: 0,
            peer_port: 0,
            dir,
            child: None,
        };
        for attempt in 1..=3 {
            e.client_port = free_port();
            e.peer_port = free_port();
            match e.spawn_and_wait().await {
                Ok(()) => return e,
                Err(log) if attempt < 3 && log.contains("address already in use") => {
                    let _ = fs::remove_dir_all(e.dir.path().join("data"));
                    continue;
                }
                Err(log) => panic!("{log}"),
            }
        }
        unreachable!()
    }

    /// `http://127.0.0.1:PORT` (the `[coordination] endpoints` entry).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// SIGKILL (like a crash) and reap. No-op when not running.
    pub fn kill(&mut self) {
        if let Some((mut child, mut stdin)) = self.child.take() {
            let _ = stdin.write_all(b"keep\n");
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// Start again on the same data dir and ports.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn_and_wait().await {
            panic!("{log}");
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("etcd.log"))
            .unwrap();
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", SUPERVISOR, "sh"])
            .arg(d)
            .arg(ETCD)
            .args(["--name", "n1"])
            .arg(format!("--data-dir={}", d.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=n1={peer}"))
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {ETCD}: {e}"));
        let stdin = child.stdin.take().unwrap();
        self.child = Some((child, stdin));
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.healthy().await {
                return Ok(());
            }
            let exited = match &mut self.child {
                Some((c, _)) => c.try_wait().ok().flatten(),
                None => None,
            };
            if exited.is_some() || Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "etcd on port {} did not become healthy ({exited:?}); log tail:\n{}",
                    self.client_port,
                    self.log_tail(30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /health` answers `"health":"true"`.
    async fn healthy(&self) -> bool {
        let Ok(Ok(mut s)) = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(("127.0.0.1", self.client_port)),
        )
        .await
        else {
            return false;
        };
        let req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).await.is_err() {
            return false;
        }
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).contains("\"health\":\"true\"")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
