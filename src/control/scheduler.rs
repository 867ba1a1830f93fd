//! The scheduler owns the migration state.
//!
//! Every change — the data path's pattern, the state, the persisted file, the
//! history, stats and metrics — happens under one async mutex, in the order
//! *persist → swap pattern → update memory/metrics*, so concurrent callers
//! never observe (or leave) a state and a pattern that disagree, and a move is
//! made only once it is durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::coordinator::{Coordinator, Move};
use super::guard::{self, FinishedRun, GuardInput, MirrorHealth};
use super::health::HealthMonitor;
use super::metrics;
use super::state_machine::{self, IllegalMove, State};
use super::status::{
    now_rfc3339, AutoMigrateStatus, AutoPromotionStatus, MigrationStats, NextMove, Status,
    Transition, Trigger, ValidationSummary,
};
use super::store::{PersistedState, StoreError};
use super::validation::{ValidationError, ValidationService};
use crate::pattern::{Pattern, PatternHandle};
use crate::stats::DataPathStats;

/// History entries kept (memory and state file).
pub const MAX_HISTORY: usize = 200;
/// How fresh a probe must be before a move.
const MOVE_PROBE_MAX_AGE: Duration = Duration::from_millis(250);
/// How fresh a probe must be for `/status`.
const STATUS_PROBE_MAX_AGE: Duration = Duration::from_secs(1);

/// Everything that can go wrong asking the scheduler for something; the
/// admin API maps each variant to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    IllegalMove(#[from] IllegalMove),
    /// The authority-move guard found what is missing (HTTP 409).
    #[error("not moving from {from} to {to} yet; it needs: {}; add ?force=true to override", .blockers.join("; "))]
    Blocked {
        from: State,
        to: State,
        blockers: Vec<String>,
    },
    #[error("not moving to {to}: {failed}")]
    BackendUnavailable { to: State, failed: String },
    #[error("state changed to {actual} (expected {expected}) before the move to {to}; not moving")]
    StateChanged {
        expected: State,
        actual: State,
        to: State,
    },
    #[error("the move was not made: {0}")]
    Persist(#[from] StoreError),
    #[error("not moving to {to}: {detail}")]
    DrainTimeout {
        to: State,
        detail: crate::pattern::DrainTimeout,
    },
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("{0}")]
    Conflict(String),
    /// A fleet switch did not commit (HTTP 409): members did not acknowledge
    /// the prepare phase in time, or one could not drain. Nothing changed.
    #[error("not moving to {to}: {reason}; switch aborted, no member changed pattern")]
    SwitchAborted {
        to: State,
        reason: String,
        /// Members that did not acknowledge.
        silent: Vec<String>,
    },
    /// The coordinator cannot be reached or no leader is elected (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

/// Automation settings from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auto_promotion: bool,
    pub quiet_period: Duration,
    /// Bound on draining in-flight work when the authoritative side changes.
    pub drain_timeout: Duration,
}

pub(super) struct Inner {
    pub persisted: PersistedState,
    pub entered_state_at: Instant,
    pub last_full: Option<FinishedRun>,
    /// Cancels the running full validation.
    pub full_running: Option<CancellationToken>,
    pub auto_migrate: Option<AutoMigrateStatus>,
    pub auto_migrate_cancel: Option<CancellationToken>,
    pub auto_migrate_task: Option<JoinHandle<()>>,
    pub promotion_waiting_for: Option<String>,
    /// What this process (as the leader) keeps for the next leader.
    pub leader_record: super::coordinator::LeaderRecord,
}

pub struct Scheduler {
    pub(super) inner: Mutex<Inner>,
    pattern: PatternHandle,
    pub(super) coord: Arc<dyn Coordinator>,
    pub(super) health: HealthMonitor,
    pub(super) validation: Option<Arc<dyn ValidationService>>,
    pub(super) stats: Arc<DataPathStats>,
    pub(super) settings: Settings,
    started: Instant,
}

impl Scheduler {
    /// Take ownership of `persisted` and make `pattern` agree with it.
    pub fn new(
        persisted: PersistedState,
        pattern: PatternHandle,
        coord: Arc<dyn Coordinator>,
        health: HealthMonitor,
        validation: Option<Arc<dyn ValidationService>>,
        stats: Arc<DataPathStats>,
        settings: Settings,
    ) -> Self {
        let want = persisted.state.pattern();
        let had = pattern.swap(want);
        if had != want {
            tracing::warn!(%had, %want, "data path started with a pattern other than the persisted state's; corrected");
        }
        metrics::set_state(persisted.state);
        Scheduler {
            inner: Mutex::new(Inner {
                persisted,
                entered_state_at: Instant::now(),
                last_full: None,
                full_running: None,
                auto_migrate: None,
                auto_migrate_cancel: None,
                auto_migrate_task: None,
                promotion_waiting_for: None,
                leader_record: Default::default(),
            }),
            pattern,
            coord,
            health,
            validation,
            stats,
            settings,
            started: Instant::now(),
        }
    }

    pub fn pattern_handle(&self) -> &PatternHandle {
        &self.pattern
    }

