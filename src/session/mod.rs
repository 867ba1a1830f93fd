//! One client session: the login, the command loop, and one `on_*` handler
//! per command.
//!
//! A session owns its client connection and its `Backends` (one pinned
//! connection per side, opened on demand), its `TxnGate` (the pattern a
//! statement runs under) and its `Secondary` (the mirror side). Statement
//! execution is in `exec`, prepared statements in `prepared`.

#![warn(missing_docs)]

mod align;
mod auth;
mod backends;
mod ddl_defaults;
mod exec;
pub mod handshake;
mod kill;
mod ledger;
mod login;
mod metrics;
mod mirror_txn;
pub mod passthrough;
mod pinning;
pub mod prepared;
mod secondary;
mod secure;
pub mod state;
mod temptables;
#[cfg(test)]
mod tests;
pub mod throttle;
mod txn;
mod uservars;
mod watch;

use std::sync::Arc;

use mysql_common::constants::StatusFlags;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::backend::ConnectParams;
use crate::classify::{self, Class};
use crate::codes::{self, ErrorCode};
use crate::command::{Com, Command, ParseError};
use crate::error::SessionError;
use crate::pattern::Pattern;
use crate::response::ResponseKind;
use crate::shared::Shared;
use crate::wire::{self, PacketIo, ReadError};

use backends::Backends;
use handshake::Login;
use secondary::Secondary;
use txn::TxnGate;

