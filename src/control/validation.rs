//! The one seam from the control plane to data validation.
//!
//! Every validation route (`/full/*`, `/incr/*`, `/fix`, `/inconsistencies`,
//! the `validation_detail` of `/status`, the open-inconsistencies gauge),
//! auto-promotion, auto-migrate and the authority-move guard reach the
//! validator through [`ValidationService`] and nothing else. `cutover serve`
//! plugs in the real validator (`crate::validate::Validator`, implemented
//! here); a control plane without one answers 501 on those routes.
//!
//! Errors are typed ([`ValidationError`]) so the admin API maps each to one
//! HTTP status; cancellation is a [`CancellationToken`].

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::stats::{DataPathStats, DirtyRecord};
use crate::validate::{self, EventStatus, FixReport, Inconsistency, RunReport, ValidateError};

/// A boxed, sendable future (the seam is object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a validation request was refused or a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// No validator is plugged into this process (HTTP 501).
    #[error("validator not available: no validator is configured in this process")]
    Unavailable,
    /// `tables` names tables that exist on neither side (HTTP 400).
    #[error("unknown table(s) in `tables`: {} (not a base table on the source or the destination)", .0.join(", "))]
    UnknownTables(Vec<String>),
    /// A request the validator cannot serve as asked (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// A run of this mode is already going (HTTP 409).
    #[error("a {0} validation run is already in progress")]
    AlreadyRunning(&'static str),
    /// A backend could not be reached or a query failed (HTTP 503).
    #[error("{0}")]
    Backend(String),
    /// The event store or checkpoint could not be written (HTTP 500).
    #[error("{0}")]
    Storage(String),
}

impl From<ValidateError> for ValidationError {
    fn from(e: ValidateError) -> Self {
        match e {
            ValidateError::AlreadyRunning(what) => ValidationError::AlreadyRunning(what),
            ValidateError::UnknownTables(t) => ValidationError::UnknownTables(t),
            ValidateError::Table { .. } | ValidateError::BadKey { .. } => {
                ValidationError::Invalid(e.to_string())
            }
            ValidateError::Io { .. } | ValidateError::DataDirLocked { .. } => {
                ValidationError::Storage(e.to_string())
            }
            ValidateError::Config(_)
            | ValidateError::Connect { .. }
            | ValidateError::Query { .. } => ValidationError::Backend(e.to_string()),
        }
    }
}

/// `POST /full/start`: what to validate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FullRequest {
    /// Tables to check (`None`: `[validation] tables`, else every table).
    pub tables: Option<Vec<String>>,
    /// Repair what differs (the target is made equal to the base); also
    /// on when `[validation] auto_fix`.
    pub fix: bool,
    /// Discard a checkpoint instead of resuming it.
    pub restart: bool,
}

/// How a started full run will proceed (the body of `202 /full/start`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FullStarted {
    pub run_id: u64,
    /// The run continues a stopped or crashed run from its checkpoint.
    pub resumed: bool,
    /// The tables the run covers (`None`: every table).
    pub tables: Option<Vec<String>>,
    pub fix: bool,
    /// What the run does when that differs from what was asked (a resume
    /// over other tables, a resume that changes `fix`), in words.
    pub note: Option<String>,
}

/// How a full run ended, as the scheduler and the authority-move guard see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FullOutcome {
    /// The run went through every table it was asked for.
    pub completed: bool,
    /// Why it did not complete (failed or stopped).
    pub error: Option<String>,
    /// The run covered every table (no `tables` filter).
    pub all_tables: bool,
    pub tables_checked: u64,
    pub rows_checked: u64,
    /// Rows found different (each row once per run).
    pub found: u64,
    /// Rows the run made equal (fix enabled).
    pub repaired: u64,
    /// Tables not validated, with the reason (`table: reason`).
    pub skipped: Vec<String>,
}

impl FullOutcome {
    /// Differences the run left: `found − repaired`.
    pub fn remaining(&self) -> u64 {
        self.found.saturating_sub(self.repaired)
    }
}

/// A full run that started: what it does, and its end.
pub struct FullRun {
    pub started: FullStarted,
    /// Resolves when the run ends (completed, stopped or failed).
    pub done: BoxFuture<'static, FullOutcome>,
}

