//! Running a command under the session's pattern: the authoritative side
//! first (its result streams to the client), then the mirror, in order.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::Session;
use crate::backend::{Backend, ConnectParams, InfileCopy};
use crate::classify::{Class, TxKind};
use crate::codes;
use crate::command::{self, Com};
use crate::determinism;
use crate::error::{BackendError, RelayError, SessionError};
use crate::pattern::{Pattern, Side};
use crate::response::{ResponseKind, Summary};
use crate::route;
use crate::stats::DataPathStats;

/// The command being run.
pub(crate) enum Cmd<'a> {
    /// Sent to every backend unchanged (COM_QUERY, COM_INIT_DB, …).
    Raw(&'a [u8]),
    /// COM_STMT_EXECUTE: statement id rewritten per backend.
    Execute { id: u32, payload: &'a [u8] },
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

impl Session {
    /// Make sure a connection to `side` exists, opening it and bringing it to
    /// the session's state if needed.
    pub(super) async fn ensure_backend(&mut self, side: Side) -> Result<(), BackendError> {
        if self.backends[side.index()].is_some() {
            return Ok(());
        }
        let cfg = self.shared.backend_config(side).clone();
        let params = ConnectParams {
            capabilities: self.login.capabilities,
            collation: self.login.collation,
            database: self.state.database.clone(),
            max_packet: self.shared.config.limits.max_allowed_packet as u32,
            timeout: self.shared.connect_timeout(),
            attributes: self.login.attributes.clone(),
        };
        let stats = &self.shared.stats;
        let result = Backend::connect(&cfg, side, &params).await;
        let (mut backend, greeting) = match result {
            Ok(ok) => ok,
            Err(e) => {
                DataPathStats::incr(&stats.backend_connect_failures[side.index()]);
                if e.is_fatal() {
                    let limits = &self.shared.config.limits;
                    self.shared.backoff[side.index()].failed(
                        e.to_string(),
                        Duration::from_millis(limits.secondary_backoff_min_ms),
                        Duration::from_millis(limits.secondary_backoff_max_ms),
                    );
                    metrics::gauge!("cutover_backend_up", "backend" => side.as_str()).set(0.0);
                }
                return Err(e);
            }
        };
        DataPathStats::incr(&stats.backend_connects[side.index()]);
        self.shared.backoff[side.index()].succeeded();
        self.shared.learn_greeting(side, &greeting);
        metrics::gauge!("cutover_backend_up", "backend" => side.as_str()).set(1.0);
        if let Some(opt) = self.state.set_option {
            let p = command::payload(Com::COM_SET_OPTION, &opt.to_le_bytes());
            replay(&mut backend, &p, ResponseKind::Single).await?;
        }
        for sql in self.state.statements() {
            replay(&mut backend, &command::query(sql), ResponseKind::Query).await?;
        }
        debug!(%side, thread_id = backend.thread_id, "backend connection ready");
        self.shared
            .sessions
            .set(self.conn_id, side, Some(backend.thread_id));
        self.backends[side.index()] = Some(backend);
        Ok(())
    }

    pub(super) fn drop_backend(&mut self, side: Side) {
        self.process_settled(side);
        let lost = self.backends[side.index()]
            .as_ref()
            .map_or(0, |b| b.deferred_outstanding());
        // deferred mirrored statements whose answers will never come
        for _ in 0..lost {
            self.count_secondary_failure(side);
        }
        if self.backends[side.index()].take().is_some() {
            self.stmts.forget_side(side);
            self.shared.sessions.set(self.conn_id, side, None);
            debug!(%side, "dropped backend connection");
        }
    }

    /// The bytes to send to `side` for this command.
    pub(super) async fn payload_for<'a>(
        &mut self,
        cmd: &Cmd<'a>,
        side: Side,
    ) -> Result<Cow<'a, [u8]>, Unsendable> {
        match cmd {
            Cmd::Raw(p) => Ok(Cow::Borrowed(p)),
            Cmd::Execute { id, payload } => {
                self.ensure_prepared(side, *id).await?;
                let stmt = self.stmts.get_mut(*id).ok_or(Unsendable::Malformed)?;
                stmt.execute_for(side, payload)
                    .map(Cow::Owned)
                    .ok_or(Unsendable::Malformed)
            }
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

    /// Run one statement: authoritative side, then mirror / session fan-out.
    /// Outside a transaction this starts a unit of work at the pattern gate
    /// (waiting while a switch drains); the unit ends when no transaction is
    /// open afterwards, whichever way the statement went.
    pub(super) async fn statement(
        &mut self,
        cmd: Cmd<'_>,
        class: Class,
        tx: Option<TxKind>,
        remember: Remember,
    ) -> Result<(), SessionError> {
        let pattern = self.gate.begin(&self.shared.pattern).await;
        let result = self.run_statement(pattern, cmd, class, tx, remember).await;
        self.gate.end();
        result
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
        if let Err(e) = self.ensure_backend(plan.primary).await {
            return self.reply_backend_error(e).await;
        }
        let pinning = self.pinning(&plan, class, &cmd);
        let rewritten = pinning.as_ref().and_then(|p| p.analysis.rewritten.clone());
        let cmd = match (&cmd, &rewritten) {
            (Cmd::Raw(_), Some(text)) => Cmd::Raw(text),
            _ => cmd,
        };
        if let Some(p) = &pinning {
            self.flag_unsafe(p);
        }
        let payload = match self.payload_for(&cmd, plan.primary).await {
            Ok(p) => p,
            Err(u) => return self.reply_unsendable(u).await,
        };
        if let (Some(p), Some(b)) = (&pinning, self.backends[plan.primary.index()].as_mut()) {
            b.queue_silent(&p.pin.prefix(None));
        }
        // With a mirror, the client gets its answer only once the other side
        // has applied the statement too: a client that reacts to the answer
        // (or tells another client) cannot get ahead of the mirror, so the
        // other side sees writes in the same causal order.
        let hold = plan.mirror.is_some() || plan.all_connected;
        let (summary, infile) = self
            .relay_primary(plan.primary, &payload, ResponseKind::Query, hold)
            .await?;
        if let (Some(_), Some(b)) = (&pinning, self.backends[plan.primary.index()].as_mut()) {
            b.queue_silent(&determinism::reset());
        }
        DataPathStats::incr(&self.shared.stats.statements);
        self.metrics
            .record(class, plan.primary, summary.is_err(), started);

        if summary.is_err() {
            let ended = summary
                .err
                .as_ref()
                .is_some_and(|e| e.code == codes::ER_LOCK_DEADLOCK.code)
                || tx == Some(TxKind::Commit);
            if ended && plan.mirror.is_some() {
                self.rollback_others(plan.primary).await;
            }
        } else {
            if let Some(side) = plan.mirror {
                // Plain writes inside a transaction are pipelined: nobody else
                // can see them before COMMIT, which is mirrored synchronously.
                let defer = class == Class::Write
                    && self.gate.in_transaction()
                    && summary.in_trans() == Some(true);
                self.mirror(
                    side,
                    &cmd,
                    &summary,
                    infile.as_ref(),
                    pinning.as_ref(),
                    defer,
                )
                .await;
            }
            if plan.all_connected {
                self.fan_out(plan.primary, &cmd, remember).await;
            }
        }
        self.after_statement(pattern, &summary).await;
        self.process_settled(pattern.primary().other());
        self.client.flush().await?;
        Ok(())
    }

    /// Send to the authoritative backend and stream its answer to the client.
    pub(super) async fn relay_primary(
        &mut self,
        side: Side,
        payload: &[u8],
        kind: ResponseKind,
        hold: bool,
    ) -> Result<(Summary, Option<InfileCopy>), SessionError> {
        let limit = self.shared.config.limits.max_allowed_packet;
        let Some(backend) = self.backends[side.index()].as_mut() else {
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
                // Its transaction and session state are gone: tell the client and end.
                let _ = self.client.send_packet(1, &e.to_err_payload()).await;
                self.drop_backend(e.side());
                Err(e.into())
            }
            Err(RelayError::Client(e)) => Err(e.into()),
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
        if let Err(e) = self.ensure_backend(side).await {
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
        let pattern = self.current_pattern();
        let side = pattern.primary();
        if let Err(e) = self.ensure_backend(side).await {
            return self.reply_backend_error(e).await;
        }
        let (summary, _) = self.relay_primary(side, payload, kind, true).await?;
        if !summary.is_err() {
            let reset = matches!(remember, Remember::Reset);
            self.fan_out_kind(side, &Cmd::Raw(payload), remember, kind)
                .await;
            if reset {
                self.gate.reset();
            }
        }
        self.client.flush().await?;
        Ok(())
    }

    async fn fan_out(&mut self, primary: Side, cmd: &Cmd<'_>, remember: Remember) {
        self.fan_out_kind(primary, cmd, remember, ResponseKind::Query)
            .await
    }

    async fn fan_out_kind(
        &mut self,
        primary: Side,
        cmd: &Cmd<'_>,
        remember: Remember,
        kind: ResponseKind,
    ) {
        match remember {
            Remember::Nothing => {}
            Remember::Statement => {
                if let Cmd::Raw(p) = cmd {
                    self.state.record(&p[1..]);
                    if self.state.overflowed {
                        warn!("more than 1024 distinct session-state statements; the oldest will not be replayed on new backend connections");
                    }
                }
            }
            Remember::Database(db) => self.state.database = Some(db),
            Remember::SetOption(o) => self.state.set_option = Some(o),
            Remember::Reset => {
                self.state.reset();
                self.stmts.clear();
            }
        }
        let other = primary.other();
        if self.backends[other.index()].is_none() {
            return;
        }
        let outcome = match self.payload_for(cmd, other).await {
            Ok(p) => {
                let b = self.backends[other.index()]
                    .as_mut()
                    .expect("checked above");
                b.run(&p, kind).await.map_err(Unsendable::Backend)
            }
            Err(u) => Err(u),
        };
        self.note_secondary(other, outcome, None);
    }

    /// Transaction bookkeeping after a statement on `pattern`'s primary. A
    /// deadlock ERR carries no status flags but ends the transaction.
    async fn after_statement(&mut self, pattern: Pattern, summary: &Summary) {
        let deadlock = summary
            .err
            .as_ref()
            .is_some_and(|e| e.code == codes::ER_LOCK_DEADLOCK.code);
        let in_trans = summary.in_trans().or(deadlock.then_some(false));
        if self.gate.observe(in_trans) {
            return;
        }
        let other = pattern.primary().other();
        if self.backends[other.index()]
            .as_ref()
            .is_some_and(|b| b.in_trans)
        {
            // The authoritative side's transaction ended without the other
            // side following (e.g. it failed there): do not leave it open.
            self.rollback_others(pattern.primary()).await;
        }
    }
}

/// Replay one session-state command on a fresh backend. Server errors are
/// logged (the statement succeeded on the authoritative side before);
/// broken connections fail the open.
async fn replay<T>(
    backend: &mut Backend<T>,
    payload: &[u8],
    kind: ResponseKind,
) -> Result<(), BackendError> {
    let s = backend.run(payload, kind).await?;
    if let Some(err) = s.err {
        warn!(side = %backend.side, code = err.code, "replaying session state failed: {}", err.message);
    }
    Ok(())
}
