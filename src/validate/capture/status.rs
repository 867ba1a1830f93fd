//! What change capture and the re-verification queue report in `/status`
//! (`validation_detail.change_capture`) and `/metrics`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::position::Position;
use crate::pattern::Side;

/// Counters shared by the reader, the verifier and `/status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Keys re-checked against both sides.
    pub keys_reverified: AtomicU64,
    /// Re-checks that found a difference that was reported or repaired.
    pub differences: AtomicU64,
    /// Differences repaired (`auto_fix`).
    pub repaired: AtomicU64,
    /// Row changes read from the binlog (before de-duplication).
    pub changes_read: AtomicU64,
    /// Transactions read from the binlog.
    pub transactions_read: AtomicU64,
    /// Row changes whose key could not be taken (table without a primary
    /// key, unsupported key character set, key column missing from the
    /// image): only a full run re-checks those rows.
    pub unkeyed_changes: AtomicU64,
    /// Data-path dirty records queued for a re-check.
    pub dirty_records: AtomicU64,
    /// Keys not compared because the pattern wrote one side only
    /// (src_only / dst_only) when they came due.
    pub keys_skipped: AtomicU64,
    /// Row events in statement format (binlog_format changed by a session):
    /// their rows are unknown.
    pub statement_events: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    rate: Mutex<VecDeque<(Instant, u64)>>,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn error(&self, e: impl std::fmt::Display) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    /// Keys re-verified per second over the last ~10 s (sampled when asked).
    pub fn rate(&self) -> f64 {
        let now = Instant::now();
        let total = Self::get(&self.keys_reverified);
        let mut w = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        if w.back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_millis(200))
        {
            w.push_back((now, total));
        }
        while w.len() > 2 && now.duration_since(w[0].0) > Duration::from_secs(10) {
            w.pop_front();
        }
        match w.front() {
            Some((t, n)) if now.duration_since(*t) > Duration::from_millis(100) => {
                (total - n) as f64 / now.duration_since(*t).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// Whether the binlog reader runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderState {
    /// `change_capture = "off"`: only dirty records are re-checked.
    Off,
    Starting,
    Running,
    /// Lost the stream; reconnecting (with back-off) from the last position read.
    Reconnecting,
    Stopped,
}

/// Where the reader is relative to the server (from the last lag probe).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lag {
    /// Seconds between now and the commit time of the last event read;
    /// 0 when everything the server has written was read.
    pub seconds: f64,
    /// Transactions the server wrote that were not read yet (MariaDB GTID
    /// sequence numbers; `null` without GTIDs).
    pub events: Option<u64>,
    /// Binlog bytes not read yet (`null` when the file is unknown).
    pub bytes: Option<u64>,
}

/// `validation_detail.change_capture` in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureStatus {
    /// `off` | `starting` | `running` | `reconnecting` | `stopped`.
    pub state: ReaderState,
    /// The authoritative side whose binlog is read.
    pub side: Option<Side>,
    /// `host:port` of that server.
    pub server: Option<String>,
    /// `gtid` (MariaDB: `@slave_connect_state`) or `file` (file/position).
    pub resume_by: Option<&'static str>,
    /// The end of the last transaction read.
    pub position: Option<Position>,
    /// The durable resume point (data_dir/capture-checkpoint.json).
    pub checkpoint: Option<Position>,
    pub lag_seconds: f64,
    pub lag_events: Option<u64>,
    pub lag_bytes: Option<u64>,
    /// Keys waiting for (or in) re-verification.
    pub queue_depth: u64,
    /// How long the oldest waiting key has waited (settle delay included).
    pub oldest_pending_seconds: f64,
    pub keys_reverified_total: u64,
    pub keys_reverified_per_second: f64,
    pub differences_total: u64,
    pub repaired_total: u64,
    pub changes_read_total: u64,
    pub transactions_read_total: u64,
    pub unkeyed_changes_total: u64,
    pub statement_events_total: u64,
    pub dirty_records_total: u64,
    /// Keys not compared because the pattern wrote one side only (src_only,
    /// dst_only): the other side is not expected to be equal then.
    pub keys_skipped_total: u64,
    /// Set when the checkpoint could not be resumed (binlog purged past it)
    /// and a full validation run was started instead.
    pub fell_back_to_full: Option<String>,
    pub last_error: Option<String>,
}
