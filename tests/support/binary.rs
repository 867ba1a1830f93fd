//! Runs the real `cutover serve` binary (as an operator would) against a
//! MariaDB pair, on free 127.0.0.1 ports, and talks to its admin API.
//!
//! `support::binary`: needs `mod support;` in the test file.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::control::{request, Reply};
use crate::support::Pair;

pub use crate::support::free_port;

/// A running `cutover serve`.
pub struct Cutover {
    child: Option<Child>,
    /// The MySQL listener port.
    pub port: u16,
    pub admin: SocketAddr,
    pub token: Option<String>,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl Cutover {
    /// Start with the pair's URLs, `extra` top-level TOML keys and extra
    /// environment; waits until `GET /health` answers 200.
    pub async fn start(pair: &Pair, extra: &str, env: &[(&str, &str)]) -> Cutover {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let config = format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n\
             state_file = \"{}\"\nconnect_timeout_ms = 1000\n{extra}\n\
             [source]\nurl = \"{}\"\n[destination]\nurl = \"{}\"\n",
            dir.path().join("state.json").display(),
            pair.source.url("shop"),
            pair.destination.url("shop"),
        );
        let path = dir.path().join("cutover.toml");
        std::fs::write(&path, config).unwrap();
        let token = extract_token(extra).or_else(|| {
            env.iter()
                .find(|(k, _)| *k == "CUTOVER_ADMIN_TOKEN")
                .map(|(_, v)| v.to_string())
        });
        let log = dir.path().join("cutover.log");
        let child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("CUTOVER_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn cutover");
        let mut c = Cutover {
            child: Some(child),
            port,
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            token,
            dir,
            log,
        };
        c.wait_ready().await;
        c
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("cutover exited with {status}:\n{}", self.log_text());
            }
            if tokio::net::TcpStream::connect(self.admin).await.is_ok()
                && self.get("/health").await.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cutover not healthy within 30 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    pub async fn get(&self, path: &str) -> Reply {
        request(self.admin, "GET", path, "", self.token.as_deref()).await
    }

    pub async fn post(&self, path: &str) -> Reply {
        request(self.admin, "POST", path, "", self.token.as_deref()).await
    }

    /// POST with a JSON body.
    pub async fn post_json(&self, path: &str, body: &str) -> Reply {
        request(self.admin, "POST", path, body, self.token.as_deref()).await
    }

    /// SIGTERM and wait for the exit (10 s liveness bound); returns the exit code.
    pub async fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("cutover did not exit within 10 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cutover {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn extract_token(toml: &str) -> Option<String> {
    toml.lines()
        .filter_map(|l| l.trim().strip_prefix("admin_token"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
}

/// The repository root (for the committed files under `deploy/`).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Where tests keep artefacts for people to look at (`target/…`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_path("target"))
}