/// Serve one accepted client until it quits, fails, or `shutdown` is
/// cancelled (checked between commands: a running statement finishes).
/// `unauthenticated` is the connection's share of
/// `max_unauthenticated_connections`, given back once it logged in.
pub async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    shutdown: CancellationToken,
    unauthenticated: OwnedSemaphorePermit,
) {
    let conn_id = shared.next_conn_id();
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let span =
        tracing::info_span!("conn", id = conn_id, peer = %peer, user = tracing::field::Empty);
    async move {
        let client = PacketIo::new(stream);
        match Session::start(shared, client, conn_id, unauthenticated).await {
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
            Err(SessionError::HandshakeTimeout) => {}
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

/// One authenticated client and everything it owns.
pub struct Session {
    shared: Arc<Shared>,
    client: PacketIo,
    conn_id: u32,
    login: Login,
    /// The scramble the client's password was last checked against.
    scramble: [u8; 20],
    /// Close the client connection with a reset (the authoritative backend
    /// reset the idle session) instead of gracefully.
    reset_client: bool,
    /// Backend connections, replayable session state, prepared statements.
    backends: Backends,
    /// The open transaction's frozen pattern and the pattern gate unit.
    gate: TxnGate,
    /// The mirror side.
    secondary: Secondary,
    /// User variables and whether the mirror holds the primary's values.
    vars: uservars::UserVars,
    /// Temporary tables, for mirror connections opened later.
    temps: temptables::TempTables,
    metrics: metrics::StatementMetrics,
}

impl Session {
    /// Handshake, authentication and the first backend connection.
    /// `Ok(None)` when the client was refused (the ERR is already sent).
    async fn start(
        shared: Arc<Shared>,
        mut client: PacketIo,
        conn_id: u32,
        unauthenticated: OwnedSemaphorePermit,
    ) -> Result<Option<Session>, SessionError> {
        let (login, scramble) = login::log_in(&shared, &mut client, conn_id).await?;
        drop(unauthenticated);
        shared.sessions.set_user(conn_id, &login.user);
        let seq = login.seq;
        let mut session = Session::new(shared, client, conn_id, login, scramble);
        let primary = session.shared.pattern.load().primary();
        if let Err(e) = session.backends.ensure(primary).await {
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

    /// A logged-in session with no backend connection yet.
    fn new(
        shared: Arc<Shared>,
        client: PacketIo,
        conn_id: u32,
        login: Login,
        scramble: [u8; 20],
    ) -> Session {
        let params = ConnectParams {
            capabilities: login.capabilities,
            mariadb: login.mariadb,
            credentials: None,
            collation: login.collation,
            database: login.database.clone(),
            max_packet: shared.config.limits.max_allowed_packet as u32,
            timeout: shared.connect_timeout(),
            attributes: login.attributes.clone(),
        };
        Session {
            backends: Backends::new(shared.clone(), conn_id, params, login.accounts.clone()),
            gate: TxnGate::default(),
            secondary: Secondary::new(shared.clone()),
            vars: uservars::UserVars::default(),
            temps: temptables::TempTables::default(),
            metrics: metrics::StatementMetrics::default(),
            shared,
            client,
            conn_id,
            login,
            scramble,
            reset_client: false,
        }
    }

    /// The command loop: read a packet, dispatch it, until the client quits,
    /// fails, or `shutdown` is cancelled between two commands.
    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), SessionError> {
        let limit = self.shared.config.limits.max_allowed_packet;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if let Flow::Quit = self.idle(&shutdown).await? {
                return Ok(());
            }
            // Every command starts a new exchange: sequence id 0.
            let payload = match self.client.read_packet_seq(limit, 0).await {
                Ok(Some((payload, _))) => payload,
                Ok(None) => return Ok(()),
                Err(ReadError::TooLarge) => {
                    let msg = "Got a packet bigger than 'max_allowed_packet' bytes";
                    self.reply_err(codes::ER_NET_PACKET_TOO_LARGE, msg).await?;
                    return Err(SessionError::PacketTooLarge);
                }
                Err(e @ ReadError::OutOfOrder { .. }) => {
                    return Err(handshake::refuse_read(&mut self.client, 0, e).await)
                }
                Err(ReadError::Io(e)) => return Err(e.into()),
            };
            if let Flow::Quit = self.dispatch(&payload).await? {
                return Ok(());
            }
        }
    }

    /// Parse one client packet and run its command; `payload` (command byte
    /// included) is what gets relayed.
    async fn dispatch(&mut self, payload: &[u8]) -> Result<Flow, SessionError> {
        let command = match Command::parse(payload) {
            Ok(c) => c,
            Err(ParseError::Empty) => {
                return Err(SessionError::Malformed("empty command packet".into()))
            }
            Err(ParseError::Short(com)) => {
                self.on_short_packet(com).await?;
                return Ok(Flow::Continue);
            }
        };
        match command {
            Command::Quit => return Ok(Flow::Quit),
            Command::ChangeUser(body) => return self.on_change_user(body).await,
            Command::Query(sql) => self.on_query(payload, sql).await?,
            Command::InitDb(db) => self.on_init_db(payload, db).await?,
            Command::FieldList => self.primary_only(payload, ResponseKind::Rows).await?,
            Command::Statistics | Command::Ping => {
                self.primary_only(payload, ResponseKind::Single).await?
            }
            Command::SetOption(option) => self.on_set_option(payload, option).await?,
            Command::ResetConnection => self.on_reset_connection(payload).await?,
            Command::StmtPrepare(sql) => self.on_stmt_prepare(payload, sql).await?,
            Command::StmtExecute(id) => self.on_stmt_execute(payload, id).await?,
            Command::StmtSendLongData(id) => self.on_stmt_send_long_data(payload, id).await,
            Command::StmtClose(id) => self.on_stmt_close(payload, id).await,
            Command::StmtReset(id) => self.on_stmt_reset(payload, id).await?,
            Command::StmtFetch(id) => self.on_stmt_fetch(payload, id).await?,
            Command::Unsupported(byte) => {
                debug!(command = byte, "unsupported command");
                self.reply_err(codes::ER_UNKNOWN_COM_ERROR, "Unknown command")
                    .await?
            }
        }
        Ok(Flow::Continue)
    }

    /// A packet too short for its command: what the server would answer
    /// (nothing for the commands that never get an answer).
    async fn on_short_packet(&mut self, com: Com) -> Result<(), SessionError> {
        match com {
            Com::COM_STMT_EXECUTE => self.reply_malformed_execute().await,
            Com::COM_STMT_RESET => self.unknown_statement(0, "mysqld_stmt_reset").await,
            Com::COM_STMT_FETCH => self.unknown_statement(0, "mysqld_stmt_fetch").await,
            Com::COM_SET_OPTION => {
                self.reply_err(codes::ER_WRONG_ARGUMENTS, "Malformed COM_SET_OPTION")
                    .await
            }
            _ => Ok(()), // SEND_LONG_DATA, STMT_CLOSE: no response by protocol
        }
    }

    /// COM_QUERY: a KILL is translated to backend threads (or refused);
    /// everything else is classified and run under the pattern.
    async fn on_query(&mut self, payload: &[u8], sql: &[u8]) -> Result<(), SessionError> {
        let c = classify::classify(sql);
        let Some(plan) = kill::plan(sql, &c, &self.login.user) else {
            return self.run_query(payload, c).await;
        };
        let Some(rest) = self.kill(sql, plan).await? else {
            return Ok(());
        };
        // The leading KILL was the only one: the rest names no thread (and
        // is never relayed if it somehow did).
        let c = classify::classify(&rest);
        if c.kills > 0 {
            let plan = kill::KillPlan::Refuse("a second KILL in a multi-statement");
            return self.kill(&rest, plan).await.map(drop);
        }
        self.run_query(&crate::command::query(&rest), c).await
    }

    /// Run a classified COM_QUERY under the pattern.
    async fn run_query(
        &mut self,
        payload: &[u8],
        mut c: classify::Classified,
    ) -> Result<(), SessionError> {
        c.class = self.hidden_writes(payload.get(1..).unwrap_or_default(), c.class);
        let remember = match (c.use_db, c.class) {
            (Some(db), _) => exec::Remember::Database(db),
            (None, Class::SessionState) => exec::Remember::Statement,
            _ => exec::Remember::Nothing,
        };
        self.statement(exec::Cmd::Raw(payload), c.class, c.tx, remember)
            .await
    }

    /// A read (or session-state statement) that calls a stored function
    /// which may modify data is a write: it must be mirrored (and is then
    /// not replayed on connections opened later). Plain reads pay one
    /// atomic load when no stored function exists.
    fn hidden_writes(&self, sql: &[u8], class: Class) -> Class {
        if !matches!(class, Class::Read | Class::SessionState)
            || !self.shared.catalog.has_functions()
        {
            return class;
        }
        let data = self.shared.catalog.load();
        let db = self.backends.state.database.as_deref();
        for (schema, name) in crate::catalog::calls(sql) {
            let name = String::from_utf8_lossy(name);
            let f = match schema {
                Some(s) => data.function(None, &format!("{}.{name}", String::from_utf8_lossy(s))),
                None => data.function(db, &name),
            };
            if f.is_some_and(|f| f.writes) {
                return Class::Write;
            }
        }
        class
    }

    /// COM_INIT_DB: like `USE`, applied to every open backend and remembered.
    async fn on_init_db(&mut self, payload: &[u8], db: &[u8]) -> Result<(), SessionError> {
        let db = String::from_utf8_lossy(db).into_owned();
        let remember = exec::Remember::Database(db);
        self.session_command(payload, ResponseKind::Single, remember)
            .await
    }

    /// COM_SET_OPTION: applied to every open backend and remembered.
    async fn on_set_option(&mut self, payload: &[u8], option: u16) -> Result<(), SessionError> {
        let remember = exec::Remember::SetOption(option);
        self.session_command(payload, ResponseKind::Single, remember)
            .await
    }

    /// COM_RESET_CONNECTION: every open backend, session state forgotten.
    async fn on_reset_connection(&mut self, payload: &[u8]) -> Result<(), SessionError> {
        self.session_command(payload, ResponseKind::Single, exec::Remember::Reset)
            .await
    }

    /// Send an ERR packet (sequence 1) for an error the proxy detected itself.
    async fn reply_err(&mut self, code: ErrorCode, msg: &str) -> Result<(), SessionError> {
        self.client.send_packet(1, &code.payload(msg)).await?;
        Ok(())
    }

    /// COM_CHANGE_USER: re-authenticate, then start over with fresh backend
    /// connections and empty session state. A denied change closes the session.
    async fn on_change_user(&mut self, body: &[u8]) -> Result<Flow, SessionError> {
        let Some(cu) = handshake::parse_change_user(body, self.login.capabilities) else {
            return Err(SessionError::Malformed("COM_CHANGE_USER".into()));
        };
        let changed =
            handshake::change_user(&mut self.client, &self.shared, &mut self.scramble, &cu).await;
        let (seq, accounts) = match changed {
            Ok(Ok(ok)) => ok,
            Err(SessionError::InsecureTransport(u)) => {
                info!(user = %u, "change user refused without TLS; closing");
                return Ok(Flow::Quit);
            }
            Err(e) => return Err(e),
            Ok(Err(denial)) => {
                login::answer_denied(&self.shared, &mut self.client, &denial).await?;
                info!(user = %denial.user, "change user denied; closing");
                return Ok(Flow::Quit);
            }
        };
        self.backends
            .change_user(accounts.clone(), cu.database, cu.collation)
            .await;
        self.vars.reset();
        self.temps.clear();
        self.secondary.session_has_temporary_tables = false;
        self.secondary.reset();
        self.shared.sessions.set_user(self.conn_id, &cu.user);
        tracing::Span::current().record("user", cu.user.as_str());
        self.login.accounts = accounts;
        self.login.user = cu.user;
        if let Some(c) = cu.collation {
            self.login.collation = c;
        }
        self.gate.reset();
        let primary = self.current_pattern().primary();
        if let Err(e) = self.backends.ensure(primary).await {
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
        self.gate
            .transaction_pattern()
            .unwrap_or_else(|| self.shared.pattern.load())
    }

    /// Log every backend connection out and close the client's (with a
    /// reset when the authoritative backend reset the idle session).
    async fn close(mut self) {
        self.backends.quit_all().await;
        if self.reset_client {
            self.client.reset_on_drop();
        } else {
            self.client.shutdown().await;
        }
        debug!(conn = self.conn_id, "closed");
    }
}
