//! The mirror side of a session: the non-authoritative backend and
//! everything about it — when it is (re)opened or skipped, deterministic
//! pinning, the per-statement result diff, and what its failures cost.
//!
//! Ordering rules (each is a test in `session/tests.rs`):
//! - A statement is mirrored only after it succeeded on the authoritative
//!   side, and the client's answer is held until the mirror applied it
//!   (autocommit writes, DDL, BEGIN, COMMIT): nobody who saw the answer can
//!   get ahead of the mirror.
//! - Plain writes inside a transaction are pipelined: sent at once, their
//!   answers read before anything else on that connection — at the latest
//!   by COMMIT, which is mirrored synchronously.
//! - Pinning `SET`s go before the write on both sides and `SET
//!   timestamp=DEFAULT` after it, pipelined (no round trip of their own).
//! - A mirror lost or skipped inside a transaction is not reopened before
//!   the transaction ends ([`TxnGate::suspend_mirror`]).
//! - A transaction the authoritative side ended (deadlock, failed COMMIT,
//!   implicit end) is rolled back on the mirror if still open there.
//! - Mirror failures are never returned to the client: they are logged,
//!   counted, and a broken connection is dropped (re-synced on next use).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use super::backends::{Backends, Conn};
use super::exec::{Cmd, Unsendable};
use super::prepared::Statements;
use super::txn::TxnGate;
use crate::backend::InfileCopy;
use crate::classify::Class;
use crate::command;
use crate::determinism::{self, Analysis, Pin};
use crate::pattern::Side;
use crate::response::{ResponseKind, Summary};
use crate::route::Plan;
use crate::shared::Shared;
use crate::stats::{DataPathStats, DirtyRecord};

/// What a mirrored statement's answer must be compared with: the
/// authoritative side's outcome and where it wrote. The tag of deferred
/// answers in the backend's queue.
#[derive(Debug, Clone)]
pub(super) struct MirrorCheck {
    pub primary: Summary,
    pub pinned: bool,
    pub table: Option<String>,
    pub digest: String,
}

/// How one mirrored write is made deterministic (the same pin on both sides).
pub(super) struct Pinning {
    pub pin: Pin,
    pub analysis: Analysis,
}

impl Pinning {
    /// Queue the pinning `SET` before the write on `backend`; the mirror
    /// also gets the primary's first generated id (`insert_id`), unless the
    /// text holds several statements.
    pub fn before(&self, backend: &mut Conn, primary_insert_id: Option<u64>) {
        let insert_id = primary_insert_id.filter(|_| !self.analysis.multi);
        backend.queue_silent(&self.pin.prefix(insert_id));
    }

    /// Queue `SET timestamp=DEFAULT` after the write on `backend`.
    pub fn after(&self, backend: &mut Conn) {
        backend.queue_silent(determinism::reset());
    }
}

/// A statement that succeeded on the authoritative side, to mirror.
pub(super) struct Mirrored<'c, 'a> {
    pub side: Side,
    pub class: Class,
    pub cmd: &'c Cmd<'a>,
    /// The authoritative side's outcome.
    pub primary: &'c Summary,
    /// The LOCAL INFILE data the client sent, if the statement read a file.
    pub infile: Option<&'c InfileCopy>,
    pub pinning: Option<&'c Pinning>,
}

impl Mirrored<'_, '_> {
    /// Whether to pipeline it (send without waiting for the answer): a plain
    /// write inside a transaction that was already open and stays open.
    /// Nobody else can see it before COMMIT, which is mirrored synchronously.
    /// A LOAD DATA LOCAL is never deferred (the mirror asks for the file).
    fn deferred(&self, gate: &TxnGate) -> bool {
        self.class == Class::Write
            && gate.in_transaction()
            && self.primary.in_trans() == Some(true)
            && self.infile.is_none()
    }
}

/// The mirror side of one session (see the module docs for its rules).
pub(super) struct Secondary {
    shared: Arc<Shared>,
}

impl Secondary {
    pub fn new(shared: Arc<Shared>) -> Self {
        Secondary { shared }
    }

    /// Decide whether (and how) to pin a statement, and flag it when it
    /// cannot be made deterministic. Only writes and DDL in double-write
    /// patterns pay for it; `None` with `deterministic_mirroring = false`.
    pub fn pinning(
        &self,
        plan: &Plan,
        class: Class,
        cmd: &Cmd<'_>,
        stmts: &mut Statements,
    ) -> Option<Pinning> {
        if plan.mirror.is_none()
            || !matches!(class, Class::Write | Class::Ddl)
            || !self.shared.config.deterministic_mirroring
        {
            return None;
        }
        let analysis = match cmd {
            Cmd::Raw(p) => determinism::analyze(p.get(1..).unwrap_or_default()),
            Cmd::Execute { id, .. } => stmts.get_mut(*id)?.analysis().clone(),
        };
        let pinning = Pinning {
            pin: Pin::now(),
            analysis,
        };
        self.flag_unsafe(&pinning);
        Some(pinning)
    }

