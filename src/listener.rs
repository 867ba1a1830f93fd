//! The MySQL-protocol listener: the accept loop, the connection limit (and
//! the share of it that may still be authenticating), one task per client
//! session, and the graceful drain at shutdown.

#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::codes;
use crate::config::Config;
use crate::pattern::{PatternHandle, Side};
use crate::shared::Shared;
use crate::stats::DataPathStats;
use crate::tls::server::ServerTls;
use crate::wire;

/// A bound, not yet running MySQL-protocol listener: the data path's entry.
/// `bind`, optionally `probe_source`, then `run` until shutdown.
pub struct Listener {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Listener {
    /// Bind `config.listen` (port 0 picks a free port). Sessions read the
    /// pattern from `pattern` and count into `stats`, both shared with the
    /// control plane.
    ///
    /// # Errors
    /// The bind error (address in use, permission denied, bad address).
    pub async fn bind(
        config: Arc<Config>,
        pattern: PatternHandle,
        stats: Arc<DataPathStats>,
    ) -> std::io::Result<Listener> {
        let tls = ServerTls::load(&config.tls)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let listener = TcpListener::bind(&config.listen).await?;
        let mut shared = Shared::new(config, pattern, stats);
        shared.tls = tls.map(Arc::new);
        Ok(Listener {
            listener,
            shared: Arc::new(shared),
        })
    }

    /// The address actually bound (the chosen port when `listen` used port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Learn both backends' versions and capabilities before the first
    /// client arrives, so the greeting offers what will be relayed faithfully
    /// on either side. Best effort: a side learned later (its first
    /// connection) updates the greeting from then on.
    pub async fn probe_backends(&self) {
        let timeout = self.shared.connect_timeout();
        let (source, destination) = tokio::join!(
            crate::backend::ping(&self.shared.config.source, Side::Source, timeout),
            crate::backend::ping(&self.shared.config.destination, Side::Destination, timeout),
        );
        for (side, probed) in [(Side::Source, source), (Side::Destination, destination)] {
            match probed {
                Ok((latency, greeting)) => {
                    info!(%side, version = %greeting.version, latency_ms = latency.as_millis() as u64, "backend reachable");
                    self.shared.learn_greeting(side, &greeting);
                }
                Err(e) => warn!("{side} not reachable at start-up (clients will get errors while it is needed): {e}"),
            }
        }
        self.shared.refresh_catalog().await;
    }

    /// `[tls]`'s acceptor, for reloading the certificate on SIGHUP.
    pub fn tls(&self) -> Option<Arc<ServerTls>> {
        self.shared.tls.clone()
    }

    /// Accept clients until `shutdown` is cancelled, then let sessions finish
    /// their current statement for up to `shutdown_timeout_ms`; sessions
    /// still running after that are aborted. A connection needs a slot of
    /// `max_connections` and, until it has logged in, one of
    /// `max_unauthenticated_connections`; without either it gets ERR 1040.
    pub async fn run(self, shutdown: CancellationToken) {
        let limits = self.shared.config.limits.clone();
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let unauthenticated = Arc::new(Semaphore::new(limits.max_unauthenticated_connections));
        let mut sessions = JoinSet::new();
        tokio::spawn(keep_catalog_fresh(self.shared.clone(), shutdown.clone()));
        info!(addr = %self.local_addr(), "accepting MySQL clients");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
                a = self.listener.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let stats = self.shared.stats.clone();
            let (Ok(permit), Ok(pre_auth)) = (
                permits.clone().try_acquire_owned(),
                unauthenticated.clone().try_acquire_owned(),
            ) else {
                DataPathStats::incr(&stats.connections_refused);
                tokio::spawn(refuse(stream));
                continue;
            };
            DataPathStats::incr(&stats.connections_accepted);
            stats.client_connections.fetch_add(1, Ordering::Relaxed);
            metrics::gauge!("cutover_client_connections").increment(1.0);
            let shared = self.shared.clone();
            let stop = shutdown.clone();
            sessions.spawn(async move {
                crate::session::serve(shared, stream, stop, pre_auth).await;
                stats.client_connections.fetch_sub(1, Ordering::Relaxed);
                metrics::gauge!("cutover_client_connections").decrement(1.0);
                drop(permit);
            });
        }
        drop(self.listener);
        let n = sessions.len();
        if n > 0 {
            info!(sessions = n, "draining client sessions");
        }
        let deadline = Duration::from_millis(limits.shutdown_timeout_ms);
        let drained = tokio::time::timeout(deadline, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                left = sessions.len(),
                "shutdown deadline passed; closing remaining sessions"
            );
            sessions.abort_all();
        }
    }
}

/// Re-read the stored-program catalog every `[mirror] catalog_refresh_ms`
/// (from the side authoritative at that moment) until `shutdown`.
async fn keep_catalog_fresh(shared: Arc<Shared>, shutdown: CancellationToken) {
    let every = Duration::from_millis(shared.config.mirror.catalog_refresh_ms);
    let cfgs = [
        shared.config.source.clone(),
        shared.config.destination.clone(),
    ];
    let pattern = shared.pattern.clone();
    let side = move || pattern.load().primary();
    shared
        .catalog
        .clone()
        .keep_fresh(cfgs, side, every, shared.connect_timeout(), shutdown)
        .await;
}

/// Too many connections: answer with ERR 1040 instead of a greeting.
async fn refuse(stream: TcpStream) {
    let mut io = wire::PacketIo::new(stream);
    let err = codes::ER_CON_COUNT_ERROR.payload("Too many connections");
    let _ = io.send_packet(0, &err).await;
    io.shutdown().await;
}
