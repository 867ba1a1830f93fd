//! The scheduler owns the migration state.
//!
//! Every change — the data path's pattern, the state, the persisted file, the
//! history, stats and metrics — happens under one async mutex, in the order
//! *persist → swap pattern → update memory/metrics*, so concurrent callers
//! never observe (or leave) a state and a pattern that disagree, and a move is
//! made only once it is durable.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;

use super::health::HealthMonitor;
use super::metrics;
use super::state_machine::{self, IllegalMove, State};
use super::status::{
    now_rfc3339, AutoMigrateStatus, AutoPromotionStatus, LastValidation, MigrationStats, NextMove,
    Status, Transition, Trigger, ValidationStatus,
};
use super::store::{PersistedState, StateStore, StoreError};
use super::validator::{cancel_pair, CancelToken, Canceller, ValidationReport, Validator};
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
    #[error("validator not available: no validator is configured in this process")]
    ValidatorUnavailable,
    #[error("validator not available: no validator is configured in this process")]
    IncrementalUnavailable,
    #[error("{0}")]
    Conflict(String),
}

/// Automation settings from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub auto_promotion: bool,
    pub quiet_period: Duration,
    /// Bound on draining in-flight work when the authoritative side changes.
    pub drain_timeout: Duration,
}

/// A finished full validation, with what auto-promotion needs to judge it.
#[derive(Debug, Clone)]
pub(super) struct FullRun {
    pub started: Instant,
    pub finished: Instant,
    pub public: LastValidation,
}

pub(super) struct Inner {
    pub persisted: PersistedState,
    pub entered_state_at: Instant,
    pub last_inconsistency: Option<Instant>,
    /// Double-write failures + secondary errors last seen (for inconsistency detection).
    pub seen_failures: u64,
    pub last_full: Option<FullRun>,
    pub full_running: Option<Canceller>,
    pub auto_migrate: Option<AutoMigrateStatus>,
    pub auto_migrate_cancel: Option<Canceller>,
    pub auto_migrate_task: Option<JoinHandle<()>>,
    pub promotion_waiting_for: Option<String>,
}

pub struct Scheduler {
    pub(super) inner: Mutex<Inner>,
    pattern: PatternHandle,
    store: Arc<dyn StateStore>,
    pub(super) health: HealthMonitor,
    pub(super) validator: Option<Arc<dyn Validator>>,
    stats: Arc<DataPathStats>,
    pub(super) settings: Settings,
    started: Instant,
}

