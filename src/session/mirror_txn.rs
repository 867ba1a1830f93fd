//! The mirror's share of a transaction — reading its pipelined answers
//! before COMMIT, replaying it after a mirror-only transient error, ending
//! it the way the authoritative side ended its own — and the accounting of
//! every mirrored statement by what it means for the data (see `ledger.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use super::backends::Backends;
use super::ledger::{FailureReason, TxnEnd};
use super::secondary::{retry_pause, MirrorCheck, Pinning, Secondary};
use super::txn::TxnGate;
use crate::catalog;
use crate::command;
use crate::determinism::{Analysis, Verb};
use crate::pattern::Side;
use crate::response::{ResponseKind, Summary};
use crate::stats::{DataPathStats, DirtyRecord};
use crate::wire::OkInfo;

impl Secondary {
    /// Before the statement that may commit the transaction (COMMIT, an
    /// implicit commit) goes to the authoritative side: read every
    /// outstanding answer of the mirror's share, and replay the share (up to
    /// `[mirror] retries` times) if a transient error hit it. Called before
    /// the primary commits, so the share holds its row locks on the mirror
    /// before any transaction the primary's commit unblocks can reach them
    /// there: conflicting transactions reach the mirror in the primary's
    /// order (no mirror-only deadlocks from pipelining lag). Called again
    /// before COMMIT goes to the mirror; idempotent.
    pub(super) async fn settle_for_commit(&mut self, up: &mut Backends, side: Side) {
        let Some(b) = up.get(side) else {
            return;
        };
        if let Err(e) = b.settle_outstanding().await {
            warn!(%side, "mirror backend failed: {e}");
            self.secondary_error(side);
            if let Some(b) = up.take(side) {
                self.lost(b);
            }
            return;
        }
        self.settle(up, side);
        let max = self.shared.config.mirror.retries;
        loop {
            let Some(t) = &mut self.txn else { return };
            let done = !t.needs_replay || !t.replayable() || t.replays >= max;
            if !done {
                if !self.replay(up, side).await {
                    return;
                }
                continue;
            }
            if t.retry_counted || (t.replays == 0 && (!t.needs_replay || max == 0)) {
                return;
            }
            t.retry_counted = true;
            let applied = !t.needs_replay;
            let replayed: Vec<MirrorCheck> = t.entries().iter().map(|e| e.check.clone()).collect();
            self.count_retry(applied);
            if applied {
                // The replay ran after other transactions' locks: its
                // per-statement outcomes are judged by the re-check of what
                // it wrote, not counted as mismatches.
                if let Some(t) = &mut self.txn {
                    t.mismatches.clear();
                }
                for check in &replayed {
                    self.recheck_retried(check);
                }
            }
            return;
        }
    }

    /// A write the mirror applied only on a retry, after another
    /// transaction's lock: its rows may have been written there in another
    /// order than on the primary. Not a failure, but queued for a targeted
    /// re-check (a table-level one when the row is unknown).
    pub(super) fn recheck_retried(&self, check: &MirrorCheck) {
        if check.table.is_none() {
            return;
        }
        let key = single_row_key(&check.primary);
        self.push_dirty(
            check.table.clone(),
            key,
            "retried".into(),
            check.digest.clone(),
        );
    }

    /// Roll the mirror's share back and send it again; its answers are
    /// judged anew. `false` when the connection broke.
    async fn replay(&mut self, up: &mut Backends, side: Side) -> bool {
        let Some(t) = &mut self.txn else {
            return false;
        };
        t.restart();
        let attempt = t.replays;
        let entries = t.entries().to_vec();
        info!(%side, attempt, statements = entries.len(), "mirror-only transient error; replaying the transaction's share on the mirror");
        tokio::time::sleep(retry_pause(attempt)).await;
        let Some(b) = up.get(side) else {
            return false;
        };
        let mut sent = b
            .run(&command::query("ROLLBACK"), ResponseKind::Query)
            .await
            .map(|_| ());
        for e in &entries {
            if sent.is_err() {
                break;
            }
            for pre in &e.pre {
                b.queue_silent(pre);
            }
            sent = b.send_deferred(&e.payload, e.check.clone()).await;
            if let Some(post) = e.post {
                b.queue_silent(post);
            }
        }
        if let Err(e) = sent.and(b.settle_outstanding().await) {
            warn!(%side, "mirror backend failed during a replay: {e}");
            self.secondary_error(side);
            if let Some(b) = up.take(side) {
                self.lost(b);
            }
            return false;
        }
        self.settle(up, side);
        true
    }

