//! The accept loop: connection limit, one task per client, graceful drain.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::pattern::{PatternHandle, Side};
use crate::proxy::Shared;
use crate::stats::DataPathStats;
use crate::wire;

const ER_CON_COUNT_ERROR: u16 = 1040;

/// A bound, not yet running MySQL-protocol listener.
pub struct Proxy {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Bind `config.listen` (port 0 picks a free port).
    pub async fn bind(
        config: Arc<Config>,
        pattern: PatternHandle,
        stats: Arc<DataPathStats>,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(&config.listen).await?;
        let shared = Arc::new(Shared::new(config, pattern, stats));
        Ok(Proxy { listener, shared })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Learn the source's version and capabilities before the first client
    /// arrives, so the greeting matches what will be relayed. Best effort.
    pub async fn probe_source(&self) {
        let cfg = &self.shared.config.source;
        match crate::backend::ping(cfg, Side::Source, self.shared.connect_timeout()).await {
            Ok((latency, greeting)) => {
                info!(version = %greeting.version, latency_ms = latency.as_millis() as u64, "source reachable");
                self.shared.learn_greeting(Side::Source, &greeting);
            }
            Err(e) => {
                warn!("source not reachable at start-up (clients will get errors until it is): {e}")
            }
        }
    }

    /// Accept clients until `shutdown` turns true, then let sessions finish
    /// their current statement for up to `shutdown_timeout_ms`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let limits = self.shared.config.limits.clone();
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let mut sessions = JoinSet::new();
        info!(addr = %self.local_addr(), "accepting MySQL clients");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => break,
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
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                DataPathStats::incr(&stats.connections_refused);
                tokio::spawn(refuse(stream));
                continue;
            };
            DataPathStats::incr(&stats.connections_accepted);
            stats.client_connections.fetch_add(1, Ordering::Relaxed);
            metrics::gauge!("cutover_client_connections").increment(1.0);
            let shared = self.shared.clone();
            let rx = shutdown.clone();
            sessions.spawn(async move {
                crate::session::serve(shared, stream, rx).await;
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

/// Too many connections: answer with ERR 1040 instead of a greeting.
async fn refuse(stream: TcpStream) {
    let mut io = wire::PacketIo::new(stream);
    let _ = io
        .send_packet(
            0,
            &wire::err_payload(ER_CON_COUNT_ERROR, "08004", "Too many connections"),
        )
        .await;
    io.shutdown().await;
}
