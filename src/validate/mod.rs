//! Validation and repair: prove the two databases hold the same rows, record
//! every difference as a durable event, and make the target equal to the base.
//!
//! Part of the control plane: it talks to the backends directly (its own small
//! `mysql_async` pools) and reads only the [`PatternHandle`] to learn which
//! side is authoritative. The data path never imports it.
//!
//! - [`Validator::start_full`] / [`Validator::run_full_to_completion`]: chunked
//!   checksums by primary key, drill-down of differing chunks (`full.rs`, `diff.rs`).
//! - [`Validator::start_incremental`]: keyset on (utime, pk), tailing (`incremental.rs`).
//! - [`Validator::fix_open`]: repair open events under the base row lock (`fix.rs`).
//!
//! See docs/VALIDATION.md for the algorithm and its guarantees.

pub mod capture;
mod checkpoint;
mod checksum;
pub mod cli;
mod db;
mod diff;
mod drill;
pub mod events;
mod fix;
mod full;
pub mod hash;
mod incremental;
mod intrange;
pub mod keyset;
pub mod progress;
mod run;
pub mod schema;
mod throttle;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{Config, ValidationConfig};
use crate::pattern::{PatternHandle, Side};

use db::Db;
pub use events::{Direction, EventStatus, Inconsistency, Kind};
pub use fix::FixReport;
pub use progress::{Mode, Outcome, RunReport, TableProgress, Tally, ValidationStatus};
pub(crate) use run::RunCtx;
pub use schema::Skipped;