    pub async fn current_state(&self) -> State {
        self.inner.lock().await.persisted.state
    }

    /// Inconsistency events open now (0 without a validator).
    pub fn open_inconsistencies(&self) -> u64 {
        self.validation
            .as_ref()
            .map_or(0, |v| v.open_inconsistencies())
    }

    /// Mirror counters of every process serving the migration (this one
    /// outside a fleet).
    pub(super) fn mirror_now(&self) -> MirrorHealth {
        self.coord.mirror_health(guard::mirror_health(&self.stats))
    }

    /// The authority-move guard's blockers for `from → to` (see `guard`).
    pub(super) fn blockers(&self, inner: &Inner, from: State, to: State) -> Vec<String> {
        let drift = self
            .health
            .drift_snapshot()
            .map(|r| r.blockers())
            .unwrap_or_default();
        guard::move_blockers(&GuardInput {
            from,
            to,
            validation_available: self.validation.is_some(),
            entered_state_at: inner.entered_state_at,
            last_full: inner.last_full.as_ref(),
            mirror_now: self.mirror_now(),
            open_inconsistencies: self.open_inconsistencies(),
            drift: &drift,
        })
    }

    /// Move to `to`; `Ok(false)` when `to` is already the state (a no-op,
    /// so scripts can retry). `expect` (used by the automation) refuses the
    /// move if the state is no longer the one the caller decided from.
    ///
    /// # Errors
    /// [`SchedulerError::IllegalMove`] / [`SchedulerError::Blocked`] (409,
    /// unless `force`), [`SchedulerError::BackendUnavailable`] (503, even
    /// forced), [`SchedulerError::DrainTimeout`], [`SchedulerError::Persist`].
    pub async fn transition(
        &self,
        to: State,
        force: bool,
        trigger: Trigger,
        expect: Option<State>,
    ) -> Result<bool, SchedulerError> {
        // The guard judges drift no older than this.
        self.health
            .drift(MOVE_PROBE_MAX_AGE.max(Duration::from_secs(1)))
            .await;
        // Cheap checks first so an illegal or unproven move answers 409, not 503.
        {
            let inner = self.inner.lock().await;
            if self.check_move(&inner, to, force, expect)?.is_none() {
                return Ok(false);
            }
        }
        // Probe outside the lock: the backends the target pattern needs.
        let failed = self
            .health
            .unavailable_for(to.pattern(), MOVE_PROBE_MAX_AGE)
            .await;
        if !failed.is_empty() {
            return Err(SchedulerError::BackendUnavailable {
                to,
                failed: describe_unreachable(failed),
            });
        }
        let mut inner = self.inner.lock().await;
        let Some(overridden) = self.check_move(&inner, to, force, expect)? else {
            return Ok(false);
        };
        let from = inner.persisted.state;
        let forced =
            force && (!state_machine::LEGAL_MOVES.contains(&(from, to)) || !overridden.is_empty());
        let next = next_persisted(&inner.persisted, to, trigger, forced, overridden);
        // A change of authority drains in-flight transactions first (new
        // ones wait at the gate) so no write applies in different orders on
        // the two sides; the state is persisted only once the drain worked
        // (in a fleet: every member drained and acknowledged).
        self.coord
            .commit_move(Move {
                from,
                next: next.clone(),
                drain: from.pattern().primary() != to.pattern().primary(),
                drain_timeout: self.settings.drain_timeout,
            })
            .await?;
        inner.persisted = next;
        inner.entered_state_at = Instant::now();
        metrics::set_state(to);
        metrics::record_switch(from, to);
        tracing::info!(%from, %to, ?trigger, forced, pattern = %to.pattern(), "state changed");
        Ok(true)
    }

