//! A run's life: its context (what the full and incremental drivers share:
//! the two sides, the live report, the stop token, event recording with the
//! per-run cap), how it is spawned and registered, stopped and awaited, and
//! what it does with the differences it finds ([`RunCtx::settle`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::ValidationConfig;

use super::db::Db;
use super::diff::{recheck, RowDiff, KEY_BATCH};
use super::events::{self, Direction, EventStatus, Finding, Kind};
use super::keyset::{key_to_json, Key};
use super::progress::{Mode, Outcome, RunReport, Tally};
use super::schema::TableInfo;
use super::storage::ValidationStorage;
use super::{fix, lock, now_ms, utc_text, Inner, RunId, ValidateError, Validator};

/// What a run needs; shared by the full and incremental drivers.
pub(crate) struct RunCtx {
    pub inner: Arc<Inner>,
    pub cfg: ValidationConfig,
    pub base: Db,
    pub target: Db,
    pub direction: Direction,
    pub run_id: RunId,
    pub fix: bool,
    /// Cancelled when the run is asked to stop (after the current chunk).
    pub stop: CancellationToken,
    pub live: Arc<Mutex<RunReport>>,
    /// Where the checkpoint is saved.
    pub storage: Arc<dyn ValidationStorage>,
    events_recorded: AtomicU64,
    events_dropped: AtomicU64,
    events_already_open: AtomicU64,
    /// Tables where this run dropped findings (cap reached).
    dropped_tables: Mutex<BTreeSet<String>>,
}

/// A run in progress: how to stop it, what it is doing, how it ended.
pub(super) struct RunSlot {
    stop: CancellationToken,
    live: Arc<Mutex<RunReport>>,
    done: watch::Receiver<Option<RunReport>>,
}

impl RunSlot {
    pub(super) fn running(&self) -> bool {
        self.done.borrow().is_none()
    }
}

/// The live report of the run in `slot`, if one runs.
pub(super) fn live(slot: &Mutex<Option<RunSlot>>) -> Option<RunReport> {
    let g = lock(slot);
    let s = g.as_ref().filter(|s| s.running())?;
    let mut r = lock(&s.live).clone();
    for t in &mut r.tables {
        t.refresh();
    }
    r.recompute_totals();
    Some(r)
}

fn empty_report(run_id: RunId, mode: Mode, direction: Direction, fix: bool) -> RunReport {
    RunReport {
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
        found: 0,
        remaining: 0,
        events_recorded: 0,
        events_dropped: 0,
        events_already_open: 0,
        passes: 0,
        backoffs: 0,
    }
}

impl Validator {
    fn new_ctx(
        &self,
        mode: Mode,
        fix: bool,
        run_id: Option<RunId>,
    ) -> Result<RunCtx, ValidateError> {
        let (base, target, direction) = self.sides()?;
        let run_id = run_id.unwrap_or_else(|| self.next_run_id());
        Ok(RunCtx {
            inner: self.inner.clone(),
            cfg: self.inner.cfg.validation.clone(),
            base,
            target,
            direction,
            run_id,
            fix,
            stop: CancellationToken::new(),
            live: Arc::new(Mutex::new(empty_report(run_id, mode, direction, fix))),
            storage: Arc::clone(&self.inner.storage),
            events_recorded: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            events_already_open: AtomicU64::new(0),
            dropped_tables: Mutex::new(BTreeSet::new()),
        })
    }

    fn slot(&self, mode: Mode) -> &Mutex<Option<RunSlot>> {
        match mode {
            Mode::Full => &self.inner.full,
            Mode::Incremental => &self.inner.incr,
        }
    }

    /// Spawn a run (inside a `validation` span) and register it in its slot.
    /// `run_id`: the id of the run being resumed, if any.
    pub(super) fn spawn_run<F, Fut>(
        &self,
        mode: Mode,
        fix: bool,
        run_id: Option<RunId>,
        run: F,
    ) -> Result<RunId, ValidateError>
    where
        F: FnOnce(Arc<RunCtx>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<Outcome, ValidateError>> + Send + 'static,
    {
        let what = match mode {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        };
        let mut slot = lock(self.slot(mode));
        if slot.as_ref().is_some_and(|s| s.running()) {
            return Err(ValidateError::AlreadyRunning(what));
        }
        let ctx = Arc::new(self.new_ctx(mode, fix, run_id)?);
        let run_id = ctx.run_id;
        let (done_tx, done_rx) = watch::channel(None);
        *slot = Some(RunSlot {
            stop: ctx.stop.clone(),
            live: ctx.live.clone(),
            done: done_rx,
        });
        let span = tracing::info_span!("validation", run = %run_id, mode = what);
        tokio::spawn(
            async move {
                tracing::info!(
                    direction = ctx.direction_label(),
                    fix,
                    "validation run started"
                );
                let report = ctx.execute(run).await;
                let _ = done_tx.send(Some(report));
            }
            .instrument(span),
        );
        Ok(run_id)
    }

    pub(super) async fn stop_slot(&self, mode: Mode) -> Option<RunReport> {
        let mut done = {
            let g = lock(self.slot(mode));
            let s = g.as_ref()?;
            s.stop.cancel();
            s.done.clone()
        };
        let r = done.wait_for(|d| d.is_some()).await.ok()?.clone();
        r
    }

    pub(super) async fn wait_slot(&self, mode: Mode) -> Option<RunReport> {
        let mut done = lock(self.slot(mode)).as_ref()?.done.clone();
        let r = done.wait_for(|d| d.is_some()).await.ok()?.clone();
        r
    }
}

impl RunCtx {
    /// Run `run` to its end and publish the report (last run, last error,
    /// tables whose differences are now all recorded or repaired).
    async fn execute<F, Fut>(self: Arc<Self>, run: F) -> RunReport
    where
        F: FnOnce(Arc<RunCtx>) -> Fut,
        Fut: std::future::Future<Output = Result<Outcome, ValidateError>>,
    {
        let report = match run(self.clone()).await {
            Ok(outcome) => self.finish(outcome, None),
            Err(e) => {
                tracing::warn!("validation run failed: {e}");
                *lock(&self.inner.last_error) = Some(e.to_string());
                self.finish(Outcome::Failed, Some(e.to_string()))
            }
        };
        tracing::info!(
            outcome = ?report.outcome,
            rows = report.totals.rows_checked,
            found = report.found,
            repaired = report.totals.repaired,
            "validation run ended"
        );
        if report.outcome == Outcome::Completed {
            let dropped = lock(&self.dropped_tables);
            for t in report.tables.iter().filter(|t| t.done) {
                if self.fix || !dropped.contains(&t.table) {
                    self.inner.clear_unrecorded(&t.table);
                }
            }
        }
        self.base.clone().disconnect().await;
        self.target.clone().disconnect().await;
        let last = match report.mode {
            Mode::Full => &self.inner.last_full,
            Mode::Incremental => &self.inner.last_incr,
        };
        *lock(last) = Some(report.clone());
        report
    }

