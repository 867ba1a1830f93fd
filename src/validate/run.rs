//! A run's context: what the full and incremental drivers share (the two
//! sides, the live report, stop flag, event recording with the per-run cap).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::config::ValidationConfig;

use super::db::Db;
use super::events::{self, Direction, EventStatus};
use super::progress::{Outcome, RunReport};
use super::{now_ms, utc_text, Inner, RunId, ValidateError};

/// What a run needs; shared by the full and incremental drivers.
pub(crate) struct RunCtx {
    pub inner: Arc<Inner>,
    pub cfg: ValidationConfig,
    pub base: Db,
    pub target: Db,
    pub direction: Direction,
    pub run_id: RunId,
    pub fix: bool,
    pub stop: watch::Receiver<bool>,
    pub live: Arc<Mutex<RunReport>>,
    pub data_dir: PathBuf,
    pub(super) events_recorded: AtomicU64,
    pub(super) events_dropped: AtomicU64,
}

impl RunCtx {
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Mutate the live report.
    pub fn update<R>(&self, f: impl FnOnce(&mut RunReport) -> R) -> R {
        let mut g = self.live.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn direction_label(&self) -> &'static str {
        self.direction.as_str()
    }

    /// Count findings (metrics, counters, table tally) and record them as
    /// events with `status` (open, or fixed when the run already repaired
    /// them); at most `max_events_per_run` per run are written.
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
        self.inner
            .discrepancies
            .fetch_add(findings.len() as u64, Ordering::Relaxed);
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
        }
        let new = self
            .inner
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(findings, self.direction, self.run_id, status)?;
        self.events_recorded
            .fetch_add(new.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn finish(&self, outcome: Outcome, error: Option<String>) -> RunReport {
        self.update(|r| {
            r.outcome = outcome;
            r.error = error;
            r.finished_at = Some(utc_text(now_ms()));
            r.events_recorded = self.events_recorded.load(Ordering::Relaxed);
            r.events_dropped = self.events_dropped.load(Ordering::Relaxed);
            for t in &mut r.tables {
                t.refresh();
            }
            r.recompute_totals();
            r.clone()
        })
    }
}