    /// `Ok(None)`: already there (no-op). `Ok(Some(overridden))`: the move
    /// may be made; `overridden` lists guard blockers `force` overrode.
    fn check_move(
        &self,
        inner: &Inner,
        to: State,
        force: bool,
        expect: Option<State>,
    ) -> Result<Option<Vec<String>>, SchedulerError> {
        let from = inner.persisted.state;
        if let Some(expected) = expect {
            if expected != from {
                return Err(SchedulerError::StateChanged {
                    expected,
                    actual: from,
                    to,
                });
            }
        }
        match state_machine::check(from, to, force) {
            Err(IllegalMove::AlreadyThere(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        let blockers = self.blockers(inner, from, to);
        if blockers.is_empty() || force {
            Ok(Some(blockers))
        } else {
            Err(SchedulerError::Blocked { from, to, blockers })
        }
    }

    async fn save(&self, state: PersistedState) -> Result<(), StoreError> {
        self.coord.save(state).await
    }

    /// Save the migration stats after a change that is not a move; failures are logged.
    pub(super) async fn save_stats(&self, inner: &MutexGuard<'_, Inner>) {
        if let Err(e) = self.save(inner.persisted.clone()).await {
            tracing::error!(error = %e, "could not persist migration stats");
        }
    }

    /// Record an error for `/status` (`migration_stats.last_error`).
    pub(super) async fn set_last_error(&self, message: String) {
        let mut inner = self.inner.lock().await;
        if inner.persisted.migration_stats.last_error.as_deref() == Some(message.as_str()) {
            return;
        }
        tracing::warn!(error = %message, "control plane error");
        inner.persisted.migration_stats.last_error = Some(message);
        self.save_stats(&inner).await;
    }

    pub async fn migration_stats(&self) -> MigrationStats {
        self.inner.lock().await.persisted.migration_stats.clone()
    }

    /// `GET /health` (the readiness probe): whether the current pattern's
    /// authoritative side answers; `Err` names it and why not.
    ///
    /// The mirror side is deliberately not part of it: a dead mirror costs
    /// counted double-write failures, not client errors (clients get the
    /// authoritative side's results), so it must not take a sidecar's pod
    /// out of service. It shows in `/status` (`pool_health`),
    /// `cutover_backend_up` and the alert rules instead.
    pub async fn health(&self) -> Result<Pattern, String> {
        let pattern = self.pattern.load();
        let side = pattern.primary();
        let h = self.health.check(side, MOVE_PROBE_MAX_AGE).await;
        if h.ok {
            Ok(pattern)
        } else {
            Err(format!(
                "{side} unreachable ({})",
                h.error.unwrap_or_else(|| "unreachable".into())
            ))
        }
    }

    /// Refresh the backend probes (and `cutover_backend_up`) if older than `max_age`.
    pub async fn refresh_health(&self, max_age: Duration) {
        self.health.both(max_age).await;
    }

    /// `GET /status`.
    pub async fn status(&self) -> Status {
        let pool_health = self.health.both(STATUS_PROBE_MAX_AGE).await;
        let inner = self.inner.lock().await;
        let state = inner.persisted.state;
        let next_moves = state
            .legal_targets()
            .into_iter()
            .map(|to| {
                let guard = self.blockers(&inner, state, to);
                let mut blockers = guard.clone();
                for (side, h) in [
                    (crate::pattern::Side::Source, &pool_health.source),
                    (crate::pattern::Side::Destination, &pool_health.destination),
                ] {
                    if to.pattern().uses(side) && !h.ok {
                        let e = h.error.as_deref().unwrap_or("unreachable");
                        blockers.push(format!("{side} reachable ({e})"));
                    }
                }
                NextMove {
                    to,
                    allowed: blockers.is_empty(),
                    forced_only: !guard.is_empty() && guard.len() == blockers.len(),
                    blockers,
                }
            })
            .collect();
        Status {
            current_state: state,
            // Read from the handle, under the lock: what the data path really uses.
            current_pattern: self.pattern.load(),
            migration_stats: inner.persisted.migration_stats.clone(),
            pool_health,
            pool_metrics: self.stats.snapshot(),
            uptime_seconds: self.started.elapsed().as_secs(),
            history: inner.persisted.history.clone(),
            next_moves,
            mirror_health: guard::mirror_health(&self.stats),
            open_inconsistencies: self.open_inconsistencies(),
            drift: self.health.drift_snapshot(),
            auto_promotion: AutoPromotionStatus {
                enabled: self.settings.auto_promotion,
                quiet_period_ms: self.settings.quiet_period.as_millis() as u64,
                waiting_for: inner.promotion_waiting_for.clone(),
            },
            auto_migrate: inner.auto_migrate.clone(),
            validation: ValidationSummary {
                available: self.validation.is_some(),
                full_running: inner.full_running.is_some(),
                last_full: inner.last_full.as_ref().map(super::runs::public),
            },
        }
    }

    /// Stop background work before shutdown: cancel runs, wait briefly for auto-migrate.
    pub async fn shutdown(&self) {
        let task = {
            let mut inner = self.inner.lock().await;
            if let Some(c) = &inner.full_running {
                c.cancel();
            }
            if let Some(c) = &inner.auto_migrate_cancel {
                c.cancel();
            }
            inner.auto_migrate_task.take()
        };
        if let Some(task) = task {
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                tracing::warn!("auto-migrate did not stop within 5 s");
            }
        }
    }
}

/// The persisted state after a move to `to`.
fn next_persisted(
    now: &PersistedState,
    to: State,
    trigger: Trigger,
    forced: bool,
    overridden: Vec<String>,
) -> PersistedState {
    let mut next = now.clone();
    next.state = to;
    next.pattern = to.pattern();
    next.migration_stats.current_state = Some(to);
    if next.migration_stats.start_time.is_none() {
        next.migration_stats.start_time = Some(now_rfc3339());
    }
    next.history.push(Transition {
        time: now_rfc3339(),
        from: now.state,
        to,
        trigger,
        forced,
        overridden,
    });
    let excess = next.history.len().saturating_sub(MAX_HISTORY);
    next.history.drain(..excess);
    next
}

fn describe_unreachable(failed: Vec<(crate::pattern::Side, String)>) -> String {
    failed
        .into_iter()
        .map(|(side, e)| format!("{side} unreachable ({e})"))
        .collect::<Vec<_>>()
        .join("; ")
}