/// `POST /incr/start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncrRequest {
    /// Rows whose update time (ms since the epoch) is at or after this.
    pub since_utime_ms: i64,
    /// Tail: poll every this many ms until stopped.
    pub interval_ms: u64,
    pub fix: bool,
}

/// `GET /inconsistencies` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventQuery {
    pub status: Option<EventStatus>,
    /// 1..=10000.
    pub limit: usize,
    /// Only events with a larger id (paging).
    pub after: Option<u64>,
}

/// The control plane's view of the validator.
///
/// Only [`ValidationService::start_full`] and [`ValidationService::stop_full`]
/// are required (they are what auto-promotion, auto-migrate and the guard
/// need); the other capabilities answer [`ValidationError::Unavailable`]
/// (HTTP 501) unless implemented.
pub trait ValidationService: Send + Sync + 'static {
    /// Start a full run in the background.
    ///
    /// # Errors
    /// [`ValidationError::UnknownTables`] before anything starts,
    /// [`ValidationError::AlreadyRunning`], [`ValidationError::Backend`].
    fn start_full(&self, req: FullRequest) -> BoxFuture<'_, Result<FullRun, ValidationError>>;

    /// Ask the running full run to stop after its current chunk (its
    /// checkpoint is kept) and wait until it has. No-op when none runs.
    fn stop_full(&self) -> BoxFuture<'_, ()>;

    /// Start incremental validation (tailing until stopped).
    ///
    /// # Errors
    /// [`ValidationError::AlreadyRunning`], [`ValidationError::Backend`].
    fn start_incremental(&self, _req: IncrRequest) -> BoxFuture<'_, Result<u64, ValidationError>> {
        Box::pin(async { Err(ValidationError::Unavailable) })
    }

    /// Stop incremental validation. No-op when none runs.
    ///
    /// # Errors
    /// [`ValidationError::Unavailable`] without a real validator.
    fn stop_incremental(&self) -> BoxFuture<'_, Result<(), ValidationError>> {
        Box::pin(async { Err(ValidationError::Unavailable) })
    }

    /// Repair every open event from the authoritative side.
    ///
    /// # Errors
    /// [`ValidationError::Backend`] when a side cannot be reached.
    fn fix_open(&self) -> BoxFuture<'_, Result<FixReport, ValidationError>> {
        Box::pin(async { Err(ValidationError::Unavailable) })
    }

    /// Durable events, oldest first.
    ///
    /// # Errors
    /// [`ValidationError::Unavailable`] without a real validator.
    fn inconsistencies(&self, _q: EventQuery) -> Result<Vec<Inconsistency>, ValidationError> {
        Err(ValidationError::Unavailable)
    }

    /// Events still open (found, neither fixed nor obsolete).
    fn open_inconsistencies(&self) -> u64 {
        0
    }

    /// Per-table progress and run summaries (`/status` → `validation_detail`).
    fn detail(&self) -> Option<validate::ValidationStatus> {
        None
    }

    /// Re-check rows the data path flagged (mirror mismatches, unsafe statements).
    fn recheck_dirty(&self, _records: Vec<DirtyRecord>) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The end of a run, as the seam reports it.
fn outcome_of(report: Option<RunReport>, all_tables: bool) -> FullOutcome {
    let Some(r) = report else {
        return FullOutcome {
            error: Some("validation task vanished".into()),
            ..FullOutcome::default()
        };
    };
    let completed = r.outcome == validate::Outcome::Completed;
    let error = match r.outcome {
        validate::Outcome::Completed => None,
        validate::Outcome::Stopped => Some("validation cancelled".into()),
        _ => Some(
            r.error
                .clone()
                .unwrap_or_else(|| "validation failed".into()),
        ),
    };
    FullOutcome {
        completed,
        error,
        all_tables,
        tables_checked: r.tables.len() as u64,
        rows_checked: r.totals.rows_checked,
        found: r.totals.found(),
        repaired: r.totals.repaired,
        skipped: r
            .skipped
            .iter()
            .map(|s| format!("{}: {}", s.table, s.reason))
            .collect(),
    }
}