impl Scheduler {
    /// Take ownership of `persisted` and make `pattern` agree with it.
    pub fn new(
        persisted: PersistedState,
        pattern: PatternHandle,
        store: Arc<dyn StateStore>,
        health: HealthMonitor,
        validator: Option<Arc<dyn Validator>>,
        stats: Arc<DataPathStats>,
        settings: Settings,
    ) -> Self {
        let want = persisted.state.pattern();
        let had = pattern.swap(want);
        if had != want {
            tracing::warn!(%had, %want, "data path started with a pattern other than the persisted state's; corrected");
        }
        metrics::set_state(persisted.state);
        let seen_failures = failure_count(&stats);
        Scheduler {
            inner: Mutex::new(Inner {
                persisted,
                entered_state_at: Instant::now(),
                last_inconsistency: None,
                seen_failures,
                last_full: None,
                full_running: None,
                auto_migrate: None,
                auto_migrate_cancel: None,
                auto_migrate_task: None,
                promotion_waiting_for: None,
            }),
            pattern,
            store,
            health,
            validator,
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

    /// Move to `to`. `expect` (used by the automation) refuses the move if
    /// the state is no longer the one the caller decided from.
    pub async fn transition(
        &self,
        to: State,
        force: bool,
        trigger: Trigger,
        expect: Option<State>,
    ) -> Result<(), SchedulerError> {
        // Cheap legality check first so an illegal move answers 409, not 503.
        {
            let inner = self.inner.lock().await;
            check_move(&inner, to, force, expect)?;
        }
        // Probe outside the lock: the backends the target pattern needs.
        let failed = self
            .health
            .unavailable_for(to.pattern(), MOVE_PROBE_MAX_AGE)
            .await;
        if !failed.is_empty() {
            let failed = failed
                .into_iter()
                .map(|(side, e)| format!("{side} unreachable ({e})"))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(SchedulerError::BackendUnavailable { to, failed });
        }
        let mut inner = self.inner.lock().await;
        check_move(&inner, to, force, expect)?;
        let from = inner.persisted.state;
        let forced = force && !state_machine::LEGAL_MOVES.contains(&(from, to));
        let mut next = inner.persisted.clone();
        next.state = to;
        next.pattern = to.pattern();
        next.migration_stats.current_state = Some(to);
        if next.migration_stats.start_time.is_none() {
            next.migration_stats.start_time = Some(now_rfc3339());
        }
        next.history.push(Transition {
            time: now_rfc3339(),
            from,
            to,
            trigger,
            forced,
        });
        let excess = next.history.len().saturating_sub(MAX_HISTORY);
        next.history.drain(..excess);
        // A change of authority drains in-flight transactions first (new
        // ones wait at the gate) so no write applies in different orders on
        // the two sides; the state is persisted only once the drain worked.
        let drained = if from.pattern().primary() != to.pattern().primary() {
            let d = self
                .pattern
                .drain(self.settings.drain_timeout)
                .await
                .map_err(|e| {
                    tracing::warn!(%from, %to, "switch aborted: {e}");
                    SchedulerError::DrainTimeout { to, detail: e }
                })?;
            Some(d)
        } else {
            None
        };
        self.save(next.clone()).await?;
        match &drained {
            Some(d) => d.swap(to.pattern()),
            None => self.pattern.swap(to.pattern()),
        };
        drop(drained);
        inner.persisted = next;
        inner.entered_state_at = Instant::now();
        metrics::set_state(to);
        metrics::record_switch(from, to);
        tracing::info!(%from, %to, ?trigger, forced, pattern = %to.pattern(), "state changed");
        Ok(())
    }

    async fn save(&self, state: PersistedState) -> Result<(), StoreError> {
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || store.save(&state)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Write {
                path: self.store.describe().into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
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

    /// Note that source and destination were seen to diverge (validator,
    /// data path); resets auto-promotion's quiet period.
    pub async fn record_inconsistency(&self) {
        self.inner.lock().await.last_inconsistency = Some(Instant::now());
    }

    /// Turn new double-write failures / secondary errors into an inconsistency.
    pub(super) async fn poll_inconsistencies(&self) {
        let now = failure_count(&self.stats);
        let mut inner = self.inner.lock().await;
        if now != inner.seen_failures {
            inner.seen_failures = now;
            inner.last_inconsistency = Some(Instant::now());
        }
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

    pub async fn status(&self) -> Status {
        let pool_health = self.health.both(STATUS_PROBE_MAX_AGE).await;
        let inner = self.inner.lock().await;
        Status {
            current_state: inner.persisted.state,
            // Read from the handle, under the lock: what the data path really uses.
            current_pattern: self.pattern.load(),
            migration_stats: inner.persisted.migration_stats.clone(),
            pool_health,
            pool_metrics: self.stats.snapshot(),
            uptime_seconds: self.started.elapsed().as_secs(),
            history: inner.persisted.history.clone(),
            next_moves: NextMove::legal_from(inner.persisted.state),
            auto_promotion: AutoPromotionStatus {
                enabled: self.settings.auto_promotion,
                quiet_period_ms: self.settings.quiet_period.as_millis() as u64,
                waiting_for: inner.promotion_waiting_for.clone(),
            },
            auto_migrate: inner.auto_migrate.clone(),
            validation: ValidationStatus {
                available: self.validator.is_some(),
                full_running: inner.full_running.is_some(),
                last_full: inner.last_full.as_ref().map(|r| r.public.clone()),
            },
        }
    }

    /// Start a full validation in the background (`POST /full/start`).
    pub async fn start_full(
        self: &Arc<Self>,
        tables: Option<Vec<String>>,
    ) -> Result<(), SchedulerError> {
        let (token, validator) = self.begin_full().await?;
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _ = me.finish_full(validator, tables, token).await;
        });
        Ok(())
    }

    /// Run a full validation and wait for it (auto-migrate).
    pub(super) async fn run_full(
        &self,
        cancel: &CancelToken,
    ) -> Result<(Instant, ValidationReport), SchedulerError> {
        let (token, validator) = self.begin_full().await?;
        let run = self.finish_full(validator, None, token);
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r,
            _ = cancel.cancelled() => {
                // Ask the validator to stop and let the run record itself.
                self.stop_full().await.ok();
                run.await
            }
        }
    }

    async fn begin_full(&self) -> Result<(CancelToken, Arc<dyn Validator>), SchedulerError> {
        let validator = self
            .validator
            .clone()
            .ok_or(SchedulerError::ValidatorUnavailable)?;
        let mut inner = self.inner.lock().await;
        if inner.full_running.is_some() {
            return Err(SchedulerError::Conflict(
                "a full validation is already running".into(),
            ));
        }
        let (canceller, token) = cancel_pair();
        inner.full_running = Some(canceller);
        Ok((token, validator))
    }

    async fn finish_full(
        &self,
        validator: Arc<dyn Validator>,
        tables: Option<Vec<String>>,
        token: CancelToken,
    ) -> Result<(Instant, ValidationReport), SchedulerError> {
        let started = Instant::now();
        let state_at_start = self.current_state().await;
        let result = validator.run_full(tables, token).await;
        let mut inner = self.inner.lock().await;
        inner.full_running = None;
        let (report, error) = match &result {
            Ok(r) => (r.clone(), None),
            Err(e) => (ValidationReport::default(), Some(e.clone())),
        };
        inner.last_full = Some(FullRun {
            started,
            finished: Instant::now(),
            public: LastValidation {
                finished_at: now_rfc3339(),
                state: state_at_start,
                discrepancies: report.discrepancies,
                tables_checked: report.tables_checked,
                rows_checked: report.rows_checked,
                error: error.clone(),
            },
        });
        if error.is_none() {
            let stats = &mut inner.persisted.migration_stats;
            stats.full_validation_runs += 1;
            stats.data_discrepancies = report.discrepancies;
            metrics::record_validation_run();
            if report.discrepancies > 0 {
                inner.last_inconsistency = Some(Instant::now());
            }
        }
        self.save_stats(&inner).await;
        drop(inner);
        match result {
            Ok(r) => Ok((started, r)),
            Err(e) => Err(SchedulerError::Conflict(format!(
                "full validation failed: {e}"
            ))),
        }
    }

    /// Cancel the running full validation (`POST /full/stop`).
    pub async fn stop_full(&self) -> Result<(), SchedulerError> {
        if self.validator.is_none() {
            return Err(SchedulerError::ValidatorUnavailable);
        }
        match &self.inner.lock().await.full_running {
            Some(c) => {
                c.cancel();
                Ok(())
            }
            None => Err(SchedulerError::Conflict(
                "no full validation is running".into(),
            )),
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

fn check_move(
    inner: &Inner,
    to: State,
    force: bool,
    expect: Option<State>,
) -> Result<(), SchedulerError> {
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
    state_machine::check(from, to, force)?;
    Ok(())
}

fn failure_count(stats: &DataPathStats) -> u64 {
    stats.double_write_failure.load(Ordering::Relaxed)
        + stats.secondary_errors[0].load(Ordering::Relaxed)
        + stats.secondary_errors[1].load(Ordering::Relaxed)
}
