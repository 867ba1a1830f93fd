//! Validation runs as the scheduler drives them: every full run (from
//! `/full/start`, `/fix`'s re-scan or auto-migrate) starts and ends here, so
//! the authority-move guard sees each one, with the state and the mirror
//! health it started with. Incremental runs, repairs and event listings go
//! through the same seam ([`ValidationService`]).

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::guard::FinishedRun;
use super::metrics;
use super::scheduler::{Scheduler, SchedulerError};
use super::status::LastValidation;
use super::validation::{
    EventQuery, FullOutcome, FullRequest, FullStarted, IncrRequest, ValidationError,
    ValidationService,
};
use crate::validate::{FixReport, Inconsistency, ValidationStatus};

/// What `POST /fix` did: the repair of open events, and the full run with
/// fix it started for tables whose differences were not all recorded.
#[derive(Debug, Clone, Serialize)]
pub struct FixResult {
    #[serde(flatten)]
    pub report: FixReport,
    /// The full run with fix started over `unrecorded_tables`.
    pub rescan: Option<FullStarted>,
    /// Why no re-scan was started although one was needed.
    pub note: Option<String>,
}

/// The `/status` view of a finished run.
pub(super) fn public(run: &FinishedRun) -> LastValidation {
    let o = &run.outcome;
    LastValidation {
        finished_at: now_rfc3339_at(run.finished),
        state: run.state,
        outcome: match (&o.error, o.completed) {
            (None, true) => "completed",
            (Some(e), _) if e.contains("cancelled") => "cancelled",
            _ => "failed",
        },
        discrepancies: o.completed.then(|| o.remaining()),
        found: o.found,
        repaired: o.repaired,
        tables_checked: o.tables_checked,
        rows_checked: o.rows_checked,
        all_tables: o.all_tables,
        error: o.error.clone(),
    }
}

/// RFC 3339 for an `Instant` in the past.
fn now_rfc3339_at(t: Instant) -> String {
    let ago = t.elapsed();
    super::status::rfc3339(std::time::SystemTime::now() - ago)
}

impl Scheduler {
    fn service(&self) -> Result<Arc<dyn ValidationService>, SchedulerError> {
        self.validation
            .clone()
            .ok_or(SchedulerError::Validation(ValidationError::Unavailable))
    }

    /// Start a full validation in the background (`POST /full/start`).
    ///
    /// # Errors
    /// 501 without a validator, 409 when one runs, 400 for unknown tables,
    /// 503 when a backend cannot be reached.
    pub async fn start_full(
        self: &Arc<Self>,
        req: FullRequest,
    ) -> Result<FullStarted, SchedulerError> {
        let (started, _task) = self.launch_full(req).await?;
        Ok(started)
    }

    async fn launch_full(
        self: &Arc<Self>,
        req: FullRequest,
    ) -> Result<(FullStarted, JoinHandle<FullOutcome>), SchedulerError> {
        let service = self.service()?;
        let cancel = CancellationToken::new();
        let state = {
            let mut inner = self.inner.lock().await;
            if inner.full_running.is_some() {
                return Err(SchedulerError::Conflict(
                    "a full validation is already running".into(),
                ));
            }
            inner.full_running = Some(cancel.clone());
            inner.persisted.state
        };
        let begun = Instant::now();
        let begun_ms = super::succession::wall_ms();
        let epoch = self.coord.epoch();
        let mirror_at_start = self.mirror_now();
        let run = match service.start_full(req).await {
            Ok(r) => r,
            Err(e) => {
                self.inner.lock().await.full_running = None;
                return Err(e.into());
            }
        };
        self.note_running_full(Some(&run.started)).await;
        let me = Arc::clone(self);
        let done = run.done;
        let task = tokio::spawn(async move {
            tokio::pin!(done);
            let outcome = tokio::select! {
                o = &mut done => o,
                _ = cancel.cancelled() => {
                    service.stop_full().await;
                    done.await
                }
            };
            let run = FinishedRun {
                started: begun,
                finished: Instant::now(),
                state,
                outcome: outcome.clone(),
                mirror_at_start,
            };
            me.keep_full_record(&run, epoch, begun_ms).await;
            me.record_full(run).await;
            outcome
        });
        Ok((run.started, task))
    }

