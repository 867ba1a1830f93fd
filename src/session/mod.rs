//! One client session: authentication, the command loop, session state,
//! prepared statements and transaction bookkeeping.

mod exec;
pub mod handshake;
mod kill;
mod metrics;
mod mirror;
pub mod prepared;
pub mod state;

use std::sync::Arc;

use mysql_common::constants::StatusFlags;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::backend::Backend;
use crate::classify::{self, Class};
use crate::error::SessionError;
use crate::pattern::{InFlight, Pattern, Side};
use crate::response::ResponseKind;
use crate::shared::Shared;
use crate::wire::{self, PacketIo, ReadError};

use handshake::Login;
use prepared::Statements;
use state::SessionState;

const ER_UNKNOWN_COM_ERROR: u16 = 1047;
const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
const ER_UNKNOWN_STMT_HANDLER: u16 = 1243;
const ER_WRONG_ARGUMENTS: u16 = 1210;
const ER_MAX_PREPARED_STMT_COUNT_REACHED: u16 = 1461;

/// Serve one accepted client until it quits, fails, or `shutdown` is
/// cancelled (checked between commands: a running statement finishes).
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, shutdown: CancellationToken) {
    let conn_id = shared.next_conn_id();
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let span =
        tracing::info_span!("conn", id = conn_id, peer = %peer, user = tracing::field::Empty);
    async move {
        let client = PacketIo::new(stream);
        match Session::start(shared, client, conn_id).await {
            Ok(Some(mut session)) => {
                tracing::Span::current().record("user", session.login.user.as_str());
                debug!("authenticated");
                if let Err(e) = session.run(shutdown).await {
                    match e {
                        SessionError::ClientIo(_) => debug!("client connection ended: {e}"),
                        _ => warn!("session ended: {e}"),
                    }
                }
                session.close().await;
            }
            Ok(None) => {}
            // A bare TCP check (load balancer, port probe) is not worth an INFO line.
            Err(SessionError::ClientIo(e)) => debug!("client left before logging in: {e}"),
            Err(e) => info!("login failed: {e}"),
        }
    }
    .instrument(span)
    .await
}

/// What to do after a command.
enum Flow {
    Continue,
    Quit,
}

pub struct Session {
    shared: Arc<Shared>,
    client: PacketIo,
    conn_id: u32,
    login: Login,
    scramble: [u8; 20],
    backends: [Option<Backend>; 2],
    state: SessionState,
    stmts: Statements,
    /// The pattern a running transaction started under (kept until it ends).
    txn_pattern: Option<Pattern>,
    /// Held while a transaction / autocommit statement runs (pattern gate).
    unit: Option<InFlight>,
    metrics: metrics::StatementMetrics,
    /// The mirror side was lost or skipped inside the current transaction:
    /// do not reopen it before the transaction ends.
    mirror_suspended: bool,
}

