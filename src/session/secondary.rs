//! The mirror side of a session: the non-authoritative backend and
//! everything about it — when it is (re)opened or skipped, deterministic
//! pinning, the per-statement result diff, and what its answers mean for
//! the data (`ledger.rs`; the transaction share in `mirror_txn.rs`).
//!
//! Ordering rules (each is a test in `session/tests.rs`):
//! - A statement is mirrored only after it succeeded on the authoritative
//!   side, and the client's answer is held until the mirror applied it
//!   (autocommit writes, DDL, BEGIN, COMMIT): nobody who saw the answer can
//!   get ahead of the mirror.
//! - Plain writes inside a transaction are pipelined: sent at once, their
//!   answers read before anything else on that connection — at the latest
//!   just before COMMIT is sent there, so that a mirror-only transient error
//!   can still be retried by replaying the transaction's share.
//! - Pinning goes with the write on both sides (see [`Pinning`]), pipelined
//!   (no round trip of its own).
//! - A mirror lost or skipped inside a transaction is not reopened before
//!   the transaction ends ([`TxnGate::suspend_mirror`]).
//! - A transaction the authoritative side ended (deadlock, failed COMMIT,
//!   implicit end) is rolled back on the mirror if still open there.
//! - Mirror failures are never returned to the client: they are logged,
//!   counted by what they mean for the data, and a broken connection is
//!   dropped (re-synced on next use).

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::backends::{Backends, Conn};
use super::exec::{Cmd, Unsendable};
use super::ledger::{is_transient, Entry, FailureReason, MirrorTxn, TxnEnd};
use super::mirror_txn::mismatch;
pub(super) use super::pinning::Pinning;
use super::pinning::{single_statement, OwedReset, Pinned, TimestampPin};
use super::prepared::Statements;
use super::txn::TxnGate;
use crate::backend::InfileCopy;
use crate::catalog::{self, Needs};
use crate::classify::{Class, TxKind};
use crate::command;
use crate::config::PinningMode;
use crate::determinism::{self, ClientPins, Pin, Verb};
use crate::pattern::Side;
use crate::response::{ResponseKind, Summary};
use crate::route::Plan;
use crate::shared::Shared;

/// What a mirrored statement's answer must be compared with: the
/// authoritative side's outcome and where it wrote. The tag of deferred
/// answers in the backend's queue.
#[derive(Debug, Clone)]
pub(super) struct MirrorCheck {
    pub primary: Summary,
    pub pinned: bool,
    pub table: Option<String>,
    pub digest: String,
    /// The text held several statements (not retried alone).
    pub multi: bool,
}

/// A statement that succeeded on the authoritative side, to mirror.
pub(super) struct Mirrored<'c, 'a> {
    pub side: Side,
    pub class: Class,
    pub tx: Option<TxKind>,
    pub cmd: &'c Cmd<'a>,
    /// The authoritative side's outcome.
    pub primary: &'c Summary,
    /// The LOCAL INFILE data the client sent, if the statement read a file.
    pub infile: Option<&'c InfileCopy>,
    pub pinning: Option<&'c Pinning>,
    /// `SET @v = …` with the primary's user-variable values, sent first.
    pub vars: Option<&'c [u8]>,
}

impl Mirrored<'_, '_> {
    /// Whether to pipeline it (send without waiting for the answer): a plain
    /// write inside a transaction that was already open and stays open, or
    /// a lone BEGIN that opened one (issue 17: the client no longer waits a
    /// round trip to the mirror per transaction; the mirror's BEGIN still
    /// goes before the transaction's writes on its connection, and its
    /// answer is judged with theirs). Nobody else can see any of it before
    /// COMMIT, which is mirrored synchronously. A LOAD DATA LOCAL is never
    /// deferred (the mirror asks for the file).
    fn deferred(&self, gate: &TxnGate) -> bool {
        let write = self.class == Class::Write && gate.in_transaction();
        let begin = self.class == Class::Transaction
            && self.tx == Some(TxKind::Begin)
            && match self.cmd {
                Cmd::Raw(p) => single_statement(p.get(1..).unwrap_or_default()),
                Cmd::Execute { .. } => true,
            };
        (write || begin) && self.primary.in_trans() == Some(true) && self.infile.is_none()
    }