    async fn record_full(&self, run: FinishedRun) {
        let mut inner = self.inner.lock().await;
        inner.full_running = None;
        if run.outcome.completed {
            let stats = &mut inner.persisted.migration_stats;
            stats.full_validation_runs += 1;
            stats.data_discrepancies = run.outcome.remaining();
            metrics::record_validation_run();
        }
        tracing::info!(
            state = %run.state,
            completed = run.outcome.completed,
            remaining = run.outcome.remaining(),
            "full validation recorded"
        );
        inner.last_full = Some(run);
        self.save_stats(&inner).await;
    }

    /// Run a full validation (resuming a checkpoint) and wait for it
    /// (auto-migrate); `cancel` stops it.
    pub(super) async fn run_full(
        self: &Arc<Self>,
        cancel: &CancellationToken,
    ) -> Result<FullOutcome, SchedulerError> {
        let (_, task) = self.launch_full(FullRequest::default()).await?;
        tokio::pin!(task);
        let joined = tokio::select! {
            r = &mut task => r,
            _ = cancel.cancelled() => {
                // Ask the validator to stop and let the run record itself.
                self.stop_full().await.ok();
                task.await
            }
        };
        joined.map_err(|e| SchedulerError::Conflict(format!("full validation task: {e}")))
    }

    /// Cancel the running full validation (`POST /full/stop`).
    ///
    /// # Errors
    /// 501 without a validator; 409 when none runs.
    pub async fn stop_full(&self) -> Result<(), SchedulerError> {
        self.service()?;
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

    /// Start incremental validation (`POST /incr/start`); counted in
    /// `migration_stats.incr_validation_runs`.
    ///
    /// # Errors
    /// 501 without a validator; 409 when one runs; 503.
    pub async fn start_incremental(&self, req: IncrRequest) -> Result<u64, SchedulerError> {
        let id = self.service()?.start_incremental(req).await?;
        let mut inner = self.inner.lock().await;
        inner.persisted.migration_stats.incr_validation_runs += 1;
        self.save_stats(&inner).await;
        Ok(id)
    }

    /// Stop incremental validation (`POST /incr/stop`).
    ///
    /// # Errors
    /// 501 without a validator.
    pub async fn stop_incremental(&self) -> Result<(), SchedulerError> {
        Ok(self.service()?.stop_incremental().await?)
    }

    /// Repair open events (`POST /fix`); when a run found more differences
    /// than it could record, start a full run with fix over those tables so
    /// the job converges.
    ///
    /// # Errors
    /// 501 without a validator; 503 when a side cannot be reached.
    pub async fn fix(self: &Arc<Self>) -> Result<FixResult, SchedulerError> {
        let report = self.service()?.fix_open().await?;
        let mut result = FixResult {
            rescan: None,
            note: None,
            report,
        };
        let tables = result.report.unrecorded_tables.clone();
        if tables.is_empty() {
            return Ok(result);
        }
        let req = FullRequest {
            tables: Some(tables.clone()),
            fix: true,
            restart: true,
        };
        match self.start_full(req).await {
            Ok(s) => result.rescan = Some(s),
            Err(e) => {
                result.note = Some(format!(
                    "tables {} have differences no event records (max_events_per_run); \
                     a full run with fix over them could not start: {e}; \
                     repeat POST /fix or POST /full/start {{\"fix\": true}}",
                    tables.join(", ")
                ))
            }
        }
        Ok(result)
    }

    /// `GET /inconsistencies`.
    ///
    /// # Errors
    /// 501 without a validator.
    pub fn inconsistencies(&self, q: EventQuery) -> Result<Vec<Inconsistency>, SchedulerError> {
        Ok(self.service()?.inconsistencies(q)?)
    }

    /// `/status` → `validation_detail`.
    pub fn validation_detail(&self) -> Option<ValidationStatus> {
        self.validation.as_ref().and_then(|v| v.detail())
    }
}
