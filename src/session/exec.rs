//! Running a command under the session's pattern: the authoritative side
//! first (its result streams to the client), then the mirror side, in order.
//! See "How a statement flows" in the README for the path of one COM_QUERY.

use std::borrow::Cow;
use std::time::Instant;

use tracing::warn;

use super::ledger::TxnEnd;
use super::pinning::{OwedReset, TimestampPin};
use super::prepared::Statements;
use super::secondary::{Mirrored, Pinning};
use super::uservars::VarSync;
use super::Session;
use crate::backend::InfileCopy;
use crate::classify::{Class, TxKind};
use crate::codes;
use crate::config::PinningMode;
use crate::determinism;
use crate::error::{BackendError, RelayError, SessionError};
use crate::fence::Access;
use crate::pattern::{Pattern, Side};
use crate::response::{ResponseKind, Summary};
use crate::route::{self, Plan};
use crate::stats::DataPathStats;

/// The command being run.
pub(crate) enum Cmd<'a> {
    /// Sent to every backend unchanged (COM_QUERY, COM_INIT_DB, …).
    Raw(&'a [u8]),
    /// COM_STMT_EXECUTE: statement id rewritten per backend.
    Execute { id: u32, payload: &'a [u8] },
}

impl Cmd<'_> {
    /// The statement's SQL: the COM_QUERY text, or the prepared statement's
    /// (`None` for an id the session does not know).
    pub(super) fn sql<'s>(&'s self, stmts: &'s mut Statements) -> Option<&'s [u8]> {
        match self {
            Cmd::Raw(p) => Some(p.get(1..).unwrap_or_default()),
            Cmd::Execute { id, .. } => stmts.get_mut(*id).map(|s| &s.sql[..]),
        }
    }
}

/// What a successful session-state command changes in the remembered state.
pub(super) enum Remember {
    Nothing,
    Statement,
    Database(String),
    SetOption(u16),
    Reset,
}

/// Why a command could not be sent to a backend.
pub(super) enum Unsendable {
    Backend(BackendError),
    Malformed,
}

/// What a statement is, as the fence sees it: reads, session state, BEGIN
/// and ROLLBACK make nothing durable; everything else may.
fn access(class: Class, tx: Option<TxKind>) -> Access {
    match (class, tx) {
        (Class::Read | Class::SessionState, _) => Access::Read,
        (Class::Transaction, Some(TxKind::Begin | TxKind::Rollback)) => Access::Read,
        _ => Access::Write,
    }
}

/// How often a statement that passed the fence but found it closed again
/// after waiting at the switch gate goes back to the fence (each wait there
/// is bounded by `fence_wait_ms`).
const FENCE_ATTEMPTS: usize = 3;

/// The SQL text of a statement (a prepared statement's text for EXECUTE;
/// copied only when it names a user variable).
fn statement_text<'a>(cmd: &'a Cmd<'_>, stmts: &mut Statements) -> Cow<'a, [u8]> {
    match cmd {
        Cmd::Raw(p) => Cow::Borrowed(p.get(1..).unwrap_or_default()),
        Cmd::Execute { id, .. } => match stmts.get_mut(*id) {
            Some(s) if s.sql.contains(&b'@') => Cow::Owned(s.sql.clone()),
            _ => Cow::Borrowed(&[]),
        },
    }
}

/// Whether a failed statement ended the transaction on the authoritative
/// side: a deadlock rolls it back, a failed COMMIT ends it.
fn ends_transaction(summary: &Summary, tx: Option<TxKind>) -> bool {
    let deadlock = summary
        .err
        .as_ref()
        .is_some_and(|e| e.code == codes::ER_LOCK_DEADLOCK.code);
    deadlock || tx == Some(TxKind::Commit)
}

