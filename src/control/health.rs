//! Is a backend answering?
//!
//! [`BackendProbe`] is the one seam to the data path. The default,
//! [`PingProbe`], calls the data path's `backend::ping` (log in with the
//! configured credentials, COM_PING, COM_QUIT), so "up" means cutover itself
//! can use the backend. [`TcpGreetingProbe`] only reads the server's initial
//! handshake packet; it needs no credentials but closes without logging in,
//! which MariaDB counts as an aborted connect (`Aborted_connects`, and toward
//! `max_connect_errors` for non-loopback clients).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::drift::{DriftMonitor, DriftReport};
use super::metrics;
use super::status::{BackendReachability, PoolHealth};
use crate::config::{BackendConfig, Config};
use crate::pattern::{Pattern, Side};

pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<Duration, String>> + Send + 'a>>;

/// Checks one backend; `Ok` carries the round-trip time.
pub trait BackendProbe: Send + Sync + 'static {
    fn probe(&self, side: Side) -> ProbeFuture<'_>;
}

/// Logs in and pings through the data path's `backend::ping`.
#[derive(Debug, Clone)]
pub struct PingProbe {
    source: BackendConfig,
    destination: BackendConfig,
    timeout: Duration,
}

impl PingProbe {
    pub fn new(cfg: &Config) -> Self {
        PingProbe {
            source: cfg.source.clone(),
            destination: cfg.destination.clone(),
            timeout: Duration::from_millis(cfg.limits.connect_timeout_ms),
        }
    }
}

impl BackendProbe for PingProbe {
    fn probe(&self, side: Side) -> ProbeFuture<'_> {
        let cfg = match side {
            Side::Source => &self.source,
            Side::Destination => &self.destination,
        };
        Box::pin(async move {
            crate::backend::ping(cfg, side, self.timeout)
                .await
                .map(|(rtt, _greeting)| rtt)
                .map_err(|e| e.to_string())
        })
    }
}

/// Connects to `host:port` and reads the MySQL initial handshake packet.
#[derive(Debug, Clone)]
pub struct TcpGreetingProbe {
    source: BackendConfig,
    destination: BackendConfig,
    timeout: Duration,
}

impl TcpGreetingProbe {
    pub fn new(cfg: &Config) -> Self {
        TcpGreetingProbe {
            source: cfg.source.clone(),
            destination: cfg.destination.clone(),
            timeout: Duration::from_millis(cfg.limits.connect_timeout_ms),
        }
    }

    fn backend(&self, side: Side) -> &BackendConfig {
        match side {
            Side::Source => &self.source,
            Side::Destination => &self.destination,
        }
    }
}

impl BackendProbe for TcpGreetingProbe {
    fn probe(&self, side: Side) -> ProbeFuture<'_> {
        let addr = self.backend(side).address();
        let timeout = self.timeout;
        Box::pin(async move {
            let started = Instant::now();
            match tokio::time::timeout(timeout, read_greeting(&addr)).await {
                Ok(Ok(())) => Ok(started.elapsed()),
                Ok(Err(e)) => Err(format!("{addr}: {e}")),
                Err(_) => Err(format!(
                    "{addr}: no greeting within {} ms",
                    timeout.as_millis()
                )),
            }
        })
    }
}

/// Largest greeting we read; a real one is about 100 bytes.
/// A drift check is reused for this long by health refreshes and `/status`.
pub const DRIFT_MAX_AGE: Duration = Duration::from_secs(10);

const MAX_GREETING: usize = 16 * 1024;

async fn read_greeting(addr: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    let mut header = [0u8; 4];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| format!("reading greeting header: {e}"))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    if len == 0 || len > MAX_GREETING {
        return Err(format!("greeting of {len} bytes: not a MySQL server"));
    }
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| format!("reading greeting: {e}"))?;
    classify_greeting(&payload)
}