    /// The authoritative side's transaction is over (`end`) without the
    /// statement that ended it reaching the mirror (a deadlock, a failed
    /// COMMIT, a session-state statement): a share still open on the mirror
    /// is rolled back, and the share is accounted for.
    pub async fn transaction_ended(
        &mut self,
        up: &mut Backends,
        gate: &mut TxnGate,
        side: Side,
        end: TxnEnd,
        primary_autocommit: Option<bool>,
    ) {
        let open = up
            .get(side)
            .is_some_and(|b| b.in_trans || b.deferred_outstanding() > 0);
        if open {
            match end {
                TxnEnd::RolledBack => {
                    debug!(%side, "rolling back the mirror's share of a transaction the authoritative side rolled back")
                }
                TxnEnd::Committed => {
                    warn!(%side, "rolling back a transaction left open on the non-authoritative side")
                }
            }
            let b = up.get(side).expect("checked above");
            let outcome = b
                .run(&command::query("ROLLBACK"), ResponseKind::Query)
                .await;
            self.settle(up, side);
            if let (TxnEnd::Committed, Some(t)) = (end, &mut self.txn) {
                let lost = std::mem::take(&mut t.applied);
                let reason = FailureReason::Other;
                t.missed.extend(lost.into_iter().map(|c| (reason, c)));
            }
            if let Err(e) = outcome {
                self.unsendable_in_end(up, gate, side, e);
            }
        }
        self.finish(up, side, end, primary_autocommit);
    }

    fn unsendable_in_end(
        &mut self,
        up: &mut Backends,
        gate: &mut TxnGate,
        side: Side,
        e: crate::error::BackendError,
    ) {
        warn!(%side, "mirror backend failed: {e}");
        self.secondary_error(side);
        if e.is_fatal() {
            if let Some(b) = up.take(side) {
                self.lost(b);
            }
            if gate.in_transaction() {
                gate.suspend_mirror();
            }
        }
    }

    /// The session was reset (COM_RESET_CONNECTION, COM_CHANGE_USER): both
    /// sides rolled back whatever was open.
    pub fn reset(&mut self) {
        if let Some(t) = self.txn.take() {
            let n = t.statements() as u64;
            self.shared
                .stats
                .add(&self.shared.stats.double_write_rolled_back, n);
        }
    }

    /// Account for the share of a transaction that ended (`end`), and give
    /// the mirror its autocommit mode back if cutover switched it off.
    pub(super) fn finish(
        &mut self,
        up: &mut Backends,
        side: Side,
        end: TxnEnd,
        primary_autocommit: Option<bool>,
    ) {
        let Some(t) = self.txn.take() else {
            return;
        };
        match end {
            TxnEnd::Committed => {
                self.count_success(t.applied.len() as u64);
                for (reason, check) in &t.missed {
                    self.count_failure(side, *reason, check);
                }
                for (kind, check, ok) in &t.mismatches {
                    self.count_mismatch(side, kind, check, *ok);
                }
            }
            TxnEnd::RolledBack => {
                let n = t.statements() as u64;
                self.shared
                    .stats
                    .add(&self.shared.stats.double_write_rolled_back, n);
            }
        }
        if t.autocommit_forced_off && primary_autocommit != Some(false) {
            // Owed rather than sent: a BEGIN next (the usual case) wants it
            // off again; anything else gets it first (`Backend`).
            if let Some(b) = up.get(side) {
                b.owe_autocommit_restore();
            }
        }
    }

    /// An error on the non-authoritative side `side` (an ERR answer, a lost
    /// connection, a refused or skipped reconnect): a diagnostic, not by
    /// itself a lost write.
    pub(crate) fn secondary_error(&self, side: Side) {
        self.shared.stats.secondary_error(side);
        metrics::counter!("cutover_secondary_errors_total", "backend" => side.as_str())
            .increment(1);
    }

    /// Mirrored statements applied on both sides.
    pub(super) fn count_success(&self, n: u64) {
        self.shared
            .stats
            .add(&self.shared.stats.double_write_success, n);
    }

    /// A write the authoritative side applied (committed) and the mirror
    /// `side` did not: the sides differ. Counted by reason, logged, queued
    /// as a dirty record for a targeted re-check.
    pub(super) fn count_failure(&self, side: Side, reason: FailureReason, check: &MirrorCheck) {
        let stats = &self.shared.stats;
        DataPathStats::incr(&stats.double_write_failure);
        metrics::counter!("cutover_mirror_failures_total", "backend" => side.as_str(), "reason" => reason.as_str())
            .increment(1);
        warn!(%side, reason = reason.as_str(), table = ?check.table, digest = %check.digest, "a write applied on the authoritative side is missing on the mirror");
        let key = single_row_key(&check.primary);
        let reason = format!("failure:{}", reason.as_str());
        self.push_dirty(check.table.clone(), key, reason, check.digest.clone());
    }

    /// A mirror-only transient error was retried: `applied` when the retry
    /// made the mirror apply it.
    pub(super) fn count_retry(&self, applied: bool) {
        let stats = &self.shared.stats;
        let (counter, outcome) = if applied {
            (&stats.mirror_retries_succeeded, "succeeded")
        } else {
            (&stats.mirror_retries_failed, "failed")
        };
        DataPathStats::incr(counter);
        metrics::counter!("cutover_mirror_retries_total", "outcome" => outcome).increment(1);
    }