impl Session {
    /// Run one statement: authoritative side, then mirror / session fan-out.
    /// It runs under the pattern [`super::txn::TxnGate::begin`] gives it
    /// (waiting while a switch drains); the gate's unit is released at the
    /// end unless a transaction is open, whichever way the statement went.
    pub(super) async fn statement(
        &mut self,
        cmd: Cmd<'_>,
        class: Class,
        tx: Option<TxKind>,
        remember: Remember,
    ) -> Result<(), SessionError> {
        let pattern = match self.begin_admitted(class, tx).await {
            Ok(pattern) => pattern,
            Err(refusal) => {
                warn!("statement refused: {refusal}");
                return self
                    .reply_err(codes::ER_OPTION_PREVENTS_STATEMENT, &refusal)
                    .await;
            }
        };
        let result = self.run_statement(pattern, cmd, class, tx, remember).await;
        self.gate.end();
        result
    }

    /// Pass the fence (a fleet member that cannot vouch for its lease holds
    /// statements back, writes longest) and the stale-transaction rule of
    /// [`super::txn::TxnGate::stale_transaction`], then take the gate unit.
    /// The fence is asked again once the unit is held: a statement that
    /// waited at the gate through a switch this member let go of (its lease
    /// lapsed meanwhile) must not then run under the pattern it knew.
    ///
    /// # Errors
    /// The client's message (sent as `ER_OPTION_PREVENTS_STATEMENT`); no
    /// unit is held then.
    async fn begin_admitted(
        &mut self,
        class: Class,
        tx: Option<TxKind>,
    ) -> Result<Pattern, String> {
        let handle = self.shared.pattern.clone();
        let access = access(class, tx);
        for _ in 0..FENCE_ATTEMPTS {
            handle.fence().admit(access).await.map_err(|f| f.0)?;
            if let Some((was, now)) = self.gate.stale_transaction(&handle) {
                if tx != Some(TxKind::Rollback) {
                    return Err(format!(
                        "cutover: this transaction started under {was}, and the fleet has switched \
                         to {now} while this member was fenced; only ROLLBACK is accepted"
                    ));
                }
            }
            let pattern = self.gate.begin(&handle).await;
            if handle.fence().admits(access) {
                return Ok(pattern);
            }
            self.gate.end();
        }
        Err(
            "cutover: this fleet member's fence kept closing while the statement waited for a \
             pattern switch; not executed; retry later"
                .to_string(),
        )
    }