/// Judge the first packet a server sends.
pub fn classify_greeting(payload: &[u8]) -> Result<(), String> {
    match payload.first() {
        Some(10) => Ok(()),
        Some(0xFF) => {
            let code = match payload.get(1..3) {
                Some([lo, hi]) => u16::from_le_bytes([*lo, *hi]),
                _ => 0,
            };
            let mut msg = payload.get(3..).unwrap_or_default();
            if msg.first() == Some(&b'#') && msg.len() >= 6 {
                msg = &msg[6..];
            }
            Err(format!(
                "server refused the connection: ERROR {code}: {}",
                String::from_utf8_lossy(msg)
            ))
        }
        Some(v) => Err(format!("protocol version {v}: not a MySQL server")),
        None => Err("empty greeting".into()),
    }
}

/// Probe results shared by `/status`, `/health`, moves and the metrics gauge.
///
/// Concurrent callers for the same side wait for one probe instead of each
/// opening a connection; a result younger than the caller's `max_age` is reused.
pub struct HealthMonitor {
    probe: Arc<dyn BackendProbe>,
    cache: [Mutex<Option<(Instant, BackendReachability)>>; 2],
    /// Server drift, checked with every health refresh (issue #19).
    drift: Option<Arc<DriftMonitor>>,
}

impl HealthMonitor {
    pub fn new(probe: Arc<dyn BackendProbe>) -> Self {
        HealthMonitor {
            probe,
            cache: [Mutex::new(None), Mutex::new(None)],
            drift: None,
        }
    }

    /// Also check server drift on every refresh.
    pub fn with_drift(mut self, drift: Option<Arc<DriftMonitor>>) -> Self {
        self.drift = drift;
        self
    }

    /// Check server drift if the last check is older than `max_age` (none
    /// without a drift monitor).
    pub async fn drift(&self, max_age: Duration) -> Option<DriftReport> {
        match &self.drift {
            Some(d) => Some(d.check(max_age).await),
            None => None,
        }
    }

    /// The last drift report without checking (the guard reads it under the
    /// scheduler's lock).
    pub fn drift_snapshot(&self) -> Option<DriftReport> {
        self.drift.as_ref().map(|d| d.snapshot())
    }

    pub async fn check(&self, side: Side, max_age: Duration) -> BackendReachability {
        let mut slot = self.cache[side.index()].lock().await;
        if let Some((at, health)) = slot.as_ref() {
            if at.elapsed() <= max_age {
                return health.clone();
            }
        }
        let health = match self.probe.probe(side).await {
            Ok(rtt) => BackendReachability {
                ok: true,
                error: None,
                latency_ms: Some(rtt.as_secs_f64() * 1000.0),
            },
            Err(e) => {
                tracing::warn!(backend = %side, error = %e, "backend probe failed");
                BackendReachability {
                    ok: false,
                    error: Some(e),
                    latency_ms: None,
                }
            }
        };
        metrics::set_backend_probe(
            side,
            health.ok,
            health
                .latency_ms
                .map(|ms| std::time::Duration::from_secs_f64(ms / 1000.0)),
        );
        *slot = Some((Instant::now(), health.clone()));
        health
    }

    /// Both backends, probed concurrently.
    pub async fn both(&self, max_age: Duration) -> PoolHealth {
        let (source, destination, _) = tokio::join!(
            self.check(Side::Source, max_age),
            self.check(Side::Destination, max_age),
            self.drift(max_age.max(DRIFT_MAX_AGE))
        );
        PoolHealth {
            source,
            destination,
        }
    }

    /// The backends `pattern` needs that do not answer, with their errors.
    pub async fn unavailable_for(
        &self,
        pattern: Pattern,
        max_age: Duration,
    ) -> Vec<(Side, String)> {
        let mut failed = Vec::new();
        for side in [Side::Source, Side::Destination] {
            if !pattern.uses(side) {
                continue;
            }
            let h = self.check(side, max_age).await;
            if !h.ok {
                failed.push((side, h.error.unwrap_or_else(|| "unreachable".into())));
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_classification() {
        assert!(classify_greeting(&[10, b'1', 0]).is_ok());
        let mut err = vec![0xFF, 0x10, 0x04];
        err.extend_from_slice(b"Too many connections");
        let e = classify_greeting(&err).unwrap_err();
        assert!(e.contains("ERROR 1040: Too many connections"), "{e}");
        assert!(classify_greeting(&[9])
            .unwrap_err()
            .contains("not a MySQL server"));
        assert!(classify_greeting(&[]).is_err());
    }
}
