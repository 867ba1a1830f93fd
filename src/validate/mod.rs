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
pub mod storage;
mod targeted;
mod throttle;
mod tls;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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
    #[error("unknown table(s): {} (not a base table on the source or the destination)", .0.join(", "))]
    UnknownTables(Vec<String>),
    /// One writer per data directory (events, checkpoint).
    #[error("data_dir {path} is in use by another cutover process ({holder}); \
             with a running `cutover serve`, use `cutover ctl validate` (it goes through the server)")]
    DataDirLocked { path: String, holder: String },
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

pub(crate) struct Inner {
    cfg: Arc<Config>,
    pattern: PatternHandle,
    storage: Arc<dyn storage::ValidationStorage>,
    /// Where change capture keeps its binlog position (`capture/position.rs`).
    data_dir: PathBuf,
    events: Mutex<events::EventStore>,
    full: Mutex<Option<run::RunSlot>>,
    incr: Mutex<Option<run::RunSlot>>,
    last_full: Mutex<Option<RunReport>>,
    last_incr: Mutex<Option<RunReport>>,
    last_error: Mutex<Option<String>>,
    last_run_id: AtomicU64,
    /// Tables where a run found more differences than `max_events_per_run`
    /// let it record: `/fix` cannot repair those from events alone.
    unrecorded: Mutex<BTreeSet<String>>,
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
            .field("storage", &self.inner.storage.describe())
            .finish()
    }
}