    async fn run_statement(
        &mut self,
        pattern: Pattern,
        cmd: Cmd<'_>,
        class: Class,
        tx: Option<TxKind>,
        remember: Remember,
    ) -> Result<(), SessionError> {
        let plan = route::plan(pattern, class);
        let started = Instant::now();
        if let Err(e) = self.backends.ensure(plan.primary).await {
            return self.reply_backend_error(e).await;
        }
        let state = &self.backends.state;
        let (client, db) = (state.client_pins, state.database.as_deref());
        let stmts = &mut self.backends.stmts;
        let pinning = self
            .secondary
            .pinning(&plan, class, &cmd, stmts, client, db);
        let rewritten = pinning.as_ref().and_then(|p| p.analysis.rewritten.clone());
        let cmd = match (&cmd, &rewritten) {
            (Cmd::Raw(_), Some(text)) => Cmd::Raw(text),
            _ => cmd,
        };
        if let Some(side) = plan.mirror {
            self.prepare_mirror(side).await;
            let may_commit = matches!(tx, Some(TxKind::Commit | TxKind::Begin))
                || matches!(class, Class::Ddl | Class::SessionState);
            if may_commit && self.secondary.txn.is_some() {
                let up = &mut self.backends;
                self.secondary.settle_for_commit(up, side).await;
            }
        }
        let text = statement_text(&cmd, &mut self.backends.stmts);
        let mut sync = self.plan_var_sync(&text, plan.mirror, class);
        let on_primary = self.on_primary(&plan, (&cmd, tx), pinning.as_ref(), &mut sync);
        let Some((summary, infile)) = on_primary.await? else {
            return Ok(());
        };
        DataPathStats::incr(&self.shared.stats.statements);
        if plan.mirror.is_none() && self.backends.state.client_pins.rand_seed {
            self.note_rand_drift(&cmd);
        }
        let failed = summary.is_err();
        self.metrics.record(class, plan.primary, failed, started);
        let other = plan.primary.other();
        if failed {
            // The authoritative side's transaction may be over (deadlock,
            // failed COMMIT): the mirror's must not stay open.
            if ends_transaction(&summary, tx) && plan.mirror.is_some() {
                let (up, gate) = (&mut self.backends, &mut self.gate);
                let end = TxnEnd::RolledBack;
                self.secondary
                    .transaction_ended(up, gate, other, end, None)
                    .await;
            }
        } else {
            if let Some(side) = plan.mirror {
                let m = Mirrored {
                    side,
                    class,
                    tx,
                    cmd: &cmd,
                    primary: &summary,
                    infile: infile.as_ref(),
                    pinning: pinning.as_ref(),
                    vars: sync.set.as_deref(),
                };
                self.secondary
                    .mirror(&mut self.backends, &mut self.gate, m)
                    .await;
            }
            if plan.all_connected {
                self.fan_out(plan.primary, &cmd, remember, ResponseKind::Query)
                    .await;
            }
        }
        self.after_statement(pattern, &summary, tx).await;
        let mirrored = plan.mirror.is_some() && !failed;
        let both = plan.all_connected && !failed;
        self.finish_var_sync(sync, Some(other), mirrored, both);
        if class == Class::Ddl && !failed {
            let db = self.backends.state.database.clone();
            self.temps.observe(&text, db.as_deref());
            self.secondary.session_has_temporary_tables = !self.temps.is_empty();
            // With pinning = "when_needed" the catalog also says which
            // tables take the clock: any DDL may change that.
            let when_needed = self.shared.config.mirror.pinning == PinningMode::WhenNeeded;
            if when_needed || crate::catalog::changes_stored_programs(&text) {
                self.shared.refresh_catalog().await;
            }
        }
        self.client.flush().await?;
        Ok(())
    }

    /// The client seeded the RNG: a statement that ran on the authoritative
    /// side only and may call RAND() leaves the two RNGs in different states.
    fn note_rand_drift(&mut self, cmd: &Cmd<'_>) {
        let Some(text) = cmd.sql(&mut self.backends.stmts) else {
            return;
        };
        if text.windows(4).any(|w| w.eq_ignore_ascii_case(b"RAND")) {
            self.backends.state.client_pins.rand_drift = true;
        }
    }