    fn check(&self) -> MirrorCheck {
        MirrorCheck {
            primary: self.primary.clone(),
            pinned: self.pinning.is_some(),
            table: self.pinning.and_then(|p| p.analysis.table.clone()),
            digest: self
                .pinning
                .map(|p| p.analysis.digest.clone())
                .unwrap_or_default(),
            multi: self.pinning.is_some_and(|p| p.analysis.multi),
        }
    }

    /// Whether the authoritative side is inside a transaction after it.
    fn in_txn_after(&self) -> bool {
        self.primary.in_trans() == Some(true)
    }
}

/// The mirror side of one session (see the module docs for its rules).
pub(super) struct Secondary {
    pub(super) shared: Arc<Shared>,
    /// The mirror's share of the authoritative side's open transaction.
    pub(super) txn: Option<MirrorTxn>,
    /// The session holds temporary tables (kept by `Session` after DDL):
    /// `pinning = "when_needed"` then pins every write.
    pub(super) session_has_temporary_tables: bool,
}

impl Secondary {
    pub fn new(shared: Arc<Shared>) -> Self {
        Secondary {
            shared,
            txn: None,
            session_has_temporary_tables: false,
        }
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
        client: ClientPins,
        db: Option<&str>,
    ) -> Option<Pinning> {
        if plan.mirror.is_none()
            || !matches!(class, Class::Write | Class::Ddl)
            || !self.shared.config.deterministic_mirroring
        {
            return None;
        }
        let mut analysis = match cmd {
            Cmd::Raw(p) => {
                let text = p.get(1..).unwrap_or_default();
                let a = determinism::analyze(text);
                self.flag_stored_programs(&a, text, db);
                a
            }
            Cmd::Execute { id, .. } => {
                let stmt = stmts.get_mut(*id)?;
                let a = stmt.analysis().clone();
                self.flag_stored_programs(&a, &stmt.sql, db);
                a
            }
        };
        if client.rand_seed && client.rand_drift && analysis.calls_rand {
            // The client seeded the RNG and drew from it on the authoritative
            // side only since: the two RNGs are in different states.
            analysis
                .unsafe_reason
                .get_or_insert("rand_after_client_seed");
        }
        let needs = self.needs(class, cmd, stmts, &analysis);
        let pinning = Pinning {
            pin: Pin::now(),
            analysis,
            client,
            needs,
        };
        self.flag_unsafe(&pinning);
        Some(pinning)
    }

    /// What a write needs pinned: everything with `[mirror] pinning =
    /// "always"`, for DDL, for anything but INSERT / REPLACE / UPDATE /
    /// DELETE / LOAD, and while the session holds temporary tables (the
    /// catalog cannot see their defaults); else what [`catalog::needs`]
    /// reads from its words.
    fn needs(
        &self,
        class: Class,
        cmd: &Cmd<'_>,
        stmts: &mut Statements,
        analysis: &determinism::Analysis,
    ) -> Needs {
        let plain_write = matches!(
            analysis.verb,
            Some(Verb::Insert | Verb::Update | Verb::Delete | Verb::Load)
        );
        if self.shared.config.mirror.pinning != PinningMode::WhenNeeded
            || class != Class::Write
            || !plain_write
            || self.session_has_temporary_tables
        {
            return Needs::ALL;
        }
        let data = self.shared.catalog.load();
        let (verb, target) = (analysis.verb, analysis.table.as_deref());
        match cmd.sql(stmts) {
            Some(sql) => catalog::needs(&data, sql, verb, target),
            None => Needs::ALL,
        }
    }