    /// Mirror a statement that succeeded on the authoritative side. The
    /// mirror's own answer is judged ([`Self::settle`] for deferred ones);
    /// nothing here fails the client's statement.
    pub async fn mirror(&mut self, up: &mut Backends, gate: &mut TxnGate, m: Mirrored<'_, '_>) {
        let side = m.side;
        if !up.is_open(side) {
            if let Some(reason) = self.reopen_refused(up, gate, side).await {
                debug!(%side, reason, "mirror skipped");
                self.count_failure(side);
                gate.suspend_mirror();
                return;
            }
        }
        let check = MirrorCheck {
            primary: m.primary.clone(),
            pinned: m.pinning.is_some(),
            table: m.pinning.and_then(|p| p.analysis.table.clone()),
            digest: m
                .pinning
                .map(|p| p.analysis.digest.clone())
                .unwrap_or_default(),
        };
        let defer = m.deferred(gate);
        let outcome = match up.payload_for(m.cmd, side).await {
            Ok(payload) => {
                let payload = match super::ddl_defaults::context(up, m.class) {
                    Some(ctx) => super::ddl_defaults::for_mirror(ctx, side, payload).await,
                    None => payload,
                };
                self.send(up, &m, &payload, &check, defer).await
            }
            Err(u) => Err(u),
        };
        if m.infile.is_some_and(|f| f.truncated) {
            warn!(%side, "LOAD DATA LOCAL file larger than max_allowed_packet; mirror received a truncated copy");
            self.count_failure(side);
        }
        match outcome {
            Ok(Some(s)) => self.judge(side, &check, s),
            Ok(None) => {}
            Err(u) => self.note(up, gate, side, Err(u), Some(m.primary)),
        }
        self.settle(up, side);
    }

    /// Why the absent mirror connection is not (re)opened now, if it is not.
    async fn reopen_refused(
        &self,
        up: &mut Backends,
        gate: &TxnGate,
        side: Side,
    ) -> Option<String> {
        if gate.mirror_suspended() || gate.in_transaction() {
            Some("connection lost inside the current transaction".to_string())
        } else if let Err(e) = self.shared.backoff[side.index()].check() {
            Some(format!("backing off: {e}"))
        } else {
            up.ensure(side).await.err().map(|e| e.to_string())
        }
    }

    /// Send the mirrored statement, pinned; `Ok(None)` when deferred.
    async fn send(
        &self,
        up: &mut Backends,
        m: &Mirrored<'_, '_>,
        payload: &[u8],
        check: &MirrorCheck,
        defer: bool,
    ) -> Result<Option<Summary>, Unsendable> {
        let b = up.get(m.side).expect("opened above");
        if let Some(pin) = m.pinning {
            pin.before(b, m.primary.ok.map(|o| o.last_insert_id));
        }
        let r = if defer {
            b.send_deferred(payload, check.clone()).await.map(|()| None)
        } else {
            match b.send(payload).await {
                Ok(()) => b.discard(ResponseKind::Query, m.infile).await.map(Some),
                Err(e) => Err(e),
            }
        };
        if let (Some(pin), true) = (m.pinning, r.is_ok()) {
            pin.after(b);
        }
        r.map_err(Unsendable::Backend)
    }

    /// A session-state command that succeeded on the authoritative side:
    /// applied to the other side too, if a connection is open there.
    pub async fn fan_out(
        &mut self,
        up: &mut Backends,
        gate: &mut TxnGate,
        side: Side,
        cmd: &Cmd<'_>,
        kind: ResponseKind,
    ) {
        if !up.is_open(side) {
            return;
        }
        let outcome = match up.payload_for(cmd, side).await {
            Ok(p) => {
                let b = up.get(side).expect("checked above");
                b.run(&p, kind).await.map_err(Unsendable::Backend)
            }
            Err(u) => Err(u),
        };
        self.note(up, gate, side, outcome, None);
    }

    /// The authoritative side's transaction ended (deadlock, failed COMMIT,
    /// implicit end) but `side`'s did not follow: roll it back there.
    pub async fn roll_back_if_open(&mut self, up: &mut Backends, gate: &mut TxnGate, side: Side) {
        let Some(b) = up.get(side) else {
            return;
        };
        if !b.in_trans {
            return;
        }
        warn!(%side, "rolling back a transaction left open on the non-authoritative side");
        let outcome = b
            .run(&command::query("ROLLBACK"), ResponseKind::Query)
            .await
            .map_err(Unsendable::Backend);
        self.count_failure(side);
        self.note(up, gate, side, outcome, None);
    }