/// How a full run was started (see [`Validator::begin_full`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullStart {
    pub run_id: RunId,
    /// Continues a stopped or crashed run from its checkpoint.
    pub resumed: bool,
    /// The tables the run covers (`None`: the configured scope).
    pub tables: Option<Vec<String>>,
    /// What differs from the request, in words.
    pub note: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Validator {
    /// Opens (and loads) the event store under `cfg.data_dir`, taking the
    /// data directory's lock: one writer per `data_dir`.
    ///
    /// # Errors
    /// [`ValidateError::DataDirLocked`] when another process (a running
    /// `cutover serve`, another `cutover validate`) holds it;
    /// [`ValidateError::Io`] when the directory or event file cannot be opened.
    pub fn new(cfg: Arc<Config>, pattern: PatternHandle) -> Result<Validator, ValidateError> {
        let storage = Arc::new(storage::DataDir::open(&cfg.data_dir)?);
        Validator::with_storage(cfg, pattern, storage)
    }

    /// A validator keeping its checkpoint and events in `storage` (a fleet's
    /// coordinator, so a new leader resumes where the last one stopped).
    ///
    /// # Errors
    /// [`ValidateError::Io`] when the event journal cannot be read.
    pub fn with_storage(
        cfg: Arc<Config>,
        pattern: PatternHandle,
        storage: Arc<dyn storage::ValidationStorage>,
    ) -> Result<Validator, ValidateError> {
        let events = events::EventStore::load_from(Arc::clone(&storage))?;
        let capture = capture::Capture::new(&cfg.validation);
        let data_dir = cfg.data_dir.clone();
        Ok(Validator {
            inner: Arc::new(Inner {
                cfg,
                pattern,
                storage,
                data_dir,
                events: Mutex::new(events),
                full: Mutex::new(None),
                incr: Mutex::new(None),
                last_full: Mutex::new(None),
                last_incr: Mutex::new(None),
                last_error: Mutex::new(None),
                last_run_id: AtomicU64::new(0),
                unrecorded: Mutex::new(BTreeSet::new()),
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

    /// The authoritative side's direction under the current pattern.
    fn direction(&self) -> Direction {
        match self.inner.pattern.load().primary() {
            Side::Source => Direction::Src,
            Side::Destination => Direction::Dst,
        }
    }

    /// (base, target, direction) from the current pattern.
    fn sides(&self) -> Result<(Db, Db, Direction), ValidateError> {
        let base = self.inner.pattern.load().primary();
        let cfg = &self.inner.cfg;
        let side_cfg = |s: Side| match s {
            Side::Source => &cfg.source,
            Side::Destination => &cfg.destination,
        };
        let checksum = cfg.validation.checksum;
        Ok((
            Db::open(base, side_cfg(base))?
                .with_checksum(checksum)
                .with_ddl_defaults(cfg.mirror.ddl_defaults),
            Db::open(base.other(), side_cfg(base.other()))?.with_checksum(checksum),
            self.direction(),
        ))
    }

    /// Start a full run in the background and say how it proceeds: it
    /// resumes the checkpoint of a stopped or crashed run (over that run's
    /// tables) unless `restart`, and says so in `note` when that differs
    /// from the request.
    ///
    /// # Errors
    /// [`ValidateError::UnknownTables`] (nothing starts) when `tables` names
    /// a table that is on neither side; [`ValidateError::AlreadyRunning`];
    /// connect/query errors of that check.
    pub async fn begin_full(
        &self,
        tables: Option<Vec<String>>,
        fix: bool,
        restart: bool,
    ) -> Result<FullStart, ValidateError> {
        if let Some(names) = tables.as_deref() {
            let (base, target, _) = self.sides()?;
            let unknown = schema::unknown_tables(&base, &target, names).await;
            base.disconnect().await;
            target.disconnect().await;
            let unknown = unknown?;
            if !unknown.is_empty() {
                return Err(ValidateError::UnknownTables(unknown));
            }
        }
        if self.full_running() {
            return Err(ValidateError::AlreadyRunning("full"));
        }
        if restart {
            checkpoint::remove(self.inner.storage.as_ref());
        }
        let saved = checkpoint::load(self.inner.storage.as_ref());
        let resumable = saved.filter(|c| c.direction == self.direction());
        let plan = full::resume_plan(resumable.as_ref(), tables, fix);
        let run_id = self.spawn_run(Mode::Full, fix, plan.run_id, {
            let requested = plan.tables.clone();
            move |ctx| full::run(ctx, requested)
        })?;
        Ok(FullStart {
            run_id,
            resumed: plan.run_id.is_some(),
            tables: plan.tables,
            note: plan.note,
        })
    }

    fn full_running(&self) -> bool {
        lock(&self.inner.full).as_ref().is_some_and(|s| s.running())
    }

    /// Start a full run in the background. Resumes the checkpoint of a
    /// stopped or crashed run unless `restart`. Fixes when `fix` or
    /// `[validation] auto_fix`.
    ///
    /// # Errors
    /// As [`Validator::begin_full`].
    pub async fn start_full(
        &self,
        tables: Option<Vec<String>>,
        fix: bool,
        restart: bool,
    ) -> Result<RunId, ValidateError> {
        let fix = fix || self.inner.cfg.validation.auto_fix;
        Ok(self.begin_full(tables, fix, restart).await?.run_id)
    }

    /// Ask the running full run to stop after its current chunk and wait for
    /// it (its checkpoint is saved). No-op when none runs.
    pub async fn stop_full_run(&self) {
        self.stop_slot(Mode::Full).await;
    }

    /// Wait for the current (or last started) full run to end; its report.
    pub async fn wait_full(&self) -> Option<RunReport> {
        self.wait_slot(Mode::Full).await
    }

    /// Ask the running full run to stop after its current chunk and wait for
    /// it (its checkpoint is saved). No-op when none runs.
    ///
    /// # Errors
    /// None today; kept fallible for stores that can fail.
    pub async fn stop_full(&self) -> Result<(), ValidateError> {
        self.stop_full_run().await;
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
        self.spawn_run(Mode::Incremental, fix, None, move |ctx| {
            incremental::run(ctx, None, since_utime_ms, interval_ms)
        })
    }

    /// Stop incremental validation and wait for it. No-op when none runs.
    ///
    /// # Errors
    /// None today; kept fallible for stores that can fail.
    pub async fn stop_incremental(&self) -> Result<(), ValidateError> {
        self.stop_slot(Mode::Incremental).await;
        Ok(())
    }

    /// Run a full validation from scratch and wait for its report (the
    /// CLI). Fixes only when `fix`.
    ///
    /// # Errors
    /// As [`Validator::begin_full`]; a run that starts and then fails
    /// returns `Ok` with `outcome: failed`.
    pub async fn run_full_to_completion(
        &self,
        tables: Option<Vec<String>>,
        fix: bool,
    ) -> Result<RunReport, ValidateError> {
        self.begin_full(tables, fix, true).await?;
        self.wait_full()
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
        self.spawn_run(Mode::Incremental, fix, None, move |ctx| {
            incremental::run(ctx, tables, since_utime_ms, None)
        })?;
        self.wait_slot(Mode::Incremental)
            .await
            .ok_or(ValidateError::Config("validation task vanished".into()))
    }

    /// Live runs, finished-run summaries and open events (`validation_detail`).
    pub fn status(&self) -> ValidationStatus {
        let i = &self.inner;
        ValidationStatus {
            full: run::live(&i.full),
            incremental: run::live(&i.incr),
            last_full: lock(&i.last_full).clone(),
            last_incremental: lock(&i.last_incr).clone(),
            open_inconsistencies: self.open_count(),
            last_error: lock(&i.last_error).clone(),
            change_capture: i.capture.status(),
        }
    }

    /// Events still open (neither fixed nor obsolete).
    pub fn open_count(&self) -> u64 {
        self.inner.events().open_count() as u64
    }

    /// Events with id > `after`, oldest first.
    pub fn inconsistencies(
        &self,
        status: Option<EventStatus>,
        limit: usize,
        after: Option<u64>,
    ) -> Vec<Inconsistency> {
        self.inner.events().list(status, limit, after)
    }

    /// Repair every open event from the current authoritative side. The
    /// report names the tables whose differences were not all recorded as
    /// events (`max_events_per_run`): a full run with fix finishes those.
    ///
    /// # Errors
    /// Connect/query errors; [`ValidateError::Io`] when the event file
    /// cannot be appended.
    pub async fn fix_open(&self) -> Result<FixReport, ValidateError> {
        let (base, target, _) = self.sides()?;
        let open = self.inner.events().open_events();
        let result = fix::fix_events(&base, &target, &self.inner, open).await;
        base.disconnect().await;
        target.disconnect().await;
        match result {
            Ok(mut report) => {
                report.unrecorded_tables = lock(&self.inner.unrecorded).iter().cloned().collect();
                Ok(report)
            }
            Err(e) => {
                *lock(&self.inner.last_error) = Some(e.to_string());
                Err(e)
            }
        }
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

    /// Compare a whole table now (chunked, see `targeted.rs`): the re-check
    /// of a table a trigger or stored function may have diverged. Records
    /// an open event per differing row (unless one is open already);
    /// returns how many were recorded.
    ///
    /// # Errors
    /// [`ValidateError::Table`] when the table cannot be validated;
    /// connect/query errors.
    pub async fn recheck_table(&self, table: &str) -> Result<u64, ValidateError> {
        let (base, target, direction) = self.sides()?;
        let run_id = self.next_run_id();
        let result =
            targeted::recheck_table(&base, &target, &self.inner, direction, table, run_id).await;
        base.disconnect().await;
        target.disconnect().await;
        result
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
        lock(&self.events)
    }

    pub(crate) fn validation_cfg(&self) -> &ValidationConfig {
        &self.cfg.validation
    }

    /// Remember that `table` has differences no event records.
    pub(crate) fn mark_unrecorded(&self, table: &str) {
        lock(&self.unrecorded).insert(table.to_string());
    }

    /// Every difference of `table` is recorded or repaired now.
    pub(crate) fn clear_unrecorded(&self, table: &str) {
        lock(&self.unrecorded).remove(table);
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
