//! A session's backend side: at most one connection per side, opened on
//! demand, and everything a connection must be brought to when it opens —
//! the replayable session state and the prepared statements' per-side ids.
//!
//! [`Backends::ensure`] is the single place a backend connection is opened:
//! connect and log in, back-off bookkeeping, the greeting learned, session
//! state replayed, the KILL registry updated.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::align::Alignment;
use super::auth::Accounts;
use super::exec::{Cmd, Remember, Unsendable};
use super::prepared::Statements;
use super::secondary::MirrorCheck;
use super::state::SessionState;
use crate::backend::{Backend, Closed, ConnectParams};
use crate::command::{self, Com};
use crate::error::BackendError;
use crate::pattern::Side;
use crate::response::ResponseKind;
use crate::shared::Shared;
use crate::stats::DataPathStats;

/// One backend connection of a session; deferred mirrored statements are
/// tagged with what their answer must be compared with.
pub(super) type Conn = Backend<MirrorCheck>;

/// The session's backend connections (by side) and the state they share.
pub(super) struct Backends {
    shared: Arc<Shared>,
    conn_id: u32,
    /// Capabilities, collation and attributes from the client's login.
    params: ConnectParams,
    /// The account each side's connection logs in as (the session's user).
    accounts: Accounts,
    /// Replayed on every connection opened later.
    pub state: SessionState,
    /// Prepared statements: cutover's ids and each side's own.
    pub stmts: Statements,
    /// The session's reference semantics (issue #19), applied on open.
    align: Alignment,
    conns: [Option<Conn>; 2],
}

impl Backends {
    /// No connection yet; `params` describe the client's login (its default
    /// database starts `state`), `accounts` whom it logs in as on each side.
    pub fn new(
        shared: Arc<Shared>,
        conn_id: u32,
        params: ConnectParams,
        accounts: Accounts,
    ) -> Self {
        Backends {
            state: SessionState::new(params.database.clone()),
            stmts: Statements::default(),
            align: Alignment::default(),
            conns: [None, None],
            shared,
            conn_id,
            params,
            accounts,
        }
    }

    /// How to open one more connection to `side` as this session's user
    /// (no default database, no attributes): for a KILL QUERY from outside.
    pub fn side_channel(&self, side: Side) -> ConnectParams {
        let mut params = self.params.clone();
        params.database = None;
        params.attributes = Vec::new();
        params.credentials = Some(self.accounts[side.index()].clone());
        params
    }

    /// Resolves when an open connection is closed or reset by its server
    /// while the session is idle: which side, and how. Pending while none
    /// is open. Cancel-safe.
    pub async fn closed(&mut self) -> (Side, Closed) {
        let [source, destination] = &mut self.conns;
        tokio::select! {
            how = watch_closed(source.as_mut()) => (Side::Source, how),
            how = watch_closed(destination.as_mut()) => (Side::Destination, how),
        }
    }

    /// The process-wide shared state (config, back-off, registry).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The login parameters this session's backend connections use (for a
    /// separate metadata connection, e.g. `ddl_defaults`).
    pub fn connect_params(&self) -> ConnectParams {
        self.params.clone()
    }

    /// The open connection to `side`, if any.
    pub fn get(&mut self, side: Side) -> Option<&mut Conn> {
        self.conns[side.index()].as_mut()
    }

    /// The backend thread id of the open connection to `side`.
    pub fn thread(&self, side: Side) -> Option<u32> {
        self.conns[side.index()].as_ref().map(|c| c.thread_id)
    }

    /// Whether a connection to `side` is open.
    pub fn is_open(&self, side: Side) -> bool {
        self.conns[side.index()].is_some()
    }

    /// The connection to `side`, opened and brought to the session's state
    /// if there is none.
    ///
    /// # Errors
    /// The connect or login failure (fatal ones start the side's back-off),
    /// or a broken connection while replaying session state. A statement the
    /// backend refuses during replay is logged, not an error: it succeeded
    /// on the authoritative side before.
    pub async fn ensure(&mut self, side: Side) -> Result<&mut Conn, BackendError> {
        if self.conns[side.index()].is_none() {
            let backend = self.open(side).await?;
            self.conns[side.index()] = Some(backend);
        }
        Ok(self.conns[side.index()].as_mut().expect("opened above"))
    }

    async fn open(&mut self, side: Side) -> Result<Conn, BackendError> {
        let shared = self.shared.clone();
        let mut params = self.params.clone();
        params.database = self.state.database.clone();
        params.credentials = Some(self.accounts[side.index()].clone());
        let cfg = shared.backend_config(side);
        let (mut backend, greeting) = match Backend::connect(cfg, side, &params).await {
            Ok(ok) => ok,
            Err(e) => {
                self.connect_failed(side, &e);
                return Err(e);
            }
        };
        DataPathStats::incr(&shared.stats.backend_connects[side.index()]);
        shared.backoff[side.index()].succeeded();
        shared.learn_greeting(side, &greeting);
        backend.mariadb = greeting.version.contains("MariaDB");
        metrics::gauge!("cutover_backend_up", "backend" => side.as_str()).set(1.0);
        self.align
            .on_open(&mut backend, shared.config.mirror.ddl_defaults)
            .await?;
        replay_state(&self.state, &mut backend).await?;
        // Its RNG starts over from the client's seeds; the other side's did not.
        self.state.client_pins.rand_drift |= self.state.client_pins.rand_seed;
        debug!(%side, thread_id = backend.thread_id, "backend connection ready");
        shared
            .sessions
            .set(self.conn_id, side, Some(backend.thread_id));
        Ok(backend)
    }