    /// Judge the answers of deferred mirrored statements read so far (any
    /// later read on that connection reads them first).
    pub fn settle(&mut self, up: &mut Backends, side: Side) {
        let Some(b) = up.get(side) else {
            return;
        };
        for (check, s) in b.take_settled() {
            self.judge(side, &check, s);
        }
    }

    /// A connection was taken out of use: judge what it answered, and count
    /// the deferred statements whose answers will never come as failures.
    pub fn lost(&mut self, mut backend: Conn) {
        let side = backend.side;
        for (check, s) in backend.take_settled() {
            self.judge(side, &check, s);
        }
        for _ in 0..backend.deferred_outstanding() {
            self.count_failure(side);
        }
    }

    fn judge(&mut self, side: Side, check: &MirrorCheck, mirror: Summary) {
        self.diff_outcomes(side, check, &mirror);
        self.count_outcome(side, &mirror, true);
    }

    /// Compare the mirror's outcome with the primary's: affected rows,
    /// generated ids, error vs success. A difference means the sides have
    /// diverged: counted and queued for a targeted re-check.
    fn diff_outcomes(&self, side: Side, check: &MirrorCheck, mirror: &Summary) {
        let primary = &check.primary;
        let kind = match (&primary.ok, &mirror.ok, &mirror.err) {
            (_, _, Some(_)) => Some("error"),
            (Some(p), Some(m), None) if p.affected_rows != m.affected_rows => Some("affected_rows"),
            (Some(p), Some(m), None) if p.last_insert_id != m.last_insert_id && check.pinned => {
                Some("insert_id")
            }
            _ => None,
        };
        let Some(kind) = kind else { return };
        DataPathStats::incr(&self.shared.stats.mirror_mismatches);
        metrics::counter!("cutover_mirror_mismatches_total", "kind" => kind).increment(1);
        let key = primary
            .ok
            .map(|o| o.last_insert_id)
            .filter(|id| *id > 0 && primary.ok.is_some_and(|o| o.affected_rows == 1));
        warn!(%side, kind, table = ?check.table, digest = %check.digest, primary = ?primary.ok, mirror = ?mirror.ok, "mirror result differs from the authoritative side");
        let reason = format!("mismatch:{kind}");
        self.push_dirty(check.table.clone(), key, reason, check.digest.clone());
    }

    /// A statement mirrored although it may not be deterministic.
    fn flag_unsafe(&self, pinning: &Pinning) {
        let Some(reason) = pinning.analysis.unsafe_reason else {
            return;
        };
        DataPathStats::incr(&self.shared.stats.unsafe_statements);
        metrics::counter!("cutover_unsafe_statements_total", "reason" => reason).increment(1);
        let digest = pinning.analysis.digest.clone();
        warn!(reason, digest = %digest, table = ?pinning.analysis.table, "mirroring a statement that may not be deterministic");
        let table = pinning.analysis.table.clone();
        self.push_dirty(table, None, format!("unsafe:{reason}"), digest);
    }

    fn push_dirty(&self, table: Option<String>, key: Option<u64>, reason: String, digest: String) {
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

    /// Count one failure on the non-authoritative side `side`
    /// (`double_write_failure`, `cutover_secondary_errors_total`).
    pub fn count_failure(&self, side: Side) {
        let stats = &self.shared.stats;
        DataPathStats::incr(&stats.double_write_failure);
        stats.secondary_error(side);
        metrics::counter!("cutover_secondary_errors_total", "backend" => side.as_str())
            .increment(1);
    }

    /// An answer from the other side: an ERR is a failure; success counts
    /// as a double write when it mirrored a statement (`mirrored`).
    fn count_outcome(&self, side: Side, s: &Summary, mirrored: bool) {
        if let Some(err) = &s.err {
            warn!(%side, code = err.code, message = %err.message, "mirrored statement failed");
            self.count_failure(side);
        } else if mirrored {
            DataPathStats::incr(&self.shared.stats.double_write_success);
        }
    }

    /// Count and log what happened on the other side; a broken connection
    /// is dropped (and, inside a transaction, not reopened before its end).
    fn note(
        &mut self,
        up: &mut Backends,
        gate: &mut TxnGate,
        side: Side,
        outcome: Result<Summary, Unsendable>,
        primary: Option<&Summary>,
    ) {
        match outcome {
            Ok(s) => self.count_outcome(side, &s, primary.is_some()),
            Err(Unsendable::Backend(e)) => {
                warn!(%side, "mirror backend failed: {e}");
                self.count_failure(side);
                if e.is_fatal() {
                    if let Some(b) = up.take(side) {
                        self.lost(b);
                    }
                    if gate.in_transaction() {
                        gate.suspend_mirror();
                    }
                }
            }
            Err(Unsendable::Malformed) => self.count_failure(side),
        }
    }
}