    /// Mirror a statement that succeeded on the authoritative side. The
    /// mirror's own answer is judged (pipelined ones when they are read);
    /// nothing here fails the client's statement.
    pub async fn mirror(&mut self, up: &mut Backends, gate: &mut TxnGate, m: Mirrored<'_, '_>) {
        let side = m.side;
        let check = m.check();
        // Does this statement end the transaction whose share the mirror
        // holds (COMMIT, an implicit commit, the BEGIN of the next one)?
        let ends = self.txn.is_some() && (!m.in_txn_after() || m.tx == Some(TxKind::Begin));
        let end = TxnEnd::of(m.primary, m.tx);
        if ends && end == TxnEnd::Committed {
            self.settle_for_commit(up, side).await;
        }
        if !ends && self.txn.as_ref().is_some_and(|t| t.halted) {
            return self.hold_back(up, &m, check).await;
        }
        if !up.is_open(side) {
            if let Some(reason) = self.reopen_refused(up, gate, side).await {
                debug!(%side, reason, "mirror skipped");
                self.secondary_error(side);
                gate.suspend_mirror();
                return self.not_applied(up, &m, ends, FailureReason::Unavailable, check);
            }
        }
        let entry = match self.entry(up, &m, check).await {
            Ok(e) => e,
            Err(u) => {
                let reason = self.unsendable(up, gate, side, u);
                return self.not_applied(up, &m, ends, reason, m.check());
            }
        };
        let outcome = if m.deferred(gate) && !ends {
            self.send_deferred(up, side, &entry).await.map(|()| None)
        } else {
            let retry = !ends && !m.in_txn_after() && self.txn.is_none() && !entry.check.multi;
            self.send_now(up, side, &entry, m.infile, retry)
                .await
                .map(Some)
        };
        match outcome {
            Err(u) => {
                let reason = self.unsendable(up, gate, side, u);
                self.not_applied(up, &m, ends, reason, entry.check);
            }
            Ok(s) => self.applied(up, &m, ends, end, entry, s),
        }
        self.settle(up, side);
    }

    /// What became of a statement the mirror answered (or will answer, when
    /// pipelined): judged now outside a transaction; inside one, remembered
    /// for its end.
    fn applied(
        &mut self,
        up: &mut Backends,
        m: &Mirrored<'_, '_>,
        ends: bool,
        end: TxnEnd,
        entry: Entry,
        s: Option<Summary>,
    ) {
        let side = m.side;
        let truncated = m.infile.is_some_and(|f| f.truncated);
        if truncated {
            warn!(%side, "LOAD DATA LOCAL file larger than max_allowed_packet; mirror received a truncated copy");
        }
        if ends {
            let starts = m.tx == Some(TxKind::Begin) && m.in_txn_after();
            if let Some(s) = s.as_ref().filter(|_| !starts) {
                self.answer_in_txn(side, entry.check.clone(), s);
                if let (Some(err), TxnEnd::Committed, Some(t)) = (&s.err, end, &mut self.txn) {
                    // The mirror did not commit its share.
                    let reason = FailureReason::of(err);
                    let lost = std::mem::take(&mut t.applied);
                    t.missed.extend(lost.into_iter().map(|c| (reason, c)));
                }
            }
            self.finish(up, side, end, m.primary.autocommit());
            if starts {
                self.begin_txn(entry, s.as_ref(), side);
            }
        } else if m.in_txn_after() || self.txn.is_some() {
            let forced = entry.forces_autocommit_off;
            if self.txn.is_none() {
                self.txn = Some(MirrorTxn::new(self.shared.config.mirror.replay_max_bytes));
            }
            if let Some(t) = &mut self.txn {
                t.autocommit_forced_off |= forced;
                if m.infile.is_some() {
                    t.unreplayable();
                }
                t.record(entry.clone());
            }
            if let Some(s) = &s {
                self.answer_in_txn(side, entry.check, s);
            }
        } else if let Some(s) = s {
            match (&s.err, truncated) {
                (Some(err), _) => {
                    warn!(%side, code = err.code, message = %err.message, "mirrored statement failed");
                    self.secondary_error(side);
                    self.count_failure(side, FailureReason::of(err), &entry.check);
                }
                (None, true) => {
                    self.count_failure(side, FailureReason::InfileTruncated, &entry.check)
                }
                (None, false) => {
                    if let Some(kind) = mismatch(&entry.check, &s) {
                        self.count_mismatch(side, kind, &entry.check, s.ok);
                    }
                    self.count_success(1);
                }
            }
        }
    }