impl Session {
    /// Handshake, authentication and the first backend connection.
    /// `Ok(None)` when the client was refused (the ERR is already sent).
    async fn start(
        shared: Arc<Shared>,
        mut client: PacketIo,
        conn_id: u32,
    ) -> Result<Option<Session>, SessionError> {
        let identity = shared.identity();
        let (login, scramble) =
            handshake::accept(&mut client, &shared.config, &identity, conn_id).await?;
        let seq = login.seq;
        let mut session = Session {
            state: SessionState::new(login.database.clone()),
            shared,
            client,
            conn_id,
            login,
            scramble,
            backends: [None, None],
            stmts: Statements::default(),
            txn_pattern: None,
            unit: None,
            metrics: metrics::StatementMetrics::default(),
            mirror_suspended: false,
        };
        let primary = session.shared.pattern.load().primary();
        if let Err(e) = session.ensure_backend(primary).await {
            session.client.send_packet(seq, &e.to_err_payload()).await?;
            return Err(e.into());
        }
        let status = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        session
            .client
            .send_packet(seq, &wire::ok_payload(0, 0, 0, status, 0))
            .await?;
        Ok(Some(session))
    }

    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), SessionError> {
        let limit = self.shared.config.limits.max_allowed_packet;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let packet = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                p = self.client.read_packet(limit) => p,
            };
            let payload = match packet {
                Ok(Some((payload, _))) => payload,
                Ok(None) => return Ok(()),
                Err(ReadError::TooLarge) => {
                    let msg = "Got a packet bigger than 'max_allowed_packet' bytes";
                    self.reply_err(ER_NET_PACKET_TOO_LARGE, "08S01", msg)
                        .await?;
                    return Err(SessionError::PacketTooLarge);
                }
                Err(ReadError::Io(e)) => return Err(e.into()),
            };
            if payload.is_empty() {
                return Err(SessionError::Malformed("empty command packet".into()));
            }
            match self.command(&payload).await? {
                Flow::Continue => {}
                Flow::Quit => return Ok(()),
            }
        }
    }

    async fn command(&mut self, payload: &[u8]) -> Result<Flow, SessionError> {
        match payload[0] {
            0x01 => return Ok(Flow::Quit),
            0x02 => {
                let db = String::from_utf8_lossy(&payload[1..]).into_owned();
                self.session_command(payload, ResponseKind::Single, exec::Remember::Database(db))
                    .await?
            }
            0x03 => {
                if let Some(kill) = kill::parse(&payload[1..]) {
                    self.kill(kill).await?;
                    return Ok(Flow::Continue);
                }
                let c = classify::classify(&payload[1..]);
                let remember = match (&c.use_db, c.class) {
                    (Some(db), _) => exec::Remember::Database(db.clone()),
                    (None, Class::SessionState) => exec::Remember::Statement,
                    _ => exec::Remember::Nothing,
                };
                let cmd = exec::Cmd::Raw(payload);
                self.statement(cmd, c.class, c.tx, remember).await?
            }
            0x04 => self.primary_only(payload, ResponseKind::Rows).await?,
            0x09 | 0x0E => self.primary_only(payload, ResponseKind::Single).await?,
            0x11 => return self.change_user(payload).await,
            0x16 => self.prepare(payload).await?,
            0x17 => self.execute(payload).await?,
            0x18 => self.long_data(payload).await?,
            0x19 => self.close_statement(payload).await,
            0x1A => self.reset_statement(payload).await?,
            0x1B => {
                let opt = payload.get(1..3).map(|b| u16::from_le_bytes([b[0], b[1]]));
                match opt {
                    Some(o) => {
                        self.session_command(
                            payload,
                            ResponseKind::Single,
                            exec::Remember::SetOption(o),
                        )
                        .await?
                    }
                    None => {
                        self.reply_err(ER_WRONG_ARGUMENTS, "HY000", "Malformed COM_SET_OPTION")
                            .await?
                    }
                }
            }
            0x1C => self.fetch(payload).await?,
            0x1F => {
                self.session_command(payload, ResponseKind::Single, exec::Remember::Reset)
                    .await?
            }
            other => {
                debug!(command = other, "unsupported command");
                self.reply_err(ER_UNKNOWN_COM_ERROR, "08S01", "Unknown command")
                    .await?
            }
        }
        Ok(Flow::Continue)
    }

    async fn reply_err(&mut self, code: u16, state: &str, msg: &str) -> Result<(), SessionError> {
        self.client
            .send_packet(1, &wire::err_payload(code, state, msg))
            .await?;
        Ok(())
    }

    fn statement_id(&self, payload: &[u8]) -> Option<u32> {
        let id = payload
            .get(1..5)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
        Some(self.stmts.resolve(id))
    }

    async fn unknown_statement(&mut self, id: u32, what: &str) -> Result<(), SessionError> {
        let msg = format!("Unknown prepared statement handler ({id}) given to {what}");
        self.reply_err(ER_UNKNOWN_STMT_HANDLER, "HY000", &msg).await
    }

    async fn prepare(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        if self.stmts.len() >= prepared::MAX_STATEMENTS {
            let msg =
                "Can't create more than max_prepared_stmt_count statements (current value: 16382)";
            return self
                .reply_err(ER_MAX_PREPARED_STMT_COUNT_REACHED, "42000", msg)
                .await;
        }
        let class = classify::classify_class(&payload[1..]);
        self.prepare_statement(payload, class).await
    }

    async fn execute(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let Some(id) = self.statement_id(payload) else {
            return self
                .reply_err(
                    ER_WRONG_ARGUMENTS,
                    "HY000",
                    "Incorrect arguments to mysqld_stmt_execute",
                )
                .await;
        };
        let Some(class) = self.stmts.get_mut(id).map(|s| s.class) else {
            return self.unknown_statement(id, "mysqld_stmt_execute").await;
        };
        let tx = (class == Class::Transaction).then_some(classify::TxKind::Other);
        self.statement(
            exec::Cmd::Execute { id, payload },
            class,
            tx,
            exec::Remember::Nothing,
        )
        .await
    }

    async fn long_data(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        // No response is ever sent for SEND_LONG_DATA; errors surface at execute.
        let Some(id) = self.statement_id(payload) else {
            return Ok(());
        };
        let Some(class) = self.stmts.get_mut(id).map(|s| s.class) else {
            return Ok(());
        };
        let pattern = self.current_pattern();
        let plan = crate::route::plan(pattern, class);
        for side in std::iter::once(plan.primary).chain(plan.mirror) {
            self.send_to_statement(side, id, payload).await;
        }
        Ok(())
    }

    async fn close_statement(&mut self, payload: &[u8]) {
        let Some(id) = self.statement_id(payload) else {
            return;
        };
        let Some(stmt) = self.stmts.remove(id) else {
            return;
        };
        for side in [Side::Source, Side::Destination] {
            if let (Some(p), Some(b)) = (
                stmt.with_id(side, payload),
                self.backends[side.index()].as_mut(),
            ) {
                if let Err(e) = b.send(&p).await {
                    debug!("closing statement on {side}: {e}");
                    self.drop_backend(side);
                }
            }
        }
    }

    async fn reset_statement(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let Some(id) = self
            .statement_id(payload)
            .filter(|id| self.stmts.get_mut(*id).is_some())
        else {
            let id = self.statement_id(payload).unwrap_or(0);
            return self.unknown_statement(id, "mysqld_stmt_reset").await;
        };
        let primary = self.current_pattern().primary();
        for side in [primary.other()] {
            if let (Some(p), Some(b)) = (
                self.stmts
                    .get_mut(id)
                    .and_then(|s| s.with_id(side, payload)),
                self.backends[side.index()].as_mut(),
            ) {
                if b.run(&p, ResponseKind::Single).await.is_err() {
                    self.drop_backend(side);
                }
            }
        }
        self.statement_on_primary(id, payload, ResponseKind::Single)
            .await
    }

    async fn fetch(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        let Some(id) = self
            .statement_id(payload)
            .filter(|id| self.stmts.get_mut(*id).is_some())
        else {
            let id = self.statement_id(payload).unwrap_or(0);
            return self.unknown_statement(id, "mysqld_stmt_fetch").await;
        };
        self.statement_on_primary(id, payload, ResponseKind::Rows)
            .await
    }

    async fn change_user(&mut self, payload: &[u8]) -> Result<Flow, SessionError> {
        let Some(cu) = handshake::parse_change_user(payload, self.login.capabilities) else {
            return Err(SessionError::Malformed("COM_CHANGE_USER".into()));
        };
        let seq = match handshake::change_user(
            &mut self.client,
            &self.shared.config,
            &mut self.scramble,
            &cu,
        )
        .await
        {
            Ok(seq) => seq,
            Err(SessionError::AccessDenied(u)) => {
                info!(user = %u, "change user denied; closing");
                return Ok(Flow::Quit);
            }
            Err(e) => return Err(e),
        };
        for side in [Side::Source, Side::Destination] {
            if let Some(b) = self.backends[side.index()].take() {
                b.quit().await;
                self.shared.sessions.set(self.conn_id, side, None);
            }
        }
        self.login.user = cu.user;
        if let Some(c) = cu.collation {
            self.login.collation = c;
        }
        self.state = SessionState::new(cu.database);
        self.stmts.clear();
        self.txn_pattern = None;
        self.unit = None;
        self.mirror_suspended = false;
        let primary = self.current_pattern().primary();
        if let Err(e) = self.ensure_backend(primary).await {
            self.client.send_packet(seq, &e.to_err_payload()).await?;
            return Ok(Flow::Quit);
        }
        let status = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        self.client
            .send_packet(seq, &wire::ok_payload(0, 0, 0, status, 0))
            .await?;
        Ok(Flow::Continue)
    }

    /// The pattern for the next statement: the running transaction's, or the current one.
    fn current_pattern(&self) -> Pattern {
        self.txn_pattern
            .unwrap_or_else(|| self.shared.pattern.load())
    }

    async fn close(mut self) {
        self.shared.sessions.remove(self.conn_id);
        for side in [Side::Source, Side::Destination] {
            if let Some(b) = self.backends[side.index()].take() {
                b.quit().await;
            }
        }
        self.client.shutdown().await;
        debug!(conn = self.conn_id, "closed");
    }
}
