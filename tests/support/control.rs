//! Test support for the control plane: start a `ControlPlane` on
//! 127.0.0.1:0 in-process and talk HTTP/1.1 to it over a real TCP socket.
//!
//! The client is deliberately tiny (one request per connection,
//! `Connection: close`) so tests see exactly what goes over the wire.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover::config::Config;
use cutover::control::{ControlError, ControlPlane};
use cutover::pattern::{Pattern, PatternHandle};
use cutover::stats::DataPathStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A config with the two backend URLs, the state file and extra TOML lines.
pub fn config(source_url: &str, destination_url: &str, state_file: &Path, extra: &str) -> Config {
    let text = format!(
        "state_file = {:?}\nconnect_timeout_ms = 1000\n{extra}\n[source]\nurl = {source_url:?}\n[destination]\nurl = {destination_url:?}\n",
        state_file.display().to_string()
    );
    Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

/// A `mysql://` URL on a 127.0.0.1 port nothing listens on.
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("mysql://app:app@127.0.0.1:{port}/shop")
}

/// A running admin API.
pub struct Admin {
    pub addr: SocketAddr,
    /// The data path's handle, as `cutover serve` would create it.
    pub pattern: PatternHandle,
    pub stats: Arc<DataPathStats>,
    pub token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ControlError>>>,
}

impl Admin {
    /// Load from `cfg` and serve.
    pub async fn start(cfg: &Config) -> Admin {
        let (cp, pattern) = ControlPlane::load(cfg).expect("ControlPlane::load");
        Admin::serve(cp, pattern, cfg.admin_token.clone()).await
    }

    /// Serve an already loaded (and possibly customised) control plane.
    pub async fn serve(cp: ControlPlane, pattern: Pattern, token: Option<String>) -> Admin {
        Admin::serve_on(cp, PatternHandle::new(pattern), token).await
    }

    /// Load from `cfg` with the real validator plugged in (as `cutover serve` does).
    pub async fn start_with_validation(cfg: &Config) -> Admin {
        let (cp, pattern) = ControlPlane::load(cfg).expect("ControlPlane::load");
        let handle = PatternHandle::new(pattern);
        let v = cutover::validate::Validator::new(Arc::new(cfg.clone()), handle.clone())
            .expect("validator");
        Admin::serve_on(
            cp.with_validation(Arc::new(v)),
            handle,
            cfg.admin_token.clone(),
        )
        .await
    }

    pub async fn serve_on(cp: ControlPlane, handle: PatternHandle, token: Option<String>) -> Admin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = DataPathStats::new();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(
            cp.serve(listener, handle.clone(), stats.clone(), async move {
                let _ = rx.await;
            }),
        );
        Admin {
            addr,
            pattern: handle,
            stats,
            token,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Ask for shutdown and wait until `serve` returned.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("serve did not return within 10 s after shutdown");
            r.expect("serve task panicked")
                .expect("serve returned an error");
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, "", self.token.as_deref()).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.request("POST", path, body, self.token.as_deref())
            .await
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> Reply {
        request(self.addr, method, path, body, token).await
    }

    /// Poll `GET /status` until `done` holds (panics after `within`).
    pub async fn wait_status(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + within;
        loop {
            let status = self.get("/status").await.json();
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last /status:\n{status:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error` field of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Send one HTTP/1.1 request and read the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Reply {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connect to admin API");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("admin API did not answer within 30 s")
        .expect("read response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed HTTP response: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked")),
        "this tiny client does not decode chunked bodies"
    );
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}