    fn connect_failed(&self, side: Side, e: &BackendError) {
        DataPathStats::incr(&self.shared.stats.backend_connect_failures[side.index()]);
        if e.is_fatal() {
            let limits = &self.shared.config.limits;
            self.shared.backoff[side.index()].failed(
                e.to_string(),
                Duration::from_millis(limits.secondary_backoff_min_ms),
                Duration::from_millis(limits.secondary_backoff_max_ms),
            );
            metrics::gauge!("cutover_backend_up", "backend" => side.as_str()).set(0.0);
        }
    }

    /// Use an already logged-in connection (unit tests: a fake backend).
    #[cfg(test)]
    pub fn insert(&mut self, backend: Conn) {
        let side = backend.side;
        self.shared
            .sessions
            .set(self.conn_id, side, Some(backend.thread_id));
        self.conns[side.index()] = Some(backend);
    }

    /// Take the connection to `side` out of use (it broke or is being
    /// replaced): its statement ids and its KILL entry are forgotten. The
    /// caller accounts for its outstanding answers.
    pub fn take(&mut self, side: Side) -> Option<Conn> {
        let backend = self.conns[side.index()].take()?;
        self.stmts.forget_side(side);
        self.shared.sessions.set(self.conn_id, side, None);
        debug!(%side, "dropped backend connection");
        Some(backend)
    }

    /// Remember what a successful session-state command changed, for
    /// connections opened later.
    pub fn remember(&mut self, remember: Remember, cmd: &Cmd<'_>) {
        match remember {
            Remember::Nothing => {}
            Remember::Statement => {
                if let Cmd::Raw(p) = cmd {
                    self.state.client_pins.observe(&p[1..]);
                    self.state.record(&p[1..]);
                    if self.state.overflowed {
                        warn!("more than 1024 distinct session-state statements; the oldest will not be replayed on new backend connections");
                    }
                }
            }
            Remember::Database(db) => self.state.database = Some(db),
            Remember::SetOption(o) => self.state.set_option = Some(o),
            Remember::Reset => {
                self.align.after_reset(self.conns.iter_mut().flatten());
                self.state.reset();
                self.stmts.clear();
            }
        }
    }

    /// COM_CHANGE_USER: log every connection out and start over as
    /// `accounts`, with `database` and, if given, a new collation.
    pub async fn change_user(
        &mut self,
        accounts: Accounts,
        database: Option<String>,
        collation: Option<u8>,
    ) {
        self.accounts = accounts;
        for side in [Side::Source, Side::Destination] {
            if let Some(b) = self.conns[side.index()].take() {
                b.quit().await;
                self.shared.sessions.set(self.conn_id, side, None);
            }
        }
        if let Some(c) = collation {
            self.params.collation = c;
        }
        self.state = SessionState::new(database);
        self.align = Alignment::default();
        self.stmts.clear();
    }

    /// The session ended: log every connection out.
    pub async fn quit_all(&mut self) {
        self.shared.sessions.remove(self.conn_id);
        for side in [Side::Source, Side::Destination] {
            if let Some(b) = self.conns[side.index()].take() {
                b.quit().await;
            }
        }
    }

    /// The bytes to send to `side` for `cmd`: the client's payload, or an
    /// EXECUTE rewritten to `side`'s statement id (prepared there first if
    /// needed).
    ///
    /// # Errors
    /// [`Unsendable::Backend`] when the lazy prepare fails,
    /// [`Unsendable::Malformed`] when the EXECUTE cannot be rewritten.
    pub async fn payload_for<'a>(
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
}

/// [`Backend::closed`] of an open connection; pending without one.
async fn watch_closed(conn: Option<&mut Conn>) -> Closed {
    match conn {
        Some(c) => c.closed().await,
        None => std::future::pending().await,
    }
}

/// Bring a fresh connection to the session's state, in the order the client
/// established it: multi-statement option, then SET/PREPARE text.
async fn replay_state(state: &SessionState, backend: &mut Conn) -> Result<(), BackendError> {
    if let Some(opt) = state.set_option {
        let p = command::payload(Com::COM_SET_OPTION, &opt.to_le_bytes());
        replay(backend, &p, ResponseKind::Single).await?;
    }
    for sql in state.statements() {
        replay(backend, &command::query(sql), ResponseKind::Query).await?;
    }
    Ok(())
}

/// Replay one session-state command on a fresh backend. Server errors are
/// logged (the statement succeeded on the authoritative side before);
/// broken connections fail the open.
async fn replay(
    backend: &mut Conn,
    payload: &[u8],
    kind: ResponseKind,
) -> Result<(), BackendError> {
    let s = backend.run(payload, kind).await?;
    if let Some(err) = s.err {
        warn!(side = %backend.side, code = err.code, "replaying session state failed: {}", err.message);
    }
    Ok(())
}
