//! What every session shares: configuration, the pattern handle, counters,
//! the identity shown to clients (learned from both backends' greetings),
//! the KILL registry, the per-backend connect back-off, login throttling
//! and the pass-through account directory.

#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use mysql_common::constants::MariadbCapabilities;

use crate::backend::Greeting;
use crate::catalog::Catalog;
use crate::config::{BackendConfig, Config};
use crate::pattern::{PatternHandle, Side};
use crate::session::handshake::{offered_capabilities, ServerIdentity};
use crate::session::passthrough::Directory;
use crate::session::throttle::LoginThrottle;
use crate::stats::DataPathStats;
use crate::tls::server::ServerTls;

/// State shared by the listener and every client session (one per process).
pub struct Shared {
    /// The configuration the process started with.
    pub config: Arc<Config>,
    /// The current pattern and drain gate (written by the control plane).
    pub pattern: PatternHandle,
    /// Counters the control plane reads.
    pub stats: Arc<DataPathStats>,
    identity: ArcSwap<ServerIdentity>,
    /// The last greeting of each backend (index = [`Side::index`]).
    greetings: Mutex<[Option<Greeting>; 2]>,
    /// `[tls]`: the acceptor for clients' SSLRequests, if configured.
    pub tls: Option<Arc<ServerTls>>,
    /// Connect back-off per side (index = [`Side::index`]).
    pub backoff: [ConnectBackoff; 2],
    /// Client connection id → its user and backend thread ids (for KILL).
    pub sessions: SessionRegistry,
    /// Consecutive failed logins per client address.
    pub throttle: LoginThrottle,
    directory: OnceLock<Directory>,
    /// Stored functions and triggers (what statement text does not show).
    pub catalog: Arc<Catalog>,
    next_conn_id: AtomicU32,
}

impl Shared {
    /// The state for a process serving `config`; the greeting identity starts
    /// as a MariaDB 10.11 placeholder until a backend's greeting is learned.
    pub fn new(config: Arc<Config>, pattern: PatternHandle, stats: Arc<DataPathStats>) -> Self {
        Shared {
            pattern,
            stats,
            identity: ArcSwap::from_pointee(ServerIdentity {
                version: "5.5.5-10.11.0-MariaDB-cutover".into(),
                capabilities: offered_capabilities(),
                mariadb: MariadbCapabilities::empty(),
                collation: 45,
            }),
            greetings: Mutex::new([None, None]),
            tls: None,
            backoff: [ConnectBackoff::default(), ConnectBackoff::default()],
            sessions: SessionRegistry::default(),
            throttle: LoginThrottle::new(&config.limits),
            directory: OnceLock::new(),
            catalog: Arc::new(Catalog::default()),
            next_conn_id: AtomicU32::new(1),
            config,
        }
    }

    /// The pass-through account directory (`auth = "passthrough"`), opened
    /// on first use.
    pub fn passthrough(&self) -> &Directory {
        self.directory.get_or_init(|| {
            Directory::new(
                &self.config.source,
                &self.config.destination,
                self.connect_timeout(),
            )
        })
    }

    /// The configured connection settings of `side`.
    pub fn backend_config(&self, side: Side) -> &BackendConfig {
        match side {
            Side::Source => &self.config.source,
            Side::Destination => &self.config.destination,
        }
    }

    /// A fresh connection id for a client greeting (1, 2, …; wraps at 2^32).
    pub fn next_conn_id(&self) -> u32 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// What the next greeting announces (version, capabilities, collation).
    pub fn identity(&self) -> Arc<ServerIdentity> {
        self.identity.load_full()
    }

    /// Remember `side`'s greeting and recompute what client greetings
    /// announce ([`crate::greeting::for_clients`]): the authoritative
    /// backend's version string (the source's until the authoritative one is
    /// known), what the relay keeps faithful on both backends
    /// ([`capabilities::offer`]: relayed packets are in the backend's wire
    /// format, so client and backends must agree), a collation both know.
    pub fn learn_greeting(&self, side: Side, g: &Greeting) {
        let mut known = self.greetings.lock().unwrap_or_else(|e| e.into_inner());
        if known[side.index()].as_ref() == Some(g) {
            return;
        }
        known[side.index()] = Some(g.clone());
        let primary = self.pattern.load().primary();
        let (first, other) = (&known[primary.index()], &known[primary.other().index()]);
        let Some(auth) = first.as_ref().or(other.as_ref()) else {
            return;
        };
        let rest = first.as_ref().and(other.as_ref());
        let next = crate::greeting::for_clients(auth, rest);
        let current = self.identity.load();
        if current.version != next.version
            || current.capabilities != next.capabilities
            || current.mariadb != next.mariadb
            || current.collation != next.collation
        {
            self.identity.store(Arc::new(next));
        }
    }

