//! The control plane: state machine, scheduler, persisted state, admin HTTP
//! API and Prometheus metrics.
//!
//! It reaches the data path only through [`PatternHandle`] (which it swaps),
//! [`DataPathStats`] (which it reads) and one function, `backend::ping`,
//! behind the [`BackendProbe`] trait. It reaches the validator only through
//! [`ValidationService`] (`validation.rs`).
//!
//! | file | concern |
//! |------|---------|
//! | `state_machine.rs` | states and the legal moves, as data |
//! | `guard.rs` | the authority-move guard: named blockers, mirror health |
//! | `scheduler.rs` | the one owner of the state: moves, status |
//! | `coordinator.rs` | where the state lives: the state file ([`coordinator::Local`]) or an etcd fleet ([`fleet::Fleet`]) |
//! | `succession.rs` | the scheduler as a fleet member: adopt, lead, step down, report |
//! | `runs.rs` | validation runs, repairs and events through the seam |
//! | `automation.rs` | auto-promotion, auto-migrate |
//! | `admin.rs`, `http.rs` | HTTP: one small handler per route; shared auth, parsing, responses |
//! | `validation.rs` | the seam to `crate::validate` |
//! | `health.rs`, `metrics.rs`, `status.rs`, `store.rs` | probes, Prometheus, JSON shapes, persistence |
//! | `trail.rs` | the last saved state recorded in `data_dir`: a lost state file is refused |
//!
//! ```no_run
//! # async fn run(cfg: cutover::config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use cutover::control::ControlPlane;
//! use cutover::pattern::PatternHandle;
//! use cutover::stats::DataPathStats;
//!
//! let (control, pattern) = ControlPlane::load(&cfg)?;    // refuses a corrupt state file
//! let handle = PatternHandle::new(pattern);               // the data path starts with it
//! let stats = DataPathStats::new();
//! let listener = tokio::net::TcpListener::bind(&cfg.admin_listen).await?;
//! control.serve(listener, handle, stats, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod automation;
pub mod coordinator;
pub mod drift;
pub mod fleet;
pub mod guard;
pub mod health;
mod http;
pub mod metrics;
pub mod runs;
pub mod scheduler;
pub mod state_machine;
pub mod status;
pub mod store;
mod succession;
pub mod trail;
pub mod ui;
pub mod validation;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use health::{BackendProbe, PingProbe, TcpGreetingProbe};
pub use scheduler::SchedulerError;
pub use state_machine::State;
pub use store::{FileStateStore, PersistedState, StateStore, StoreError};
pub use validation::{
    BoxFuture, FullOutcome, FullRequest, FullRun, FullStarted, ValidationError, ValidationService,
};

use crate::config::Config;
use crate::pattern::{Pattern, PatternHandle};
use crate::stats::DataPathStats;

/// Why the control plane could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("admin API on {addr} is not loopback-only; set `admin_token` or bind admin_listen to 127.0.0.1")]
    InsecureAdmin { addr: String },
    #[error("admin listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("state file {state_file} is missing, but data_dir {data_dir} shows the migration went further than a fresh install in {fresh} ({evidence}); refusing to start over: restore the state file, or start with --init-state to begin anew deliberately")]
    LostState {
        state_file: String,
        data_dir: String,
        fresh: State,
        evidence: String,
    },
    #[error("fleet: {0}")]
    Fleet(#[from] fleet::FleetError),
}

/// Where the state lives, before the scheduler exists.
enum Coordination {
    Local(Arc<dyn StateStore>),
    Fleet(Arc<fleet::Fleet>),
}

/// The operator's side of cutover, loaded and ready to serve.
pub struct ControlPlane {
    coordination: Coordination,
    persisted: PersistedState,
    probe: Arc<dyn BackendProbe>,
    validation: Option<Arc<dyn ValidationService>>,
    /// Server drift checks (issue #19).
    drift: Option<Arc<drift::DriftMonitor>>,
    token: Option<String>,
    settings: scheduler::Settings,
}

impl ControlPlane {
    /// Load persisted state (or `initial_pattern` on a fresh install),
    /// returning the pattern the data path must start with.
    ///
    /// Refuses to start when the state file exists but cannot be read, when
    /// it is missing but `data_dir` shows the migration went further (see
    /// `trail.rs`; `cfg.init_state` overrides), or when `admin_listen` is
    /// not loopback and no `admin_token` is set. A fresh state is written
    /// at once, so an unwritable path fails here.
    pub fn load(cfg: &Config) -> Result<(Self, Pattern), ControlError> {
        Self::load_with_store(cfg, Arc::new(FileStateStore::new(&cfg.state_file)))
    }

