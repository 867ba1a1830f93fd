//! What `/status` shows: live per-table progress and finished-run summaries.

use std::time::Instant;

use serde::Serialize;

use super::events::{Direction, Kind};
use super::schema::Skipped;
use super::RunId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Full,
    Incremental,
}

/// Counts of what a run found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Tally {
    pub rows_checked: u64,
    pub target_missing: u64,
    pub base_missing: u64,
    pub neq: u64,
    /// Rows the run made equal (fix enabled).
    pub repaired: u64,
}

impl Tally {
    pub fn found(&self) -> u64 {
        self.target_missing + self.base_missing + self.neq
    }

    pub fn add_kind(&mut self, k: Kind, n: u64) {
        match k {
            Kind::TargetMissing => self.target_missing += n,
            Kind::BaseMissing => self.base_missing += n,
            Kind::Neq => self.neq += n,
        }
    }

    pub fn add(&mut self, o: &Tally) {
        self.rows_checked += o.rows_checked;
        self.target_missing += o.target_missing;
        self.base_missing += o.base_missing;
        self.neq += o.neq;
        self.repaired += o.repaired;
    }
}

/// One table in a run.
#[derive(Debug, Clone, Serialize)]
pub struct TableProgress {
    pub table: String,
    #[serde(flatten)]
    pub tally: Tally,
    /// information_schema's estimate (max of both sides).
    pub estimated_total: u64,
    pub percent: f64,
    pub eta_seconds: Option<f64>,
    pub chunks: u64,
    pub differing_chunks: u64,
    /// Current adaptive chunk size.
    pub chunk_rows: u64,
    pub done: bool,
    /// When this process began working on the table (set by the driver).
    #[serde(skip)]
    pub started: Option<Instant>,
    /// Rows checked before this process resumed the run (not counted in the rate).
    #[serde(skip)]
    pub resumed_rows: u64,
}

impl TableProgress {
    pub fn new(table: &str, estimated_total: u64) -> TableProgress {
        TableProgress {
            table: table.to_string(),
            tally: Tally::default(),
            estimated_total,
            percent: 0.0,
            eta_seconds: None,
            chunks: 0,
            differing_chunks: 0,
            chunk_rows: 0,
            done: false,
            started: None,
            resumed_rows: 0,
        }
    }

    /// Mark the table as being worked on now (ETA is measured from here).
    pub fn begin(&mut self) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
    }

    /// Recompute percent and ETA from the counters.
    pub fn refresh(&mut self) {
        let checked = self.tally.rows_checked;
        let total = self.estimated_total.max(checked);
        if self.done {
            self.percent = 100.0;
            self.eta_seconds = Some(0.0);
            return;
        }
        self.percent = if total == 0 {
            0.0
        } else {
            (checked as f64 * 100.0 / total as f64).min(99.9)
        };
        let secs = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let fresh = checked.saturating_sub(self.resumed_rows);
        self.eta_seconds = (fresh > 0 && secs > 0.0).then(|| {
            let rate = fresh as f64 / secs;
            total.saturating_sub(checked) as f64 / rate
        });
    }
}

/// Whether the run is going, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    Completed,
    Stopped,
    Failed,
}

/// A run: live while it is going, a summary once it ended.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: RunId,
    pub mode: Mode,
    pub direction: Direction,
    pub fix: bool,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub tables: Vec<TableProgress>,
    /// Tables not validated, with the reason (no primary key, schema differs …).
    pub skipped: Vec<Skipped>,
    /// Totals over all tables.
    pub totals: Tally,
    /// Rows found different: `target_missing + base_missing + neq` (each row
    /// once per run). `found = events_recorded + events_dropped +
    /// events_already_open + rows bulk-copied by a backfill`.
    pub found: u64,
    /// What the run left different: `found − repaired`.
    pub remaining: u64,
    /// Events written for this run: `open` ones (found, not repaired) and
    /// `fixed` ones (repaired row by row). Rows bulk-copied into empty
    /// ranges by a backfill are counted in `found`/`repaired` only.
    pub events_recorded: u64,
    /// Findings beyond `max_events_per_run` (counted, not recorded).
    pub events_dropped: u64,
    /// Findings for rows that already had an open event (not recorded twice).
    pub events_already_open: u64,
    /// Incremental: completed passes.
    pub passes: u64,
    /// Latency back-offs taken.
    pub backoffs: u64,
}

impl RunReport {
    /// Differences found and not repaired.
    pub fn remaining(&self) -> u64 {
        self.totals.found().saturating_sub(self.totals.repaired)
    }

    /// Completed with nothing left to repair.
    pub fn consistent(&self) -> bool {
        self.outcome == Outcome::Completed && self.remaining() == 0
    }

    pub fn table_mut(&mut self, name: &str) -> Option<&mut TableProgress> {
        self.tables.iter_mut().find(|t| t.table == name)
    }

    pub fn recompute_totals(&mut self) {
        let mut t = Tally::default();
        for tp in &self.tables {
            t.add(&tp.tally);
        }
        self.totals = t;
        self.found = self.totals.found();
        self.remaining = self.remaining();
    }
}

/// The validator's own view for `/status` → `validation_detail` (run
/// counters live in `migration_stats`, one definition each: docs/ADMIN.md).
#[derive(Debug, Clone, Serialize)]
pub struct ValidationStatus {
    pub full: Option<RunReport>,
    pub incremental: Option<RunReport>,
    pub last_full: Option<RunReport>,
    pub last_incremental: Option<RunReport>,
    /// Events now `open` (the same number as the gauge `cutover_inconsistencies_open`).
    pub open_inconsistencies: u64,
    /// The validator's last error (a failed run or repair).
    pub last_error: Option<String>,
    /// Binlog change capture and the re-verification queue.
    pub change_capture: super::capture::CaptureStatus,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_and_eta() {
        let mut t = TableProgress::new("t", 1000);
        t.tally.rows_checked = 250;
        t.refresh();
        assert_eq!(t.percent, 25.0);
        assert_eq!(t.eta_seconds, None, "no ETA before the table started");
        t.started = Some(Instant::now() - std::time::Duration::from_secs(10));
        t.refresh();
        let eta = t.eta_seconds.unwrap();
        assert!((29.0..=31.0).contains(&eta), "{eta}");
        t.done = true;
        t.refresh();
        assert_eq!((t.percent, t.eta_seconds), (100.0, Some(0.0)));
    }
}
