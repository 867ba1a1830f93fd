//! Running a command under the session's pattern: the authoritative side
//! first (its result streams to the client), then the mirror, in order.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::prepared::Statement;
use super::{Session, ER_WRONG_ARGUMENTS};
use crate::backend::{Backend, ConnectParams, InfileCopy};
use crate::classify::{Class, TxKind};
use crate::determinism;
use crate::error::{BackendError, SessionError};
use crate::pattern::{Pattern, Side};
use crate::response::{ResponseKind, Summary};
use crate::route;
use crate::stats::DataPathStats;

const ER_LOCK_DEADLOCK: u16 = 1213;

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
            let mut p = vec![0x1B];
            p.extend_from_slice(&opt.to_le_bytes());
            replay(&mut backend, &p, ResponseKind::Single).await?;
        }
        for sql in self.state.statements() {
            let mut p = Vec::with_capacity(sql.len() + 1);
            p.push(0x03);
            p.extend_from_slice(sql);
            replay(&mut backend, &p, ResponseKind::Query).await?;
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

    /// Lazily prepare statement `id` on `side` (which must be connected).
    async fn ensure_prepared(&mut self, side: Side, id: u32) -> Result<(), Unsendable> {
        let Some(stmt) = self.stmts.get_mut(id) else {
            return Err(Unsendable::Malformed);
        };
        if stmt.id(side).is_some() {
            return Ok(());
        }
        let mut p = Vec::with_capacity(stmt.sql.len() + 1);
        p.push(0x16);
        p.extend_from_slice(&stmt.sql);
        let backend = self.backends[side.index()]
            .as_mut()
            .ok_or(Unsendable::Malformed)?;
        let summary = backend
            .run(&p, ResponseKind::Prepare)
            .await
            .map_err(Unsendable::Backend)?;
        if let Some(err) = summary.err {
            return Err(Unsendable::Backend(BackendError::Server { side, err }));
        }
        let (backend_id, _, _) = summary.prepared.ok_or(Unsendable::Malformed)?;
        if let Some(stmt) = self.stmts.get_mut(id) {
            stmt.set_id(side, backend_id);
        }
        Ok(())
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

    async fn reply_unsendable(&mut self, u: Unsendable) -> Result<(), SessionError> {
        match u {
            Unsendable::Backend(e) => self.reply_backend_error(e).await,
            Unsendable::Malformed => {
                self.reply_err(
                    ER_WRONG_ARGUMENTS,
                    "HY000",
                    "Incorrect arguments to mysqld_stmt_execute",
                )
                .await
            }
        }
    }

    /// Tell the client a backend failed. A lost authoritative connection
    /// ends the session (its transaction and temporary state are gone).
    async fn reply_backend_error(&mut self, e: BackendError) -> Result<(), SessionError> {
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
        let pattern = match self.txn_pattern {
            Some(p) => p,
            None => {
                let (p, unit) = self.shared.pattern.enter().await;
                self.unit = Some(unit);
                p
            }
        };
        let result = self.run_statement(pattern, cmd, class, tx, remember).await;
        if self.txn_pattern.is_none() {
            self.unit = None;
        }
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
            b.queue_silent(determinism::RESET);
        }
        DataPathStats::incr(&self.shared.stats.statements);
        self.metrics
            .record(class, plan.primary, summary.is_err(), started);

        if summary.is_err() {
            let ended = summary
                .err
                .as_ref()
                .is_some_and(|e| e.code == ER_LOCK_DEADLOCK)
                || tx == Some(TxKind::Commit);
            if ended && plan.mirror.is_some() {
                self.rollback_others(plan.primary).await;
            }
        } else {
            if let Some(side) = plan.mirror {
                // Plain writes inside a transaction are pipelined: nobody else
                // can see them before COMMIT, which is mirrored synchronously.
                let defer = class == Class::Write
                    && self.txn_pattern.is_some()
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
    async fn relay_primary(
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
            Err(SessionError::Backend(e)) => {
                warn!("authoritative backend failed mid-statement: {e}");
                // Its transaction and session state are gone: tell the client and end.
                let _ = self.client.send_packet(1, &e.to_err_payload()).await;
                self.drop_backend(e.side());
                Err(e.into())
            }
            Err(e) => Err(e),
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
                self.txn_pattern = None;
                self.unit = None;
                self.mirror_suspended = false;
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

    /// Transaction bookkeeping after a statement on `pattern`'s primary.
    async fn after_statement(&mut self, pattern: Pattern, summary: &Summary) {
        let in_trans = match summary.in_trans() {
            Some(t) => t,
            None if summary
                .err
                .as_ref()
                .is_some_and(|e| e.code == ER_LOCK_DEADLOCK) =>
            {
                false
            }
            None => self.txn_pattern.is_some(),
        };
        if in_trans {
            self.txn_pattern = Some(pattern);
            return;
        }
        self.txn_pattern = None;
        self.mirror_suspended = false;
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

    pub(super) async fn prepare_statement(
        &mut self,
        payload: &[u8],
        class: Class,
    ) -> Result<(), SessionError> {
        let pattern = self.current_pattern();
        let plan = route::plan(pattern, class);
        if let Err(e) = self.ensure_backend(plan.primary).await {
            return self.reply_backend_error(e).await;
        }
        let proxy_id = self.stmts.peek_next_id();
        let limit = self.shared.config.limits.max_allowed_packet;
        let backend = self.backends[plan.primary.index()]
            .as_mut()
            .expect("ensured");
        let result = match backend.send(payload).await {
            Ok(()) => {
                backend
                    .relay(
                        &mut self.client,
                        ResponseKind::Prepare,
                        Some(proxy_id),
                        limit,
                        false,
                    )
                    .await
            }
            Err(e) => Err(e.into()),
        };
        let summary = match result {
            Ok((s, _)) => s,
            Err(SessionError::Backend(e)) => return self.reply_backend_error(e).await,
            Err(e) => return Err(e),
        };
        let Some((backend_id, _, params)) = summary.prepared else {
            return Ok(());
        };
        let mut stmt = Statement::new(payload[1..].to_vec(), class, params);
        stmt.set_id(plan.primary, backend_id);
        let Some(id) = self.stmts.insert(stmt) else {
            return Ok(());
        };
        debug_assert_eq!(id, proxy_id);
        // Writes are prepared on the mirror side at once (a backing-off side
        // is skipped; it gets the statement lazily at its first execute).
        let Some(side) = plan.mirror.filter(|_| class != Class::Read) else {
            return Ok(());
        };
        let reachable = self.backends[side.index()].is_some()
            || self.shared.backoff[side.index()].check().is_ok();
        if reachable && self.ensure_backend(side).await.is_ok() {
            if let Err(Unsendable::Backend(e)) = self.ensure_prepared(side, id).await {
                warn!(%side, "prepare on mirror failed: {e}");
                self.count_secondary_failure(side);
            }
        }
        Ok(())
    }

    /// RESET / FETCH: the authoritative side answers.
    pub(super) async fn statement_on_primary(
        &mut self,
        id: u32,
        payload: &[u8],
        kind: ResponseKind,
    ) -> Result<(), SessionError> {
        let side = self.current_pattern().primary();
        if let Err(e) = self.ensure_backend(side).await {
            return self.reply_backend_error(e).await;
        }
        if let Err(u) = self.ensure_prepared(side, id).await {
            return self.reply_unsendable(u).await;
        }
        let p = self
            .stmts
            .get_mut(id)
            .and_then(|s| s.with_id(side, payload))
            .unwrap_or_default();
        self.relay_primary(side, &p, kind, false).await.map(|_| ())
    }

    /// SEND_LONG_DATA (no response) to one side.
    pub(super) async fn send_to_statement(&mut self, side: Side, id: u32, payload: &[u8]) {
        if self.backends[side.index()].is_none() || self.ensure_prepared(side, id).await.is_err() {
            return;
        }
        let p = self
            .stmts
            .get_mut(id)
            .and_then(|s| s.with_id(side, payload));
        if let (Some(p), Some(b)) = (p, self.backends[side.index()].as_mut()) {
            if b.send(&p).await.is_err() {
                self.drop_backend(side);
            }
        }
    }
}

/// Replay one session-state command on a fresh backend. Server errors are
/// logged (the statement succeeded on the authoritative side before);
/// broken connections fail the open.
async fn replay(
    backend: &mut Backend,
    payload: &[u8],
    kind: ResponseKind,
) -> Result<(), BackendError> {
    let s = backend.run(payload, kind).await?;
    if let Some(err) = s.err {
        warn!(side = %backend.side, code = err.code, "replaying session state failed: {}", err.message);
    }
    Ok(())
}