    /// [`ControlPlane::load`] with another [`StateStore`].
    pub fn load_with_store(
        cfg: &Config,
        store: Arc<dyn StateStore>,
    ) -> Result<(Self, Pattern), ControlError> {
        let store: Arc<dyn StateStore> = Arc::new(trail::Trailed::new(store, &cfg.data_dir));
        // Before the data path accepts anyone: its gauges start from the registered 0.
        metrics::install();
        let token = admin_token(cfg)?;
        let persisted = match store.load()? {
            Some(p) => {
                tracing::info!(store = %store.describe(), state = %p.state, "loaded persisted state");
                p
            }
            None => {
                let state = State::fresh(cfg.initial_pattern);
                match trail::evidence(&cfg.data_dir, state) {
                    Some(evidence) if !cfg.init_state => {
                        return Err(ControlError::LostState {
                            state_file: store.describe(),
                            data_dir: cfg.data_dir.display().to_string(),
                            fresh: state,
                            evidence,
                        })
                    }
                    Some(evidence) => {
                        tracing::warn!(%evidence, "--init-state: starting over although data_dir shows an earlier migration")
                    }
                    None => {}
                }
                let fresh = PersistedState::fresh(state);
                store.save(&fresh)?;
                tracing::info!(store = %store.describe(), state = %fresh.state, "fresh install");
                fresh
            }
        };
        let pattern = persisted.state.pattern();
        let control = Self::assemble(cfg, Coordination::Local(store), persisted, token);
        Ok((control, pattern))
    }

    /// Join the fleet of `[coordination] backend = "etcd"` (docs/FLEET.md):
    /// waits until etcd answers, registers this member and reads the fleet's
    /// state. The returned handle already carries the fleet's pattern, epoch
    /// and an armed fence: give it to the data path (nothing may be served
    /// before this returns) and to [`ControlPlane::serve`]. Validation runs
    /// on the fleet's leader: plug in [`fleet::Fleet::validation`].
    ///
    /// # Errors
    /// As [`ControlPlane::load`]; a corrupt fleet state; `stop` cancelled
    /// before etcd answered.
    pub async fn join_fleet(
        cfg: &Config,
        stop: CancellationToken,
    ) -> Result<(Self, PatternHandle, Arc<fleet::Fleet>), ControlError> {
        metrics::install();
        let token = admin_token(cfg)?;
        let crate::config::Coordination::Etcd(etcd) = &cfg.coordination else {
            return Err(ControlError::Fleet(fleet::FleetError::Etcd {
                endpoints: String::new(),
                message: "[coordination] backend is not \"etcd\"".into(),
            }));
        };
        let (fleet, handle) = fleet::Fleet::join(cfg, etcd, stop).await?;
        let persisted = fleet
            .current_state()
            .unwrap_or_else(|| PersistedState::fresh(State::fresh(cfg.initial_pattern)));
        let control = Self::assemble(
            cfg,
            Coordination::Fleet(Arc::clone(&fleet)),
            persisted,
            token,
        );
        Ok((control, handle, fleet))
    }

    /// A control plane over `coordination` with the default probe, the
    /// drift monitor and no validator yet.
    fn assemble(
        cfg: &Config,
        coordination: Coordination,
        persisted: PersistedState,
        token: Option<String>,
    ) -> Self {
        ControlPlane {
            coordination,
            persisted,
            probe: Arc::new(PingProbe::new(cfg)),
            validation: None,
            drift: Some(Arc::new(drift::DriftMonitor::new(cfg))),
            token,
            settings: settings(cfg),
        }
    }

    /// Replace the backend health probe (the data path's authenticated ping, or a test's).
    pub fn with_probe(mut self, probe: Arc<dyn BackendProbe>) -> Self {
        self.probe = probe;
        self
    }

    /// Plug in the validator (`cutover serve` passes `crate::validate::Validator`):
    /// `/full/*`, `/incr/*`, `/inconsistencies`, `/fix`, the authority-move
    /// guard, auto-promotion, auto-migrate, and targeted re-checks of the
    /// data path's dirty records.
    pub fn with_validation(mut self, v: Arc<dyn ValidationService>) -> Self {
        self.validation = Some(v);
        self
    }