    /// Re-read the stored-program catalog from the authoritative side now
    /// (after DDL that changed a routine or trigger). Failures are logged;
    /// the previous snapshot stays.
    pub async fn refresh_catalog(&self) {
        let side = self.pattern.load().primary();
        let cfg = self.backend_config(side);
        if let Err(e) = self
            .catalog
            .refresh(cfg, side, self.connect_timeout())
            .await
        {
            tracing::warn!(%side, "could not re-read the stored-program catalog: {e}");
        }
    }

    /// `connect_timeout_ms` as a duration (backend TCP connect + login).
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.config.limits.connect_timeout_ms)
    }
}

/// Which backend threads serve each client connection, and as which user
/// it logged in. Clients learn only cutover's connection id (from the
/// greeting) and send `KILL <that id>` / `KILL USER <name>`; this maps them
/// to the right backend threads instead of killing whatever backend thread
/// happens to carry the same number.
#[derive(Default)]
pub struct SessionRegistry {
    map: Mutex<HashMap<u32, Registered>>,
}

#[derive(Default, Clone)]
struct Registered {
    user: String,
    threads: [Option<u32>; 2],
}

impl SessionRegistry {
    /// Record (or with `None` forget) the backend thread serving `conn_id` on `side`.
    pub fn set(&self, conn_id: u32, side: Side, thread: Option<u32>) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(conn_id).or_default().threads[side.index()] = thread;
    }

    /// Record the user `conn_id` is logged in as (login, COM_CHANGE_USER).
    pub fn set_user(&self, conn_id: u32, user: &str) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(conn_id).or_default().user = user.to_string();
    }

    /// The connection ids logged in as `user` (for `KILL USER`), ascending.
    pub fn of_user(&self, user: &str) -> Vec<u32> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<u32> = m
            .iter()
            .filter(|(_, r)| r.user == user)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Forget a client connection that ended.
    pub fn remove(&self, conn_id: u32) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn_id);
    }

    /// The backend thread ids of `conn_id`, per side; `None` for an unknown id.
    pub fn threads(&self, conn_id: u32) -> Option<[Option<u32>; 2]> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&conn_id)
            .map(|r| r.threads)
    }
}

/// Exponential back-off after connect failures, so that a dead
/// non-authoritative backend does not add a connect timeout to every write.
/// The wait doubles per consecutive failure from `secondary_backoff_min_ms`
/// up to `secondary_backoff_max_ms`; one success resets it.
#[derive(Default)]
pub struct ConnectBackoff {
    inner: Mutex<HealthInner>,
}

#[derive(Default)]
struct HealthInner {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

impl ConnectBackoff {
    /// Whether a connect may be tried now.
    ///
    /// # Errors
    /// The last connect error (as text) while the back-off wait has not passed.
    pub fn check(&self) -> Result<(), String> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match g.retry_at {
            Some(t) if Instant::now() < t => Err(g.last_error.clone().unwrap_or_default()),
            _ => Ok(()),
        }
    }

    /// Record a failed connect: wait `min × 2^(failures-1)`, at most `max`.
    pub fn failed(&self, error: String, min: Duration, max: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.failures = g.failures.saturating_add(1);
        let factor = 1u32 << g.failures.saturating_sub(1).min(16);
        let wait = min.saturating_mul(factor).min(max);
        g.retry_at = Some(Instant::now() + wait);
        g.last_error = Some(error);
    }

    /// Record a successful connect: no wait from now on.
    pub fn succeeded(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.failures != 0 || g.retry_at.is_some() {
            *g = HealthInner::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_resets() {
        let h = ConnectBackoff::default();
        assert!(h.check().is_ok());
        h.failed(
            "refused".into(),
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        assert_eq!(h.check().unwrap_err(), "refused");
        h.succeeded();
        assert!(h.check().is_ok());
        h.failed(
            "x".into(),
            Duration::from_millis(0),
            Duration::from_millis(0),
        );
        assert!(h.check().is_ok());
    }
}
