//! Auto-promotion and auto-migrate: the scheduler moving by itself.
//!
//! Both move only through [`Scheduler::transition`] without `force` (so they
//! obey the state machine, the authority-move guard, the health check and
//! persistence): past `src_first`/`dst_first` only after a clean full
//! validation with nothing counted since it started. Without a validator
//! neither ever moves past `src_first`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::scheduler::{Scheduler, SchedulerError};
use super::state_machine::State;
use super::status::{now_rfc3339, AutoMigrateStatus, RunOutcome, Trigger};
use super::validation::ValidationError;

/// Longest `step_wait_ms` accepted (a day).
pub const MAX_STEP_WAIT_MS: u64 = 86_400_000;
pub const DEFAULT_STEP_WAIT_MS: u64 = 5_000;

/// One step of auto-migrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Move { from: State, to: State },
    Validate(State),
}

impl Step {
    fn name(self) -> String {
        match self {
            Step::Move { to, .. } => format!("move to {to}"),
            Step::Validate(s) => format!("full validation in {s}"),
        }
    }
}

/// The steps from `state` to `dst_only`, or why auto-migrate cannot start there.
fn plan(state: State) -> Result<Vec<Step>, String> {
    use State::*;
    let all = [
        Step::Move {
            from: Initial,
            to: SrcOnly,
        },
        Step::Move {
            from: SrcOnly,
            to: SrcFirst,
        },
        Step::Validate(SrcFirst),
        Step::Move {
            from: SrcFirst,
            to: DstFirst,
        },
        Step::Validate(DstFirst),
        Step::Move {
            from: DstFirst,
            to: DstOnly,
        },
    ];
    let skip = match state {
        Initial => 0,
        SrcOnly => 1,
        SrcFirst => 2,
        _ => {
            return Err(format!(
                "auto-migrate starts from initial, src_only or src_first; the state is {state}"
            ))
        }
    };
    Ok(all[skip..].to_vec())
}