    /// The transaction started with this statement (a BEGIN right after the
    /// previous one ended).
    fn begin_txn(&mut self, entry: Entry, s: Option<&Summary>, side: Side) {
        let mut t = MirrorTxn::new(self.shared.config.mirror.replay_max_bytes);
        t.autocommit_forced_off = entry.forces_autocommit_off;
        t.record(entry.clone());
        self.txn = Some(t);
        if let Some(s) = s {
            self.answer_in_txn(side, entry.check, s);
        }
    }

    /// A statement the mirror did not get (down, unsendable).
    fn not_applied(
        &mut self,
        up: &mut Backends,
        m: &Mirrored<'_, '_>,
        ends: bool,
        reason: FailureReason,
        check: MirrorCheck,
    ) {
        let end = TxnEnd::of(m.primary, m.tx);
        let starts = m.tx == Some(TxKind::Begin) && m.in_txn_after();
        if ends {
            if !starts {
                // It belonged to the transaction it ended (COMMIT, ROLLBACK).
                if let Some(t) = &mut self.txn {
                    t.missed.push((reason, check));
                }
                return self.finish(up, m.side, end, None);
            }
            self.finish(up, m.side, end, None);
        }
        if m.in_txn_after() || self.txn.is_some() {
            let t = self.txn.get_or_insert_with(|| MirrorTxn::new(0));
            t.unreplayable();
            t.halted = true;
            t.missed.push((reason, check));
        } else {
            self.count_failure(m.side, reason, &check);
        }
    }

    /// Inside a transaction whose mirror share waits for a replay (or was
    /// lost): the statement is kept for the replay instead of being sent.
    async fn hold_back(&mut self, up: &mut Backends, m: &Mirrored<'_, '_>, check: MirrorCheck) {
        let entry = if up.is_open(m.side) {
            self.entry(up, m, check.clone()).await.ok()
        } else {
            None
        };
        let Some(t) = &mut self.txn else { return };
        let reason = if t.needs_replay {
            FailureReason::LockConflict
        } else {
            FailureReason::Unavailable
        };
        match entry {
            Some(e) => t.record(e),
            None => t.unreplayable(),
        }
        t.missed.push((reason, check));
    }

    /// The commands to send for `m`: its payload for the mirror with the
    /// pinning around it, and (for a BEGIN on a mirror in autocommit mode)
    /// `SET autocommit=0`, so that what follows a deadlock there stays
    /// uncommitted until the share is rolled back and replayed.
    async fn entry(
        &mut self,
        up: &mut Backends,
        m: &Mirrored<'_, '_>,
        check: MirrorCheck,
    ) -> Result<Entry, Unsendable> {
        let payload = up.payload_for(m.cmd, m.side).await?;
        // issue 19: a CREATE TABLE relying on server defaults gets the primary's
        let payload = match super::ddl_defaults::context(up, m.class) {
            Some(ctx) => super::ddl_defaults::for_mirror(ctx, m.side, payload).await,
            None => payload,
        }
        .into_owned();
        let (autocommit, mariadb, restore_owed) =
            up.get(m.side).map_or((false, false, false), |b| {
                (b.autocommit, b.mariadb, b.autocommit_restore_owed())
            });
        let begin = m.tx == Some(TxKind::Begin);
        let keeps = begin && restore_owed;
        let unpinned = |payload, pre| Pinned {
            payload,
            pre,
            post: None,
            timestamp: TimestampPin::Untouched,
        };
        let pinned = match m.pinning {
            Some(p) => p.apply(payload, mariadb, m.primary.ok.map(|o| o.last_insert_id)),
            None if begin && autocommit && !keeps => {
                unpinned(payload, Some(command::query("SET autocommit=0")))
            }
            None => unpinned(payload, None),
        };
        let forces = begin && m.pinning.is_none() && (keeps || autocommit);
        let owed = self.owed_reset(up, m, pinned.timestamp);
        let pre = owed
            .map(<[u8]>::to_vec)
            .into_iter()
            .chain(m.vars.map(<[u8]>::to_vec))
            .chain(pinned.pre)
            .collect();
        Ok(Entry {
            pre,
            payload: pinned.payload,
            post: pinned.post,
            check,
            forces_autocommit_off: forces,
            keeps_autocommit_off: keeps,
        })
    }