    /// Send to the authoritative side (pinned like the mirror will be) and
    /// stream its answer to the client. `Ok(None)` when the command could
    /// not be sent (the client got an ERR).
    async fn on_primary(
        &mut self,
        plan: &Plan,
        (cmd, tx): (&Cmd<'_>, Option<TxKind>),
        pinning: Option<&Pinning>,
        sync: &mut VarSync,
    ) -> Result<Option<(Summary, Option<InfileCopy>)>, SessionError> {
        let side = plan.primary;
        let payload = match self.backends.payload_for(cmd, side).await {
            Ok(p) => p,
            Err(u) => return self.reply_unsendable(u).await.map(|()| None),
        };
        let limit = self.shared.config.limits.max_allowed_packet;
        let mariadb = self.backends.get(side).is_some_and(|b| b.mariadb);
        let (payload, pre, post, clock) = match pinning {
            Some(p) => {
                let x = p.apply(payload.into_owned(), mariadb, None);
                (Cow::Owned(x.payload), x.pre, x.post, x.timestamp)
            }
            None => (payload, None, None, TimestampPin::Untouched),
        };
        self.owed_reset(side, cmd, clock, tx);
        if let Some(b) = self.backends.get(side) {
            sync.queue(b, limit);
            if let Some(pre) = &pre {
                b.queue_silent(pre);
            }
        }
        // With a mirror, the client gets its answer only once the other side
        // has applied the statement too: a client that reacts to the answer
        // (or tells another client) cannot get ahead of the mirror, so the
        // other side sees writes in the same causal order.
        let hold = plan.mirror.is_some() || plan.all_connected;
        let result = self
            .relay_primary(side, &payload, ResponseKind::Query, hold)
            .await?;
        if let Some(b) = self.backends.get(side) {
            // Not sent now: it would reset the diagnostics (ROW_COUNT(),
            // warnings) the client may read next. See `owed_reset`.
            b.pending_reset = post.or(b.pending_reset);
            sync.answered(b);
        }
        Ok(Some(result))
    }

    /// A pinning reset owed by the authoritative connection (pinned around
    /// a prepared statement, or on a server without `SET STATEMENT`) is
    /// sent before this statement when it may read the clock
    /// ([`OwedReset::before`]), unless the statement reads the previous
    /// one's diagnostics: then it waits for the next one (meanwhile NOW()
    /// there returns the pinned write's time).
    fn owed_reset(&mut self, side: Side, cmd: &Cmd<'_>, clock: TimestampPin, tx: Option<TxKind>) {
        let owed = self
            .backends
            .get(side)
            .is_some_and(|b| b.pending_reset.is_some());
        if !owed {
            return;
        }
        let text = cmd.sql(&mut self.backends.stmts).unwrap_or_default();
        let rule = match OwedReset::before(clock, tx, text) {
            OwedReset::Send if determinism::reads_diagnostics(text) => OwedReset::Keep,
            rule => rule,
        };
        if let Some(b) = self.backends.get(side) {
            if let Some(reset) = rule.settle(&mut b.pending_reset) {
                b.queue_silent(reset);
            }
        }
    }

    /// Send to the authoritative backend and stream its answer to the client
    /// (the end held in the client's buffer with `hold`). A backend that
    /// breaks mid-answer ends the session: its transaction and state are gone.
    /// A client that leaves while the backend works gets its query killed
    /// (`Session::client_gone`); what the statement amounted to is still
    /// returned, so a write that completed anyway is mirrored.
    pub(super) async fn relay_primary(
        &mut self,
        side: Side,
        payload: &[u8],
        kind: ResponseKind,
        hold: bool,
    ) -> Result<(Summary, Option<InfileCopy>), SessionError> {
        let limit = self.shared.config.limits.max_allowed_packet;
        let Some(backend) = self.backends.get(side) else {
            return Err(SessionError::Malformed(
                "authoritative backend missing".into(),
            ));
        };
        let result = match backend.send(payload).await {
            Ok(()) => {
                backend
                    .relay(&mut self.client, kind, None, limit, hold)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(r) => Ok(r),
            Err(RelayError::Backend(e)) => {
                warn!("authoritative backend failed mid-statement: {e}");
                let _ = self.client.send_packet(1, &e.to_err_payload()).await;
                self.drop_backend(e.side());
                Err(e.into())
            }
            Err(RelayError::ClientGone(unfinished)) => {
                let summary = self.client_gone(side, unfinished).await?;
                Ok((summary, None))
            }
            Err(e @ (RelayError::Client(_) | RelayError::ClientOutOfOrder)) => {
                if matches!(e, RelayError::ClientOutOfOrder) {
                    let p = codes::ER_NET_PACKETS_OUT_OF_ORDER.payload("Got packets out of order");
                    let _ = self.client.send_packet(0, &p).await;
                }
                Err(e.into())
            }
        }
    }

    /// Commands that only concern the authoritative side and never change
    /// transaction state (PING, STATISTICS, FIELD_LIST).
    pub(super) async fn primary_only(
        &mut self,
        payload: &[u8],
        kind: ResponseKind,
    ) -> Result<(), SessionError> {
        let side = self.current_pattern().primary();
        if let Err(e) = self.backends.ensure(side).await {
            return self.reply_backend_error(e).await;
        }
        self.relay_primary(side, payload, kind, false)
            .await
            .map(|_| ())
    }

    /// INIT_DB, SET_OPTION, RESET_CONNECTION: authoritative side, then every
    /// other open backend; remembered for backends opened later.
    pub(super) async fn session_command(
        &mut self,
        payload: &[u8],
        kind: ResponseKind,
        remember: Remember,
    ) -> Result<(), SessionError> {
        let side = self.current_pattern().primary();
        if let Err(e) = self.backends.ensure(side).await {
            return self.reply_backend_error(e).await;
        }
        if let Some(b) = self.backends.get(side) {
            // INIT_DB / SET_OPTION / RESET_CONNECTION reset the diagnostics anyway
            if let Some(reset) = b.pending_reset.take() {
                b.queue_silent(reset);
            }
        }
        let (summary, _) = self.relay_primary(side, payload, kind, true).await?;
        if !summary.is_err() {
            let reset = matches!(remember, Remember::Reset);
            self.fan_out(side, &Cmd::Raw(payload), remember, kind).await;
            if reset {
                self.gate.reset();
                self.vars.reset();
                self.temps.clear();
                self.secondary.reset();
            }
        }
        self.client.flush().await?;
        Ok(())
    }

    /// Remember a session-state change that succeeded on `primary`, then
    /// apply it on the other side if a connection is open there.
    async fn fan_out(
        &mut self,
        primary: Side,
        cmd: &Cmd<'_>,
        remember: Remember,
        kind: ResponseKind,
    ) {
        self.backends.remember(remember, cmd);
        let (up, gate) = (&mut self.backends, &mut self.gate);
        self.secondary
            .fan_out(up, gate, primary.other(), cmd, kind)
            .await;
    }

    /// Transaction bookkeeping after a statement on `pattern`'s primary. A
    /// deadlock ERR carries no status flags but ends the transaction. The
    /// mirror's pipelined answers read meanwhile are judged; a transaction
    /// that ended on the primary is ended on the mirror too.
    async fn after_statement(&mut self, pattern: Pattern, summary: &Summary, tx: Option<TxKind>) {
        let deadlock = summary
            .err
            .as_ref()
            .is_some_and(|e| e.code == codes::ER_LOCK_DEADLOCK.code);
        let in_trans = summary.in_trans().or(deadlock.then_some(false));
        let open = self.gate.observe(in_trans);
        let other = pattern.primary().other();
        self.secondary.settle(&mut self.backends, other);
        if open {
            return;
        }
        // The authoritative side's transaction is over; the mirror's share
        // follows (rolled back there if the ending statement did not reach it).
        let (up, gate) = (&mut self.backends, &mut self.gate);
        let end = TxnEnd::of(summary, tx);
        self.secondary
            .transaction_ended(up, gate, other, end, summary.autocommit())
            .await;
    }

    /// Take a broken or replaced backend connection out of use; its
    /// outstanding mirrored answers are accounted for.
    pub(super) fn drop_backend(&mut self, side: Side) {
        if let Some(b) = self.backends.take(side) {
            self.secondary.lost(b);
        }
    }

    pub(super) async fn reply_unsendable(&mut self, u: Unsendable) -> Result<(), SessionError> {
        match u {
            Unsendable::Backend(e) => self.reply_backend_error(e).await,
            Unsendable::Malformed => self.reply_malformed_execute().await,
        }
    }

    /// Tell the client a backend failed. A lost authoritative connection
    /// ends the session (its transaction and temporary state are gone).
    pub(super) async fn reply_backend_error(
        &mut self,
        e: BackendError,
    ) -> Result<(), SessionError> {
        self.client.send_packet(1, &e.to_err_payload()).await?;
        if matches!(e, BackendError::Io { .. } | BackendError::Protocol { .. }) {
            self.drop_backend(e.side());
            return Err(e.into());
        }
        Ok(())
    }
}