impl Scheduler {
    /// Auto-promotion, until `shutdown` is cancelled.
    pub async fn run_background(self: Arc<Self>, shutdown: CancellationToken) {
        let tick = (self.settings.quiet_period / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(500));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = std::time::Instant::now();
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            // In a fleet only the elected leader moves by itself.
            if !self.coord.is_leader() {
                continue;
            }
            if self.settings.auto_promotion {
                self.promotion_tick().await;
            }
            if self.coord.fleet_status().is_some()
                && reported.elapsed() >= Duration::from_millis(500)
            {
                reported = std::time::Instant::now();
                let report = self.leader_report().await;
                self.coord.publish_report(report).await;
            }
        }
    }

    async fn promotion_tick(&self) {
        let (from, to) = {
            let mut inner = self.inner.lock().await;
            let from = inner.persisted.state;
            let to = match from {
                State::SrcFirst => State::DstFirst,
                State::DstFirst => State::DstOnly,
                _ => {
                    inner.promotion_waiting_for = None;
                    return;
                }
            };
            if inner
                .auto_migrate
                .as_ref()
                .is_some_and(|r| r.outcome == RunOutcome::Running)
            {
                inner.promotion_waiting_for = Some("auto-migrate is running".into());
                return;
            }
            let blockers = self.blockers(&inner, from, to);
            let finished = match (&inner.last_full, blockers.is_empty()) {
                (Some(run), true) => run.finished,
                _ => {
                    inner.promotion_waiting_for = Some(blockers.join("; "));
                    return;
                }
            };
            let quiet = finished.elapsed();
            if quiet < self.settings.quiet_period {
                let left = self.settings.quiet_period - quiet;
                inner.promotion_waiting_for =
                    Some(format!("quiet period: {} ms left", left.as_millis()));
                return;
            }
            (from, to)
        };
        match self.transition(to, false, Trigger::Auto, Some(from)).await {
            Ok(_) => {
                tracing::info!(%from, %to, "auto-promotion moved");
                self.inner.lock().await.promotion_waiting_for = None;
            }
            Err(e) => {
                let msg = format!("auto-promotion to {to}: {e}");
                self.inner.lock().await.promotion_waiting_for = Some(msg.clone());
                self.set_last_error(msg).await;
            }
        }
    }

    /// Start auto-migrate (`POST /auto-migrate`).
    pub async fn start_auto_migrate(
        self: &Arc<Self>,
        step_wait: Duration,
    ) -> Result<AutoMigrateStatus, SchedulerError> {
        let mut inner = self.inner.lock().await;
        if inner.auto_migrate_cancel.is_some() {
            return Err(SchedulerError::Conflict(
                "auto-migrate is already running".into(),
            ));
        }
        let steps = plan(inner.persisted.state).map_err(SchedulerError::Conflict)?;
        let token = CancellationToken::new();
        let status = AutoMigrateStatus {
            outcome: RunOutcome::Running,
            started_at: now_rfc3339(),
            finished_at: None,
            step_wait_ms: step_wait.as_millis() as u64,
            current_step: None,
            completed_steps: Vec::new(),
            reason: None,
        };
        inner.auto_migrate = Some(status.clone());
        inner.auto_migrate_cancel = Some(token.clone());
        let me = Arc::clone(self);
        inner.auto_migrate_task = Some(tokio::spawn(async move {
            me.auto_migrate(steps, step_wait, token).await;
        }));
        tracing::info!(step_wait_ms = status.step_wait_ms, "auto-migrate started");
        Ok(status)
    }

    /// Ask a running auto-migrate to stop (`POST /auto-migrate/cancel`).
    pub async fn cancel_auto_migrate(&self) -> Result<(), SchedulerError> {
        match &self.inner.lock().await.auto_migrate_cancel {
            Some(c) => {
                c.cancel();
                Ok(())
            }
            None => Err(SchedulerError::Conflict(
                "auto-migrate is not running".into(),
            )),
        }
    }

    async fn auto_migrate(
        self: Arc<Self>,
        steps: Vec<Step>,
        wait: Duration,
        cancel: CancellationToken,
    ) {
        let (outcome, reason) = self.run_steps(&steps, wait, &cancel).await;
        let mut inner = self.inner.lock().await;
        inner.auto_migrate_cancel = None;
        if let Some(run) = inner.auto_migrate.as_mut() {
            run.outcome = outcome;
            run.finished_at = Some(now_rfc3339());
            run.reason = reason.clone();
            if outcome == RunOutcome::Succeeded {
                run.current_step = None;
            }
        }
        drop(inner);
        match (outcome, reason) {
            (RunOutcome::Failed, Some(r)) => {
                self.set_last_error(format!("auto-migrate: {r}")).await
            }
            (o, r) => tracing::info!(outcome = ?o, reason = ?r, "auto-migrate finished"),
        }
    }

    async fn run_steps(
        self: &Arc<Self>,
        steps: &[Step],
        wait: Duration,
        cancel: &CancellationToken,
    ) -> (RunOutcome, Option<String>) {
        for (i, step) in steps.iter().enumerate() {
            if i > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => {}
                }
            }
            if cancel.is_cancelled() {
                return (
                    RunOutcome::Cancelled,
                    Some(format!("cancelled before {}", step.name())),
                );
            }
            self.set_step(step.name(), false).await;
            let result = match *step {
                Step::Move { from, to } => self.auto_move(from, to).await,
                Step::Validate(state) => self.auto_validate(state, cancel).await,
            };
            if let Err(reason) = result {
                if cancel.is_cancelled() {
                    return (
                        RunOutcome::Cancelled,
                        Some(format!("cancelled during {}", step.name())),
                    );
                }
                return (
                    RunOutcome::Failed,
                    Some(format!("{}: {reason}", step.name())),
                );
            }
            self.set_step(step.name(), true).await;
        }
        (RunOutcome::Succeeded, None)
    }

    async fn set_step(&self, name: String, done: bool) {
        let mut inner = self.inner.lock().await;
        if let Some(run) = inner.auto_migrate.as_mut() {
            if done {
                run.completed_steps.push(name);
            } else {
                run.current_step = Some(name);
            }
        }
    }

    /// A move without `force`: the guard refuses it unless a clean
    /// validation still holds.
    async fn auto_move(&self, from: State, to: State) -> Result<(), String> {
        self.transition(to, false, Trigger::Auto, Some(from))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn auto_validate(
        self: &Arc<Self>,
        state: State,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let now = self.current_state().await;
        if now != state {
            return Err(format!("state changed to {now}; expected {state}"));
        }
        match self.run_full(cancel).await {
            Err(SchedulerError::Validation(ValidationError::Unavailable)) => Err(format!(
                "validator not available: no validator is configured in this process; \
                 auto-migrate stopped in {state} and will not move further"
            )),
            Err(e) => Err(e.to_string()),
            Ok(o) if !o.completed => Err(format!(
                "full validation failed: {}",
                o.error.as_deref().unwrap_or("did not complete")
            )),
            Ok(o) if o.remaining() > 0 => Err(format!(
                "found {} discrepancies; not moving past {state}",
                o.remaining()
            )),
            Ok(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_start_where_the_state_is() {
        assert_eq!(plan(State::Initial).unwrap().len(), 6);
        assert_eq!(
            plan(State::SrcFirst).unwrap()[0],
            Step::Validate(State::SrcFirst)
        );
        assert!(plan(State::DstFirst).unwrap_err().contains("starts from"));
        // Every move is preceded by a validation once double writes are on.
        for w in plan(State::Initial).unwrap().windows(2) {
            if let Step::Move {
                from: State::SrcFirst | State::DstFirst,
                ..
            } = w[1]
            {
                assert!(matches!(w[0], Step::Validate(_)), "{w:?}");
            }
        }
    }
}