    /// The `SET timestamp=DEFAULT` this connection owes (a pinned prepared
    /// write ran on it, as mirror or as the authoritative side), if it is
    /// to go before `m` ([`OwedReset::before`]); dropped when `m` pins the
    /// session's clock itself, kept owed when `m` reads no clock.
    fn owed_reset(
        &self,
        up: &mut Backends,
        m: &Mirrored<'_, '_>,
        clock: TimestampPin,
    ) -> Option<&'static [u8]> {
        let text = m.cmd.sql(&mut up.stmts).unwrap_or_default();
        let rule = OwedReset::before(clock, m.tx, text);
        let b = up.get(m.side)?;
        rule.settle(&mut b.pending_reset)
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

    /// Send a pipelined statement (its answer is read later).
    async fn send_deferred(
        &mut self,
        up: &mut Backends,
        side: Side,
        e: &Entry,
    ) -> Result<(), Unsendable> {
        let b = up.get(side).ok_or(Unsendable::Malformed)?;
        if e.keeps_autocommit_off {
            b.keep_autocommit_off();
        }
        for pre in &e.pre {
            b.queue_silent(pre);
        }
        b.send_deferred(&e.payload, e.check.clone())
            .await
            .map_err(Unsendable::Backend)?;
        b.pending_reset = e.post.or(b.pending_reset);
        Ok(())
    }

    /// Send a statement and read its answer. With `retry`, a mirror-only
    /// transient error is retried up to `[mirror] retries` times.
    async fn send_now(
        &mut self,
        up: &mut Backends,
        side: Side,
        e: &Entry,
        infile: Option<&InfileCopy>,
        retry: bool,
    ) -> Result<Summary, Unsendable> {
        let max = if retry {
            self.shared.config.mirror.retries
        } else {
            0
        };
        let mut attempt = 0;
        loop {
            let b = up.get(side).ok_or(Unsendable::Malformed)?;
            if e.keeps_autocommit_off {
                b.keep_autocommit_off();
            }
            for pre in &e.pre {
                b.queue_silent(pre);
            }
            let r = match b.send(&e.payload).await {
                Ok(()) => b.discard(ResponseKind::Query, infile).await,
                Err(e) => Err(e),
            };
            let s = r.map_err(Unsendable::Backend)?;
            // owed, not sent: the next statement on the mirror may pin the
            // clock itself or read none (`OwedReset::before`)
            b.pending_reset = e.post.or(b.pending_reset);
            let transient = s.err.as_ref().filter(|err| is_transient(err));
            match transient {
                Some(err) if attempt < max => {
                    attempt += 1;
                    debug!(%side, code = err.code, attempt, "mirror-only transient error; retrying the statement");
                    self.secondary_error(side);
                    tokio::time::sleep(retry_pause(attempt)).await;
                }
                _ => {
                    if attempt > 0 {
                        self.count_retry(s.err.is_none());
                        if s.err.is_none() {
                            self.recheck_retried(&e.check);
                        }
                    }
                    return Ok(s);
                }
            }
        }
    }