    /// Count a mirrored statement applied on both sides with a different
    /// outcome (`kind`, see [`mismatch`]): the sides held different rows.
    /// Counted and queued for a targeted re-check.
    pub(super) fn count_mismatch(
        &self,
        side: Side,
        kind: &'static str,
        check: &MirrorCheck,
        mirror: Option<OkInfo>,
    ) {
        let primary = &check.primary;
        DataPathStats::incr(&self.shared.stats.mirror_mismatches);
        metrics::counter!("cutover_mirror_mismatches_total", "kind" => kind).increment(1);
        warn!(%side, kind, table = ?check.table, digest = %check.digest, primary = ?primary.ok, mirror = ?mirror, "mirror result differs from the authoritative side");
        let reason = format!("mismatch:{kind}");
        let key = single_row_key(primary);
        self.push_dirty(check.table.clone(), key, reason, check.digest.clone());
    }

    /// A statement mirrored although it may not be deterministic.
    pub(super) fn flag_unsafe(&self, pinning: &Pinning) {
        let Some(reason) = pinning.analysis.unsafe_reason else {
            return;
        };
        let table = pinning.analysis.table.clone();
        self.count_unsafe(reason, table, &pinning.analysis.digest);
    }

    /// A write that fires a trigger, or calls a stored function, whose
    /// effects may differ between the sides (see `catalog`): counted as
    /// unsafe, and the tables it and they write queued for a re-check.
    pub(super) fn flag_stored_programs(&self, a: &Analysis, text: &[u8], db: Option<&str>) {
        let catalog = &self.shared.catalog;
        if !catalog.is_loaded() {
            return;
        }
        let data = catalog.load();
        let mut unsafe_reason = None;
        let mut targets = Vec::new();
        if let Some(table) = &a.table {
            let event = match a.verb {
                Some(Verb::Update) => Some("UPDATE"),
                Some(Verb::Delete) => Some("DELETE"),
                _ => None,
            };
            for t in data.triggers_on(db, table, event) {
                if t.effects.nondeterministic {
                    unsafe_reason = Some("trigger");
                    targets.extend(t.effects.targets.iter().cloned());
                }
            }
        }
        if catalog.has_functions() {
            for (schema, name) in catalog::calls(text) {
                let name = String::from_utf8_lossy(name);
                let f = match schema {
                    Some(s) => {
                        data.function(None, &format!("{}.{name}", String::from_utf8_lossy(s)))
                    }
                    None => data.function(db, &name),
                };
                if let Some(f) = f.filter(|f| f.nondeterministic) {
                    unsafe_reason.get_or_insert("function");
                    targets.extend(f.targets.iter().cloned());
                }
            }
        }
        let Some(reason) = unsafe_reason else {
            return;
        };
        self.count_unsafe(reason, a.table.clone(), &a.digest);
        targets.sort();
        targets.dedup();
        for t in targets {
            self.push_dirty(Some(t), None, format!("unsafe:{reason}"), a.digest.clone());
        }
    }

    /// Count an unsafe statement (`reason`) and queue `table` for a re-check.
    pub(super) fn count_unsafe(&self, reason: &'static str, table: Option<String>, digest: &str) {
        DataPathStats::incr(&self.shared.stats.unsafe_statements);
        metrics::counter!("cutover_unsafe_statements_total", "reason" => reason).increment(1);
        warn!(reason, digest = %digest, table = ?table, "mirroring a statement that may not be deterministic");
        self.push_dirty(table, None, format!("unsafe:{reason}"), digest.to_string());
    }

    pub(super) fn push_dirty(
        &self,
        table: Option<String>,
        key: Option<u64>,
        reason: String,
        digest: String,
    ) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.shared.stats.dirty.push(DirtyRecord {
            table,
            key,
            reason,
            digest,
            at_ms,
        });
    }
}

/// How the mirror's outcome differs from the primary's, if it does:
/// `affected_rows`, or (for pinned writes) `insert_id`.
pub(super) fn mismatch(check: &MirrorCheck, mirror: &Summary) -> Option<&'static str> {
    match (&check.primary.ok, &mirror.ok) {
        (Some(p), Some(m)) if p.affected_rows != m.affected_rows => Some("affected_rows"),
        (Some(p), Some(m)) if p.last_insert_id != m.last_insert_id && check.pinned => {
            Some("insert_id")
        }
        _ => None,
    }
}

/// The AUTO_INCREMENT id of a write that inserted exactly one row.
fn single_row_key(primary: &Summary) -> Option<u64> {
    primary
        .ok
        .filter(|o| o.affected_rows == 1 && o.last_insert_id > 0)
        .map(|o| o.last_insert_id)
}
