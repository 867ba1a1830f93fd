//! Counters the data path keeps and the control plane reads.
//!
//! Prometheus metrics (via the `metrics` facade) are the operator-facing
//! view; these plain atomics exist so `/status` can report the same numbers
//! without parsing the exporter's text. Part of the narrow handle between the
//! wings: the data path only increments, the control plane only reads.

#![warn(missing_docs)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::pattern::Side;

/// The data path's counters (monotonic unless noted).
#[derive(Debug, Default)]
pub struct DataPathStats {
    /// Client connections currently open.
    pub client_connections: AtomicI64,
    /// Client connections accepted since start.
    pub connections_accepted: AtomicU64,
    /// Connections refused because of `max_connections` (or the
    /// unauthenticated share of it, `max_unauthenticated_connections`).
    pub connections_refused: AtomicU64,
    /// Connections closed because they had not authenticated within
    /// `handshake_timeout_ms`.
    pub handshake_timeouts: AtomicU64,
    /// Logins refused with ER_ACCESS_DENIED_ERROR (first login or COM_CHANGE_USER).
    pub login_failures: AtomicU64,
    /// Failed logins answered late by login throttling.
    pub login_delays: AtomicU64,
    /// Statements whose client left while they ran (the backend query was
    /// killed, unless it was a mirror write that had to complete).
    pub abandoned_statements: AtomicU64,
    /// Statements relayed to the authoritative side.
    pub statements: AtomicU64,
    /// Mirrored statements applied on both sides (inside a transaction:
    /// committed on both).
    pub double_write_success: AtomicU64,
    /// Mirrored statements the authoritative side applied (committed) and
    /// the other side did not: the divergence signal (each one is also a
    /// dirty record).
    pub double_write_failure: AtomicU64,
    /// Mirrored statements of transactions the authoritative side rolled
    /// back, rolled back on the other side too (a consistent outcome).
    pub double_write_rolled_back: AtomicU64,
    /// Mirror-only transient errors (deadlock, lock wait timeout) whose
    /// retry made the mirror apply the statement or transaction.
    pub mirror_retries_succeeded: AtomicU64,
    /// Mirror-only transient errors whose retries were exhausted (or that
    /// could not be replayed): each lost write is also a failure.
    pub mirror_retries_failed: AtomicU64,
    /// Errors on the non-authoritative side, per side (index =
    /// `Side::index`): ERR answers, lost connections, refused or skipped
    /// reconnects. A diagnostic: an error inside a transaction the
    /// authoritative side rolled back, or one a retry fixed, loses nothing.
    pub secondary_errors: [AtomicU64; 2],
    /// Backend connections opened, per side.
    pub backend_connects: [AtomicU64; 2],
    /// Backend connect failures, per side.
    pub backend_connect_failures: [AtomicU64; 2],
    /// Mirrored statements whose outcome differed from the primary's.
    pub mirror_mismatches: AtomicU64,
    /// Mirrored statements that could not be made deterministic.
    pub unsafe_statements: AtomicU64,
    /// Where the sides may have diverged, for the validator to re-check.
    pub dirty: DirtyQueue,
}

/// A place the two sides may now differ (a mirrored write was lost, its
/// outcome differed, or it could not be made deterministic).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DirtyRecord {
    /// Target table as written in the statement (may be schema-qualified).
    pub table: Option<String>,
    /// The AUTO_INCREMENT key, when the statement inserted one row.
    pub key: Option<u64>,
    /// `failure:<reason>`, `mismatch:<kind>` or `unsafe:<reason>` (the
    /// metric labels).
    pub reason: String,
    /// Digest of the statement text (see logs).
    pub digest: String,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Bounded queue of dirty records; the oldest are dropped (and counted)
/// when nobody drains it.
#[derive(Debug, Default)]
pub struct DirtyQueue {
    queue: Mutex<VecDeque<DirtyRecord>>,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
}

impl DirtyQueue {
    /// Most records kept.
    pub const CAPACITY: usize = 10_000;

    /// Queue a record, dropping the oldest when full.
    pub fn push(&self, r: DirtyRecord) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= Self::CAPACITY {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(r);
    }

    /// Take every queued record, oldest first.
    pub fn drain(&self) -> Vec<DirtyRecord> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// Records queued.
    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A plain copy for JSON: the [`DataPathStats`] counters of the same names,
/// per-side arrays split into `source_…` / `destination_…`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[allow(missing_docs)] // each field is the counter of the same name above
pub struct StatsSnapshot {
    pub client_connections: i64,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub handshake_timeouts: u64,
    pub login_failures: u64,
    pub login_delays: u64,
    pub abandoned_statements: u64,
    pub statements: u64,
    pub double_write_success: u64,
    pub double_write_failure: u64,
    pub double_write_rolled_back: u64,
    pub mirror_retries_succeeded: u64,
    pub mirror_retries_failed: u64,
    pub source_secondary_errors: u64,
    pub destination_secondary_errors: u64,
    pub source_connects: u64,
    pub destination_connects: u64,
    pub source_connect_failures: u64,
    pub destination_connect_failures: u64,
    pub mirror_mismatches: u64,
    pub unsafe_statements: u64,
}

impl DataPathStats {
    /// All counters at zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Add one (relaxed: counters order nothing).
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n` (relaxed).
    pub fn add(&self, counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Count an error on the non-authoritative side `side`.
    pub fn secondary_error(&self, side: Side) {
        Self::incr(&self.secondary_errors[side.index()]);
    }

    /// Read every counter (not atomically as a whole).
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            client_connections: self.client_connections.load(Ordering::Relaxed),
            connections_accepted: r(&self.connections_accepted),
            connections_refused: r(&self.connections_refused),
            handshake_timeouts: r(&self.handshake_timeouts),
            login_failures: r(&self.login_failures),
            login_delays: r(&self.login_delays),
            abandoned_statements: r(&self.abandoned_statements),
            statements: r(&self.statements),
            double_write_success: r(&self.double_write_success),
            double_write_failure: r(&self.double_write_failure),
            double_write_rolled_back: r(&self.double_write_rolled_back),
            mirror_retries_succeeded: r(&self.mirror_retries_succeeded),
            mirror_retries_failed: r(&self.mirror_retries_failed),
            source_secondary_errors: r(&self.secondary_errors[0]),
            destination_secondary_errors: r(&self.secondary_errors[1]),
            source_connects: r(&self.backend_connects[0]),
            destination_connects: r(&self.backend_connects[1]),
            source_connect_failures: r(&self.backend_connect_failures[0]),
            destination_connect_failures: r(&self.backend_connect_failures[1]),
            mirror_mismatches: r(&self.mirror_mismatches),
            unsafe_statements: r(&self.unsafe_statements),
        }
    }
}