    /// A session-state command that succeeded on the authoritative side:
    /// applied to the other side too, if a connection is open there. Its
    /// failure is an error of that side, not a lost write.
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
                // a reset owed from when it was the authoritative side goes
                // first (after the client's own SET it would undo it)
                if let Some(reset) = b.pending_reset.take() {
                    b.queue_silent(reset);
                }
                b.run(&p, kind).await.map_err(Unsendable::Backend)
            }
            Err(u) => Err(u),
        };
        match outcome {
            Ok(s) => {
                if let Some(err) = s.err {
                    warn!(%side, code = err.code, message = %err.message, "session-state statement failed on the other side");
                    self.secondary_error(side);
                }
            }
            Err(u) => {
                self.unsendable(up, gate, side, u);
            }
        }
    }

    /// Judge the answers of deferred mirrored statements read so far (any
    /// later read on that connection reads them first).
    pub fn settle(&mut self, up: &mut Backends, side: Side) {
        let Some(b) = up.get(side) else {
            return;
        };
        for (check, s) in b.take_settled() {
            self.answer_in_txn(side, check, &s);
        }
    }

    /// A connection was taken out of use: judge what it answered; the
    /// deferred statements whose answers will never come, and the share of
    /// the transaction it held, are lost.
    pub fn lost(&mut self, mut backend: Conn) {
        let side = backend.side;
        for (check, s) in backend.take_settled() {
            self.answer_in_txn(side, check, &s);
        }
        let outstanding = backend.deferred_outstanding();
        let Some(t) = &mut self.txn else {
            return;
        };
        t.unreplayable();
        t.halted = true;
        let lost = std::mem::take(&mut t.applied);
        let reason = FailureReason::Unavailable;
        t.missed.extend(lost.into_iter().map(|c| (reason, c)));
        for _ in 0..outstanding {
            t.missed.push((reason, empty_check()));
        }
    }

    /// One answer of the mirror for a statement of the open transaction
    /// (or, with none open, of an autocommit statement: judged at once).
    pub(super) fn answer_in_txn(&mut self, side: Side, check: MirrorCheck, s: &Summary) {
        if let Some(err) = &s.err {
            warn!(%side, code = err.code, message = %err.message, "mirrored statement failed");
            self.secondary_error(side);
        }
        let differs = mismatch(&check, s);
        match &mut self.txn {
            Some(t) => {
                if let Some(kind) = differs {
                    t.mismatches.push((kind, check.clone(), s.ok));
                }
                t.answer(check, s);
            }
            None => match &s.err {
                Some(err) => self.count_failure(side, FailureReason::of(err), &check),
                None => {
                    if let Some(kind) = differs {
                        self.count_mismatch(side, kind, &check, s.ok);
                    }
                    self.count_success(1);
                }
            },
        }
    }

    /// Count and log a failure to send to the other side; a broken
    /// connection is dropped (and, inside a transaction, not reopened
    /// before its end). Returns the failure's reason.
    fn unsendable(
        &mut self,
        up: &mut Backends,
        gate: &mut TxnGate,
        side: Side,
        u: Unsendable,
    ) -> FailureReason {
        self.secondary_error(side);
        match u {
            Unsendable::Backend(e) => {
                warn!(%side, "mirror backend failed: {e}");
                if e.is_fatal() {
                    if let Some(b) = up.take(side) {
                        self.lost(b);
                    }
                    if gate.in_transaction() {
                        gate.suspend_mirror();
                    }
                    return FailureReason::Unavailable;
                }
                match &e {
                    crate::error::BackendError::Server { err, .. } => FailureReason::of(err),
                    _ => FailureReason::Other,
                }
            }
            Unsendable::Malformed => FailureReason::Other,
        }
    }
}

/// The check of a statement whose answer was lost with its connection.
fn empty_check() -> MirrorCheck {
    MirrorCheck {
        primary: Summary::default(),
        pinned: false,
        table: None,
        digest: String::new(),
        multi: false,
    }
}

/// Pause before retry `attempt` (1, 2, …): 10 ms doubling, at most 160 ms.
/// A lock wait timeout already waited `innodb_lock_wait_timeout`; a
/// deadlock retried at once would likely meet the same transaction.
pub(super) fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(10u64 << attempt.saturating_sub(1).min(4))
}