    pub fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Mutate the live report.
    pub fn update<R>(&self, f: impl FnOnce(&mut RunReport) -> R) -> R {
        let mut g = lock(&self.live);
        f(&mut g)
    }

    pub fn direction_label(&self) -> &'static str {
        self.direction.as_str()
    }

    /// Count findings (metrics, table tally) and record them as events with
    /// `status` (open, or fixed when the run already repaired them); at most
    /// `max_events_per_run` per run are written, and a row that already has
    /// an open event is not recorded again.
    pub fn found(
        &self,
        table: &str,
        findings: Vec<events::Finding>,
        status: EventStatus,
    ) -> Result<(), ValidateError> {
        if findings.is_empty() {
            return Ok(());
        }
        for f in &findings {
            metrics::counter!("cutover_inconsistencies_total", "kind" => f.kind.as_str())
                .increment(1);
        }
        self.update(|r| {
            if let Some(tp) = r.table_mut(table) {
                for f in &findings {
                    tp.tally.add_kind(f.kind, 1);
                }
            }
        });
        let room = (self.cfg.max_events_per_run as u64)
            .saturating_sub(self.events_recorded.load(Ordering::Relaxed));
        let mut findings = findings;
        if findings.len() as u64 > room {
            let dropped = findings.len() as u64 - room;
            findings.truncate(room as usize);
            self.events_dropped.fetch_add(dropped, Ordering::Relaxed);
            lock(&self.dropped_tables).insert(table.to_string());
            self.inner.mark_unrecorded(table);
        }
        let asked = findings.len() as u64;
        let new = self
            .inner
            .events()
            .record(findings, self.direction, self.run_id, status)?;
        self.events_recorded
            .fetch_add(new.len() as u64, Ordering::Relaxed);
        self.events_already_open
            .fetch_add(asked - new.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// A backfill copied `rows` into an empty range of `table`: counted as
    /// found (`target_missing`) and repaired; no per-row events are written.
    pub fn backfilled(&self, table: &str, rows: u64) {
        self.update(|r| {
            if let Some(tp) = r.table_mut(table) {
                tp.tally.add_kind(Kind::TargetMissing, rows);
                tp.tally.repaired += rows;
            }
        });
        metrics::counter!("cutover_inconsistencies_total", "kind" => Kind::TargetMissing.as_str())
            .increment(rows);
    }

    /// What to do with a batch of differences a run found: repair them (fix
    /// enabled) or, after a short re-check that filters writes in flight
    /// between the two sides, record them as open events.
    pub async fn settle(&self, t: &TableInfo, diffs: Vec<RowDiff>) -> Result<(), ValidateError> {
        if diffs.is_empty() {
            return Ok(());
        }
        let finding = |d: &RowDiff| Finding {
            table: t.name.clone(),
            pk: key_to_json(&t.pk, &d.key),
            kind: d.kind,
        };
        if self.fix {
            let keys: Vec<Key> = diffs.iter().map(|d| d.key.clone()).collect();
            let mut repaired = Vec::new();
            for batch in keys.chunks(KEY_BATCH) {
                for (key, was) in fix::fix_keys(&self.base, &self.target, t, batch).await? {
                    if let Some(kind) = was {
                        repaired.push(RowDiff { key, kind });
                    }
                }
            }
            let n = repaired.len() as u64;
            self.found(
                &t.name,
                repaired.iter().map(finding).collect(),
                EventStatus::Fixed,
            )?;
            self.update(|r| {
                if let Some(tp) = r.table_mut(&t.name) {
                    tp.tally.repaired += n;
                }
            });
            return Ok(());
        }
        let delay = self.cfg.recheck_delay_ms;
        let diffs = if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            recheck(&self.base, &self.target, t, diffs).await?
        } else {
            diffs
        };
        self.found(
            &t.name,
            diffs.iter().map(finding).collect(),
            EventStatus::Open,
        )
    }

    pub(super) fn finish(&self, outcome: Outcome, error: Option<String>) -> RunReport {
        self.update(|r| {
            r.outcome = outcome;
            r.error = error;
            r.finished_at = Some(utc_text(now_ms()));
            r.events_recorded = self.events_recorded.load(Ordering::Relaxed);
            r.events_dropped = self.events_dropped.load(Ordering::Relaxed);
            r.events_already_open = self.events_already_open.load(Ordering::Relaxed);
            for t in &mut r.tables {
                t.refresh();
            }
            r.recompute_totals();
            r.clone()
        })
    }
}