impl ValidationService for validate::Validator {
    fn start_full(&self, req: FullRequest) -> BoxFuture<'_, Result<FullRun, ValidationError>> {
        Box::pin(async move {
            let fix = req.fix || self.config().validation.auto_fix;
            let started = self.begin_full(req.tables, fix, req.restart).await?;
            // `None` is the configured scope (`[validation] tables`, else every table).
            let all_tables = started.tables.is_none();
            let me = self.clone();
            let done = Box::pin(async move { outcome_of(me.wait_full().await, all_tables) });
            Ok(FullRun {
                started: FullStarted {
                    run_id: started.run_id.0,
                    resumed: started.resumed,
                    tables: started.tables,
                    fix,
                    note: started.note,
                },
                done,
            })
        })
    }

    fn stop_full(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.stop_full_run().await })
    }

    fn start_incremental(&self, req: IncrRequest) -> BoxFuture<'_, Result<u64, ValidationError>> {
        Box::pin(async move {
            let id = validate::Validator::start_incremental(
                self,
                req.since_utime_ms,
                Some(req.interval_ms),
                req.fix,
            )
            .await?;
            Ok(id.0)
        })
    }

    fn stop_incremental(&self) -> BoxFuture<'_, Result<(), ValidationError>> {
        Box::pin(async move { Ok(validate::Validator::stop_incremental(self).await?) })
    }

    fn fix_open(&self) -> BoxFuture<'_, Result<FixReport, ValidationError>> {
        Box::pin(async move { Ok(validate::Validator::fix_open(self).await?) })
    }

    fn inconsistencies(&self, q: EventQuery) -> Result<Vec<Inconsistency>, ValidationError> {
        Ok(validate::Validator::inconsistencies(
            self, q.status, q.limit, q.after,
        ))
    }

    fn open_inconsistencies(&self) -> u64 {
        self.open_count()
    }

    fn detail(&self) -> Option<validate::ValidationStatus> {
        Some(self.status())
    }

    fn recheck_dirty(&self, records: Vec<DirtyRecord>) -> BoxFuture<'_, ()> {
        Box::pin(recheck_records(self, records))
    }
}

/// Dirty records with a known key go to the validator's re-verification
/// queue (`validate::capture`, the queue binlog change capture feeds): the
/// row is re-checked after `recheck_delay_ms` (repaired with `auto_fix`). A
/// record without a key (a trigger's or stored function's target table)
/// gets a chunked re-check of the whole table. What still differs is
/// recorded as open events (which block an authority move) and, with
/// `auto_fix`, repaired at once.
async fn recheck_records(v: &validate::Validator, records: Vec<DirtyRecord>) {
    let mut keyed = Vec::new();
    let mut tables = BTreeSet::new();
    for r in records {
        let Some(table) = r.table.as_deref().map(plain_table) else {
            continue;
        };
        match r.key {
            Some(key) => keyed.push(validate::capture::DirtyKey {
                table,
                key: Some(key),
                reason: r.reason,
            }),
            None => {
                tables.insert(table);
            }
        }
    }
    v.enqueue_dirty(keyed);
    let mut found = false;
    for t in tables {
        match v.recheck_table(&t).await {
            Ok(0) => {}
            Ok(n) => {
                warn!(table = %t, rows = n, "table re-check after an unsafe statement found differences");
                found = true;
            }
            Err(e) => warn!(table = %t, "table re-check failed: {e}"),
        }
    }
    if found && v.config().validation.auto_fix {
        match validate::Validator::fix_open(v).await {
            Ok(r) => info!(?r, "auto_fix repaired re-checked tables"),
            Err(e) => warn!("auto_fix after a table re-check failed: {e}"),
        }
    }
}

/// Drain the data path's dirty records every 500 ms and hand them to the
/// validator, until `stop` is cancelled.
pub async fn consume_dirty(
    v: Arc<dyn ValidationService>,
    stats: Arc<DataPathStats>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.cancelled() => return,
        }
        let records = stats.dirty.drain();
        if !records.is_empty() {
            v.recheck_dirty(records).await;
        }
    }
}

/// `shop.orders` / `` `orders` `` → `orders` (the validator works in the
/// configured database).
fn plain_table(t: &str) -> String {
    t.rsplit('.')
        .next()
        .unwrap_or(t)
        .trim_matches('`')
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_table_names() {
        assert_eq!(super::plain_table("shop.orders"), "orders");
        assert_eq!(super::plain_table("`m`"), "m");
    }
}
