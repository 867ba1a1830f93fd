//! Running a command under the session's pattern: the authoritative side
//! first (its result streams to the client), then the mirror side, in order.
//! See "How a statement flows" in the README for the path of one COM_QUERY.

use std::time::Instant;

use tracing::warn;

use super::secondary::{Mirrored, Pinning};
use super::Session;
use crate::backend::InfileCopy;
use crate::classify::{Class, TxKind};
use crate::codes;
use crate::error::{BackendError, RelayError, SessionError};
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
        if let Err(e) = self.backends.ensure(plan.primary).await {
            return self.reply_backend_error(e).await;
        }
        let stmts = &mut self.backends.stmts;
        let pinning = self.secondary.pinning(&plan, class, &cmd, stmts);
        let rewritten = pinning.as_ref().and_then(|p| p.analysis.rewritten.clone());
        let cmd = match (&cmd, &rewritten) {
            (Cmd::Raw(_), Some(text)) => Cmd::Raw(text),
            _ => cmd,
        };
        let Some((summary, infile)) = self.on_primary(&plan, &cmd, pinning.as_ref()).await? else {
            return Ok(());
        };
        DataPathStats::incr(&self.shared.stats.statements);
        let failed = summary.is_err();
        self.metrics.record(class, plan.primary, failed, started);
        let other = plan.primary.other();
        if failed {
            // The authoritative side's transaction may be over (deadlock,
            // failed COMMIT): the mirror's must not stay open.
            if ends_transaction(&summary, tx) && plan.mirror.is_some() {
                let (up, gate) = (&mut self.backends, &mut self.gate);
                self.secondary.roll_back_if_open(up, gate, other).await;
            }
        } else {
            if let Some(side) = plan.mirror {
                let m = Mirrored {
                    side,
                    class,
                    cmd: &cmd,
                    primary: &summary,
                    infile: infile.as_ref(),
                    pinning: pinning.as_ref(),
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
        self.after_statement(pattern, &summary).await;
        self.secondary.settle(&mut self.backends, other);
        self.client.flush().await?;
        Ok(())
    }

    /// Send to the authoritative side (pinned like the mirror will be) and
    /// stream its answer to the client. `Ok(None)` when the command could
    /// not be sent (the client got an ERR).
    async fn on_primary(
        &mut self,
        plan: &Plan,
        cmd: &Cmd<'_>,
        pinning: Option<&Pinning>,
    ) -> Result<Option<(Summary, Option<InfileCopy>)>, SessionError> {
        let side = plan.primary;
        let payload = match self.backends.payload_for(cmd, side).await {
            Ok(p) => p,
            Err(u) => return self.reply_unsendable(u).await.map(|()| None),
        };
        if let (Some(p), Some(b)) = (pinning, self.backends.get(side)) {
            p.before(b, None);
        }
        // With a mirror, the client gets its answer only once the other side
        // has applied the statement too: a client that reacts to the answer
        // (or tells another client) cannot get ahead of the mirror, so the
        // other side sees writes in the same causal order.
        let hold = plan.mirror.is_some() || plan.all_connected;
        let result = self
            .relay_primary(side, &payload, ResponseKind::Query, hold)
            .await?;
        if let (Some(p), Some(b)) = (pinning, self.backends.get(side)) {
            p.after(b);
        }
        Ok(Some(result))
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
        let (summary, _) = self.relay_primary(side, payload, kind, true).await?;
        if !summary.is_err() {
            let reset = matches!(remember, Remember::Reset);
            self.fan_out(side, &Cmd::Raw(payload), remember, kind).await;
            if reset {
                self.gate.reset();
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
        // The authoritative side's transaction ended without the other side
        // following (e.g. it failed there): do not leave it open.
        let (up, gate) = (&mut self.backends, &mut self.gate);
        self.secondary
            .roll_back_if_open(up, gate, pattern.primary().other())
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