    /// The state loaded (or freshly created).
    pub fn state(&self) -> State {
        self.persisted.state
    }

    /// Serve the admin API on `listener` until `shutdown` resolves.
    ///
    /// `pattern` is the data path's handle (created from the pattern
    /// [`ControlPlane::load`] returned; corrected with a warning if it
    /// differs); `stats` the data path's counters.
    pub async fn serve(
        self,
        listener: TcpListener,
        pattern: PatternHandle,
        stats: Arc<DataPathStats>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControlError> {
        let addr = listener.local_addr().map_err(ControlError::Listener)?;
        if self.token.is_none() && !addr.ip().is_loopback() {
            return Err(ControlError::InsecureAdmin {
                addr: addr.to_string(),
            });
        }
        metrics::install();
        let coord: Arc<dyn coordinator::Coordinator> = match self.coordination {
            Coordination::Local(store) => {
                metrics::set_fleet(0, 1, true);
                Arc::new(coordinator::Local::new(store, pattern.clone()))
            }
            Coordination::Fleet(f) => {
                f.attach_stats(Arc::clone(&stats));
                f
            }
        };
        let scheduler = Arc::new(scheduler::Scheduler::new(
            self.persisted,
            pattern,
            Arc::clone(&coord),
            health::HealthMonitor::new(self.probe).with_drift(self.drift.clone()),
            self.validation.clone(),
            Arc::clone(&stats),
            self.settings,
        ));
        let stop = CancellationToken::new();
        let background = tokio::spawn(Arc::clone(&scheduler).run_background(stop.clone()));
        let dirty = self.validation.map(|v| {
            tokio::spawn(validation::consume_dirty(
                v,
                Arc::clone(&stats),
                stop.clone(),
            ))
        });
        let upkeep = tokio::spawn(metrics_upkeep(stop.clone()));
        if let Some(d) = self.drift.clone() {
            // The preflight drift check: shown in /status as soon as it is done.
            tokio::spawn(async move { d.check(Duration::ZERO).await });
        }
        let state = scheduler.current_state().await;
        tracing::info!(%addr, %state, "admin API listening");
        let ctx = Arc::new(admin::Ctx {
            scheduler: Arc::clone(&scheduler),
            stats,
            token: self.token,
        });
        coord.attach_executor(admin::executor(Arc::clone(&ctx)));
        coord.attach(Arc::downgrade(&scheduler));
        admin::serve(listener, ctx, shutdown).await;
        stop.cancel();
        scheduler.shutdown().await;
        let _ = background.await;
        let _ = upkeep.await;
        if let Some(d) = dirty {
            let _ = d.await;
        }
        tracing::info!("admin API stopped");
        Ok(())
    }
}

/// The admin token (`admin_token`, empty = none).
///
/// # Errors
/// [`ControlError::InsecureAdmin`] when there is none and `admin_listen` is
/// not a loopback address.
fn admin_token(cfg: &Config) -> Result<Option<String>, ControlError> {
    let token = cfg.admin_token.clone().filter(|t| !t.is_empty());
    if token.is_none() && !is_loopback_addr(&cfg.admin_listen) {
        return Err(ControlError::InsecureAdmin {
            addr: cfg.admin_listen.clone(),
        });
    }
    Ok(token)
}

fn settings(cfg: &Config) -> scheduler::Settings {
    scheduler::Settings {
        auto_promotion: cfg.enable_auto_promotion,
        quiet_period: Duration::from_millis(cfg.promotion_quiet_period_ms),
        drain_timeout: Duration::from_millis(cfg.switch_drain_timeout_ms),
    }
}

async fn metrics_upkeep(stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => metrics::upkeep(),
            _ = stop.cancelled() => return,
        }
    }
}

/// `HOST:PORT` whose host is `localhost` or a loopback IP.
pub fn is_loopback_addr(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback_addr("127.0.0.1:9033"));
        assert!(is_loopback_addr("127.0.0.2:9033"));
        assert!(is_loopback_addr("localhost:9033"));
        assert!(is_loopback_addr("[::1]:9033"));
        assert!(!is_loopback_addr("0.0.0.0:9033"));
        assert!(!is_loopback_addr("[::]:9033"));
        assert!(!is_loopback_addr("admin.example:9033"));
        assert!(!is_loopback_addr("10.0.0.5:9033"));
    }
}