/// Identifies one run (milliseconds since the epoch at its start, made unique).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub u64);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("{0}")]
    Config(String),
    #[error("cannot connect to the {side}: {source}")]
    Connect {
        side: Side,
        #[source]
        source: mysql_async::Error,
    },
    #[error("query on the {side} failed: {source} [{sql}]")]
    Query {
        side: Side,
        sql: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a {0} validation run is already in progress")]
    AlreadyRunning(&'static str),
    #[error("table `{table}` cannot be validated: {reason}")]
    Table { table: String, reason: String },
    #[error("bad primary key for `{table}`: {message}")]
    BadKey { table: String, message: String },
}

impl ValidateError {
    pub(crate) fn io(path: &Path, e: std::io::Error) -> ValidateError {
        ValidateError::Io {
            path: path.display().to_string(),
            source: e,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for a Unix time in milliseconds.
pub(crate) fn utc_text(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A run in progress: how to stop it, what it is doing, how it ended.
struct RunSlot {
    stop: watch::Sender<bool>,
    live: Arc<Mutex<RunReport>>,
    done: watch::Receiver<Option<RunReport>>,
}

impl RunSlot {
    fn running(&self) -> bool {
        self.done.borrow().is_none()
    }
}

pub(crate) struct Inner {
    cfg: Arc<Config>,
    pattern: PatternHandle,
    data_dir: PathBuf,
    events: Mutex<events::EventStore>,
    full: Mutex<Option<RunSlot>>,
    incr: Mutex<Option<RunSlot>>,
    last_full: Mutex<Option<RunReport>>,
    last_incr: Mutex<Option<RunReport>>,
    full_runs: AtomicU64,
    incr_runs: AtomicU64,
    discrepancies: AtomicU64,
    last_error: Mutex<Option<String>>,
    last_run_id: AtomicU64,
    /// Binlog change capture and the re-verification queue (`capture/`).
    capture: capture::Capture,
}

/// The validator: cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("data_dir", &self.inner.data_dir)
            .finish()
    }
}

impl Validator {
    /// Opens (and loads) the event store under `cfg.data_dir`.
    pub fn new(cfg: Arc<Config>, pattern: PatternHandle) -> Result<Validator, ValidateError> {
        let data_dir = cfg.data_dir.clone();
        let events = events::EventStore::open(&data_dir)?;
        let capture = capture::Capture::new(&cfg.validation);
        Ok(Validator {
            inner: Arc::new(Inner {
                cfg,
                pattern,
                data_dir,
                events: Mutex::new(events),
                full: Mutex::new(None),
                incr: Mutex::new(None),
                last_full: Mutex::new(None),
                last_incr: Mutex::new(None),
                full_runs: AtomicU64::new(0),
                incr_runs: AtomicU64::new(0),
                discrepancies: AtomicU64::new(0),
                last_error: Mutex::new(None),
                last_run_id: AtomicU64::new(0),
                capture,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    fn next_run_id(&self) -> RunId {
        let now = now_ms().max(0) as u64;
        let prev = self
            .inner
            .last_run_id
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(0);
        RunId(now.max(prev + 1))
    }

    /// (base, target, direction) from the current pattern.
    fn sides(&self) -> Result<(Db, Db, Direction), ValidateError> {
        let base = self.inner.pattern.load().primary();
        let cfg = &self.inner.cfg;
        let side_cfg = |s: Side| match s {
            Side::Source => &cfg.source,
            Side::Destination => &cfg.destination,
        };
        let direction = match base {
            Side::Source => Direction::Src,
            Side::Destination => Direction::Dst,
        };
        let checksum = cfg.validation.checksum;
        Ok((
            Db::open(base, side_cfg(base))?.with_checksum(checksum),
            Db::open(base.other(), side_cfg(base.other()))?.with_checksum(checksum),
            direction,
        ))
    }

    fn new_ctx(
        &self,
        mode: Mode,
        fix: bool,
        run_id: Option<RunId>,
    ) -> Result<(RunCtx, watch::Sender<bool>), ValidateError> {
        let (base, target, direction) = self.sides()?;
        let run_id = run_id.unwrap_or_else(|| self.next_run_id());
        let (stop_tx, stop_rx) = watch::channel(false);
        let live = Arc::new(Mutex::new(RunReport {
            run_id,
            mode,
            direction,
            fix,
            started_at: utc_text(now_ms()),
            finished_at: None,
            outcome: Outcome::Running,
            error: None,
            tables: Vec::new(),
            skipped: Vec::new(),
            totals: Tally::default(),
            events_recorded: 0,
            events_dropped: 0,
            passes: 0,
            backoffs: 0,
        }));
        Ok((
            RunCtx {
                inner: self.inner.clone(),
                cfg: self.inner.cfg.validation.clone(),
                base,
                target,
                direction,
                run_id,
                fix,
                stop: stop_rx,
                live,
                data_dir: self.inner.data_dir.clone(),
                events_recorded: AtomicU64::new(0),
                events_dropped: AtomicU64::new(0),
            },
            stop_tx,
        ))
    }

    /// Spawn a run in the background and register it in `slot`.
    fn spawn_run<F, Fut>(&self, mode: Mode, fix: bool, run: F) -> Result<RunId, ValidateError>
    where
        F: FnOnce(Arc<RunCtx>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Outcome, ValidateError>> + Send + 'static,
    {
        let (slot_mx, counter, what) = match mode {
            Mode::Full => (&self.inner.full, &self.inner.full_runs, "full"),
            Mode::Incremental => (&self.inner.incr, &self.inner.incr_runs, "incremental"),
        };
        let mut slot = slot_mx.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|s| s.running()) {
            return Err(ValidateError::AlreadyRunning(what));
        }
        let resume_id = match mode {
            Mode::Full => full::resume_id(&self.inner.data_dir, fix),
            Mode::Incremental => None,
        };
        let (ctx, stop) = self.new_ctx(mode, fix, resume_id)?;
        let run_id = ctx.run_id;
        counter.fetch_add(1, Ordering::Relaxed);
        let live = ctx.live.clone();
        let (done_tx, done_rx) = watch::channel(None);
        let inner = self.inner.clone();
        let ctx = Arc::new(ctx);
        tokio::spawn(async move {
            let span = tracing::info_span!("validation", run = %run_id, mode = what);
            let _ = span;
            tracing::info!(run = %run_id, mode = what, direction = ctx.direction_label(), fix, "validation run started");
            let result = run(ctx.clone()).await;
            let report = match result {
                Ok(outcome) => ctx.finish(outcome, None),
                Err(e) => {
                    tracing::warn!(run = %run_id, "validation run failed: {e}");
                    *inner.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(e.to_string());
                    ctx.finish(Outcome::Failed, Some(e.to_string()))
                }
            };
            tracing::info!(
                run = %run_id,
                outcome = ?report.outcome,
                rows = report.totals.rows_checked,
                found = report.totals.found(),
                repaired = report.totals.repaired,
                "validation run ended"
            );
            ctx.base.clone().disconnect().await;
            ctx.target.clone().disconnect().await;
            let last = match report.mode {
                Mode::Full => &inner.last_full,
                Mode::Incremental => &inner.last_incr,
            };
            *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
            let _ = done_tx.send(Some(report));
        });
        *slot = Some(RunSlot {
            stop,
            live,
            done: done_rx,
        });
        Ok(run_id)
    }

    async fn stop_slot(&self, mode: Mode) -> Option<RunReport> {
        let slot = match mode {
            Mode::Full => &self.inner.full,
            Mode::Incremental => &self.inner.incr,
        };
        let mut done = {
            let g = slot.lock().unwrap_or_else(|p| p.into_inner());
            let s = g.as_ref()?;
            let _ = s.stop.send(true);
            s.done.clone()
        };
        let r = done.wait_for(|d| d.is_some()).await.ok()?.clone();
        r
    }

    async fn wait_slot(&self, mode: Mode) -> Option<RunReport> {
        let slot = match mode {
            Mode::Full => &self.inner.full,
            Mode::Incremental => &self.inner.incr,
        };
        let mut done = slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()?
            .done
            .clone();
        let r = done.wait_for(|d| d.is_some()).await.ok()?.clone();
        r
    }

    /// Start a full run in the background. Resumes the checkpoint of a
    /// stopped or crashed run unless `restart`. Fixes when `fix` or
    /// `[validation] auto_fix`.
    pub async fn start_full(
        &self,
        tables: Option<Vec<String>>,
        fix: bool,
        restart: bool,
    ) -> Result<RunId, ValidateError> {
        let fix = fix || self.inner.cfg.validation.auto_fix;
        self.start_full_exact(tables, fix, restart)
    }

    fn start_full_exact(
        &self,
        tables: Option<Vec<String>>,
        fix: bool,
        restart: bool,
    ) -> Result<RunId, ValidateError> {
        if restart {
            if self
                .inner
                .full
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|s| s.running())
            {
                return Err(ValidateError::AlreadyRunning("full"));
            }
            checkpoint::remove(&self.inner.data_dir);
        }
        self.spawn_run(Mode::Full, fix, move |ctx| full::run(ctx, tables))
    }

    /// Ask the running full run to stop after its current chunk and wait for
    /// it (its checkpoint is saved). No-op when none runs.
    pub async fn stop_full(&self) -> Result<(), ValidateError> {
        self.stop_slot(Mode::Full).await;
        Ok(())
    }

    /// Start incremental validation of rows whose update time is ≥
    /// `since_utime_ms`; with `interval_ms` it keeps tailing until stopped.
    /// Fixes when `fix` or `[validation] auto_fix`.
    pub async fn start_incremental(
        &self,
        since_utime_ms: i64,
        interval_ms: Option<u64>,
        fix: bool,
    ) -> Result<RunId, ValidateError> {
        let fix = fix || self.inner.cfg.validation.auto_fix;
        self.spawn_run(Mode::Incremental, fix, move |ctx| {
            incremental::run(ctx, None, since_utime_ms, interval_ms)
        })
    }

    pub async fn stop_incremental(&self) -> Result<(), ValidateError> {
        self.stop_slot(Mode::Incremental).await;
        Ok(())
    }

    /// Run a full validation from scratch and wait for its report (for
    /// auto-promotion, auto-migrate and the CLI). Fixes only when `fix`.
    pub async fn run_full_to_completion(
        &self,
        tables: Option<Vec<String>>,
        fix: bool,
    ) -> Result<RunReport, ValidateError> {
        self.start_full_exact(tables, fix, true)?;
        self.wait_slot(Mode::Full)
            .await
            .ok_or(ValidateError::Config("validation task vanished".into()))
    }

    /// Like [`Validator::run_full_to_completion`] but resumes a stopped or
    /// crashed run from its checkpoint (what `POST /full/start` does).
    pub async fn run_full_resuming(
        &self,
        tables: Option<Vec<String>>,
        fix: bool,
    ) -> Result<RunReport, ValidateError> {
        self.start_full_exact(tables, fix, false)?;
        self.wait_slot(Mode::Full)
            .await
            .ok_or(ValidateError::Config("validation task vanished".into()))
    }

    /// One incremental pass (plus its overlap catch-up) over `tables`, waiting
    /// for the report (the CLI's `--since`).
    pub async fn run_incremental_to_completion(
        &self,
        tables: Option<Vec<String>>,
        since_utime_ms: i64,
        fix: bool,
    ) -> Result<RunReport, ValidateError> {
        self.spawn_run(Mode::Incremental, fix, move |ctx| {
            incremental::run(ctx, tables, since_utime_ms, None)
        })?;
        self.wait_slot(Mode::Incremental)
            .await
            .ok_or(ValidateError::Config("validation task vanished".into()))
    }

    fn live(slot: &Mutex<Option<RunSlot>>) -> Option<RunReport> {
        let g = slot.lock().unwrap_or_else(|p| p.into_inner());
        let s = g.as_ref().filter(|s| s.running())?;
        let mut r = s.live.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for t in &mut r.tables {
            t.refresh();
        }
        r.recompute_totals();
        Some(r)
    }

    pub fn status(&self) -> ValidationStatus {
        let i = &self.inner;
        ValidationStatus {
            full: Self::live(&i.full),
            incremental: Self::live(&i.incr),
            last_full: i
                .last_full
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            last_incremental: i
                .last_incr
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            full_validation_runs: i.full_runs.load(Ordering::Relaxed),
            incr_validation_runs: i.incr_runs.load(Ordering::Relaxed),
            data_discrepancies: i.discrepancies.load(Ordering::Relaxed),
            open_inconsistencies: i
                .events
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .open_count() as u64,
            change_capture: i.capture.status(),
            last_error: i
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Events with id > `after`, oldest first.
    pub fn inconsistencies(
        &self,
        status: Option<EventStatus>,
        limit: usize,
        after: Option<u64>,
    ) -> Vec<Inconsistency> {
        self.inner
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .list(status, limit, after)
    }

    /// Repair every open event from the current authoritative side.
    pub async fn fix_open(&self) -> Result<FixReport, ValidateError> {
        let (base, target, _) = self.sides()?;
        let open = self
            .inner
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open_events();
        let result = fix::fix_events(&base, &target, &self.inner, open).await;
        base.disconnect().await;
        target.disconnect().await;
        if let Err(e) = &result {
            *self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        }
        result
    }

    /// Re-check one row of a table whose primary key is a single column
    /// (the data path knows AUTO_INCREMENT ids, not column names).
    /// `Ok(None)` when the row is equal on both sides or the key shape does
    /// not fit.
    pub async fn recheck_key(
        &self,
        table: &str,
        key: u64,
    ) -> Result<Option<Inconsistency>, ValidateError> {
        let (base, target, _) = self.sides()?;
        let found = schema::discover(
            &base,
            &target,
            &[table.to_string()],
            &self.inner.cfg.validation.utime_column,
        )
        .await;
        base.disconnect().await;
        target.disconnect().await;
        let (tables, _) = found?;
        let Some(pk) = tables
            .first()
            .filter(|t| t.pk.len() == 1)
            .map(|t| t.pk[0].clone())
        else {
            return Ok(None);
        };
        let mut obj = serde_json::Map::new();
        obj.insert(pk, serde_json::Value::from(key));
        self.recheck(table, serde_json::Value::Object(obj)).await
    }

    /// Compare one row now. Records an open event when it differs (unless one
    /// is already open) and returns the difference, if any.
    pub async fn recheck(
        &self,
        table: &str,
        pk: serde_json::Value,
    ) -> Result<Option<Inconsistency>, ValidateError> {
        let (base, target, direction) = self.sides()?;
        let result = diff::recheck_one(
            &base,
            &target,
            &self.inner,
            direction,
            table,
            pk,
            self.next_run_id(),
        )
        .await;
        base.disconnect().await;
        target.disconnect().await;
        result
    }
}

impl Inner {
    pub(crate) fn events(&self) -> std::sync::MutexGuard<'_, events::EventStore> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn validation_cfg(&self) -> &ValidationConfig {
        &self.cfg.validation
    }

    pub(crate) fn count_discrepancies(&self, n: u64) {
        self.discrepancies.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_formats() {
        assert_eq!(utc_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_text(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
