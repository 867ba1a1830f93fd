//! Prepared statements: every COM_STMT_* command, and the proxy-allocated
//! statement ids mapped to each backend's own.
//!
//! A client only ever sees cutover's ids (a backend's statement cache may
//! hand out the same id twice, and the two backends number independently).
//! A statement is prepared on the authoritative side when the client asks,
//! on the mirror side at once for writes, and lazily on any backend that
//! first needs it (a pattern change, a reconnect); parameter types bound at
//! one execute are re-sent to a backend that has not seen them.

use std::collections::HashMap;

use tracing::{debug, warn};

use super::backends::Backends;
use super::exec::{Cmd, Remember, Unsendable};
use super::Session;
use crate::classify::{self, Class, TxKind};
use crate::codes;
use crate::command::{self, Com};
use crate::determinism::{self, Analysis};
use crate::error::{BackendError, RelayError, SessionError};
use crate::pattern::Side;
use crate::response::ResponseKind;
use crate::route;

/// Most prepared statements one session may hold (MySQL's own default
/// max_prepared_stmt_count is 16382 for the whole server).
pub const MAX_STATEMENTS: usize = 16_382;

/// One prepared statement of a session.
#[derive(Debug)]
pub struct Statement {
    /// The statement text as the client prepared it.
    pub sql: Vec<u8>,
    /// Its routing class (an EXECUTE routes like the text would).
    pub class: Class,
    /// Number of `?` parameters.
    pub params: u16,
    /// The backend's statement id, per side, where prepared.
    pub ids: [Option<u32>; 2],
    /// Parameter types from the last execute that bound them.
    types: Option<Vec<u8>>,
    /// Whether each side has received parameter types since it prepared.
    types_sent: [bool; 2],
    /// Cache of [`Statement::analysis`].
    analysis: Option<Analysis>,
}

impl Statement {
    /// A statement prepared nowhere yet.
    pub fn new(sql: Vec<u8>, class: Class, params: u16) -> Self {
        Statement {
            sql,
            class,
            params,
            ids: [None, None],
            types: None,
            types_sent: [false, false],
            analysis: None,
        }
    }

    /// `side` prepared it as `id` (parameter types must be re-sent there).
    pub fn set_id(&mut self, side: Side, id: u32) {
        self.ids[side.index()] = Some(id);
        self.types_sent[side.index()] = false;
    }

    /// `side`'s statement id, if prepared there.
    pub fn id(&self, side: Side) -> Option<u32> {
        self.ids[side.index()]
    }

    /// Rewrite a COM_STMT_EXECUTE for `side`: its own statement id, and the
    /// parameter types re-sent when this side has not seen them yet (a
    /// client may send types only on the first execute). `None` if the
    /// packet is malformed.
    pub fn execute_for(&mut self, side: Side, payload: &[u8]) -> Option<Vec<u8>> {
        let id = self.id(side)?;
        if payload.len() < 10 {
            return None;
        }
        let mut out = Vec::with_capacity(payload.len() + 2 * self.params as usize);
        out.extend_from_slice(&payload[..1]);
        out.extend_from_slice(&id.to_le_bytes());
        if self.params == 0 {
            out.extend_from_slice(&payload[5..]);
            return Some(out);
        }
        let nulls = (self.params as usize).div_ceil(8);
        let bound_at = 10 + nulls;
        let bound = *payload.get(bound_at)?;
        if bound == 1 {
            let types = payload.get(bound_at + 1..bound_at + 1 + 2 * self.params as usize)?;
            self.types = Some(types.to_vec());
            self.types_sent[side.index()] = true;
            out.extend_from_slice(&payload[5..]);
        } else if !self.types_sent[side.index()] {
            let types = self.types.as_ref()?;
            out.extend_from_slice(&payload[5..bound_at]);
            out.push(1);
            out.extend_from_slice(types);
            out.extend_from_slice(&payload[bound_at + 1..]);
            self.types_sent[side.index()] = true;
        } else {
            out.extend_from_slice(&payload[5..]);
        }
        Some(out)
    }

    /// What determinism makes of the text, computed at the first mirrored
    /// execute and kept (the text never changes). A prepared text is fixed,
    /// so its UUID()/SYSDATE() cannot be pinned per execution: they make the
    /// statement unsafe instead of being rewritten.
    pub fn analysis(&mut self) -> &Analysis {
        let sql = &self.sql;
        self.analysis.get_or_insert_with(|| {
            let mut a = determinism::analyze(sql);
            if a.rewritten.take().is_some() {
                a.unsafe_reason
                    .get_or_insert("nondeterministic_function_in_prepared_statement");
            }
            a
        })
    }

    /// Rewrite the statement id of SEND_LONG_DATA / RESET / FETCH / CLOSE.
    pub fn with_id(&self, side: Side, payload: &[u8]) -> Option<Vec<u8>> {
        let id = self.id(side)?;
        let mut out = payload.to_vec();
        out.get_mut(1..5)?.copy_from_slice(&id.to_le_bytes());
        Some(out)
    }
}

/// A session's prepared statements by cutover's id (at most
/// [`MAX_STATEMENTS`]; ids 1, 2, …, skipping ids in use after a wrap).
#[derive(Debug, Default)]
pub struct Statements {
    next_id: u32,
    last_id: u32,
    map: HashMap<u32, Statement>,
}

impl Statements {
    /// Register a statement; its id, or `None` when the session is full.
    pub fn insert(&mut self, stmt: Statement) -> Option<u32> {
        if self.map.len() >= MAX_STATEMENTS {
            return None;
        }
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.map.contains_key(&self.next_id) {
                break;
            }
        }
        self.map.insert(self.next_id, stmt);
        self.last_id = self.next_id;
        Some(self.next_id)
    }

    /// The id the next `insert` will return (to rewrite PREPARE_OK before
    /// we know whether it succeeded).
    pub fn peek_next_id(&self) -> u32 {
        let mut id = self.next_id;
        loop {
            id = id.wrapping_add(1).max(1);
            if !self.map.contains_key(&id) {
                return id;
            }
        }
    }

    /// MariaDB clients may address "the statement prepared last" as id
    /// 0xFFFFFFFF (pipelined prepare + execute).
    pub fn resolve(&self, id: u32) -> u32 {
        if id == u32::MAX {
            self.last_id
        } else {
            id
        }
    }

    /// The statement `id`, if the session holds it.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Statement> {
        self.map.get_mut(&id)
    }

    /// Forget statement `id` (COM_STMT_CLOSE).
    pub fn remove(&mut self, id: u32) -> Option<Statement> {
        self.map.remove(&id)
    }

    /// Forget every statement (COM_RESET_CONNECTION, COM_CHANGE_USER).
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Number of statements held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no statement is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forget a side's ids (its connection was lost or replaced).
    pub fn forget_side(&mut self, side: Side) {
        for s in self.map.values_mut() {
            s.ids[side.index()] = None;
            s.types_sent[side.index()] = false;
        }
    }
}

impl Session {
    /// COM_STMT_PREPARE: the authoritative side answers (its PREPARE_OK
    /// carrying cutover's id); writes are prepared on the mirror side too.
    pub(super) async fn on_stmt_prepare(
        &mut self,
        payload: &[u8],
        sql: &[u8],
    ) -> Result<(), SessionError> {
        if self.backends.stmts.len() >= MAX_STATEMENTS {
            let msg =
                "Can't create more than max_prepared_stmt_count statements (current value: 16382)";
            return self
                .reply_err(codes::ER_MAX_PREPARED_STMT_COUNT_REACHED, msg)
                .await;
        }
        if classify::names_a_thread(sql) {
            let msg = "This version of cutover doesn't yet support 'KILL in a prepared statement through cutover'";
            return self.reply_err(codes::ER_NOT_SUPPORTED_YET, msg).await;
        }
        let class = self.hidden_writes(sql, classify::classify_class(sql));
        let plan = route::plan(self.current_pattern(), class);
        if let Err(e) = self.backends.ensure(plan.primary).await {
            return self.reply_backend_error(e).await;
        }
        let Some(id) = self
            .prepare_on_primary(payload, plan.primary, class)
            .await?
        else {
            return Ok(());
        };
        // Writes are prepared on the mirror side at once (a backing-off side
        // is skipped; it gets the statement lazily at its first execute).
        if let Some(side) = plan.mirror.filter(|_| class != Class::Read) {
            self.prepare_on_mirror(side, id).await;
        }
        Ok(())
    }

    /// Relay the PREPARE to `side` and register the statement.
    /// `Ok(None)` when the backend refused it (its ERR went to the client).
    async fn prepare_on_primary(
        &mut self,
        payload: &[u8],
        side: Side,
        class: Class,
    ) -> Result<Option<u32>, SessionError> {
        let proxy_id = self.backends.stmts.peek_next_id();
        let limit = self.shared.config.limits.max_allowed_packet;
        let backend = self.backends.get(side).expect("ensured");
        let result = match backend.send(payload).await {
            Ok(()) => {
                let kind = ResponseKind::Prepare;
                backend
                    .relay(&mut self.client, kind, Some(proxy_id), limit, false)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        let summary = match result {
            Ok((s, _)) => s,
            Err(RelayError::Backend(e)) => return self.reply_backend_error(e).await.map(|_| None),
            Err(e) => return Err(e.into()),
        };
        let Some((backend_id, _, params)) = summary.prepared else {
            return Ok(None);
        };
        let mut stmt = Statement::new(payload[1..].to_vec(), class, params);
        stmt.set_id(side, backend_id);
        let id = self.backends.stmts.insert(stmt);
        debug_assert!(id.is_none_or(|id| id == proxy_id));
        Ok(id)
    }

    async fn prepare_on_mirror(&mut self, side: Side, id: u32) {
        let reachable =
            self.backends.is_open(side) || self.shared.backoff[side.index()].check().is_ok();
        if reachable && self.backends.ensure(side).await.is_ok() {
            if let Err(Unsendable::Backend(e)) = self.backends.ensure_prepared(side, id).await {
                warn!(%side, "prepare on mirror failed: {e}");
                self.secondary.secondary_error(side);
            }
        }
    }

    /// COM_STMT_EXECUTE: run like a statement of the class the text had.
    pub(super) async fn on_stmt_execute(
        &mut self,
        payload: &[u8],
        id: u32,
    ) -> Result<(), SessionError> {
        let id = self.backends.stmts.resolve(id);
        let Some(stmt) = self.backends.stmts.get_mut(id) else {
            return self.unknown_statement(id, "mysqld_stmt_execute").await;
        };
        let class = stmt.class;
        // A prepared BEGIN / COMMIT (sysbench, some drivers) is the same
        // transaction control as its text: the mirror's share is settled
        // before the primary commits, a new share starts at BEGIN.
        let tx = (class == Class::Transaction)
            .then(|| classify::classify(&stmt.sql).tx.unwrap_or(TxKind::Other));
        let cmd = Cmd::Execute { id, payload };
        self.statement(cmd, class, tx, Remember::Nothing).await
    }

    /// COM_STMT_SEND_LONG_DATA: to every side the statement's execute will
    /// reach. No response is ever sent; errors surface at execute.
    pub(super) async fn on_stmt_send_long_data(&mut self, payload: &[u8], id: u32) {
        let id = self.backends.stmts.resolve(id);
        let Some(class) = self.backends.stmts.get_mut(id).map(|s| s.class) else {
            return;
        };
        let plan = route::plan(self.current_pattern(), class);
        for side in std::iter::once(plan.primary).chain(plan.mirror) {
            self.send_to_statement(side, id, payload).await;
        }
    }

    /// COM_STMT_CLOSE: on every backend that has the statement; no response.
    pub(super) async fn on_stmt_close(&mut self, payload: &[u8], id: u32) {
        let Some(stmt) = self.backends.stmts.remove(self.backends.stmts.resolve(id)) else {
            return;
        };
        for side in [Side::Source, Side::Destination] {
            if let (Some(p), Some(b)) = (stmt.with_id(side, payload), self.backends.get(side)) {
                if let Err(e) = b.send(&p).await {
                    debug!("closing statement on {side}: {e}");
                    self.drop_backend(side);
                }
            }
        }
    }

    /// COM_STMT_RESET: the other side quietly, then the authoritative side
    /// answers.
    pub(super) async fn on_stmt_reset(
        &mut self,
        payload: &[u8],
        id: u32,
    ) -> Result<(), SessionError> {
        let id = self.backends.stmts.resolve(id);
        if self.backends.stmts.get_mut(id).is_none() {
            return self.unknown_statement(id, "mysqld_stmt_reset").await;
        }
        let other = self.current_pattern().primary().other();
        if let (Some(p), Some(b)) = (
            self.backends
                .stmts
                .get_mut(id)
                .and_then(|s| s.with_id(other, payload)),
            self.backends.get(other),
        ) {
            if b.run(&p, ResponseKind::Single).await.is_err() {
                self.drop_backend(other);
            }
        }
        self.statement_on_primary(id, payload, ResponseKind::Single)
            .await
    }

    /// COM_STMT_FETCH: rows of an open cursor, from the authoritative side.
    pub(super) async fn on_stmt_fetch(
        &mut self,
        payload: &[u8],
        id: u32,
    ) -> Result<(), SessionError> {
        let id = self.backends.stmts.resolve(id);
        if self.backends.stmts.get_mut(id).is_none() {
            return self.unknown_statement(id, "mysqld_stmt_fetch").await;
        }
        self.statement_on_primary(id, payload, ResponseKind::Rows)
            .await
    }

    /// ER_UNKNOWN_STMT_HANDLER naming the id and the command (`what`, as the
    /// server names it: `mysqld_stmt_execute`, …).
    pub(super) async fn unknown_statement(
        &mut self,
        id: u32,
        what: &str,
    ) -> Result<(), SessionError> {
        let msg = format!("Unknown prepared statement handler ({id}) given to {what}");
        self.reply_err(codes::ER_UNKNOWN_STMT_HANDLER, &msg).await
    }

    /// ER_WRONG_ARGUMENTS for an EXECUTE that cannot be parsed or rewritten.
    pub(super) async fn reply_malformed_execute(&mut self) -> Result<(), SessionError> {
        let msg = "Incorrect arguments to mysqld_stmt_execute";
        self.reply_err(codes::ER_WRONG_ARGUMENTS, msg).await
    }

    /// RESET / FETCH: the authoritative side answers.
    async fn statement_on_primary(
        &mut self,
        id: u32,
        payload: &[u8],
        kind: ResponseKind,
    ) -> Result<(), SessionError> {
        let side = self.current_pattern().primary();
        if let Err(e) = self.backends.ensure(side).await {
            return self.reply_backend_error(e).await;
        }
        if let Err(u) = self.backends.ensure_prepared(side, id).await {
            return self.reply_unsendable(u).await;
        }
        let p = self
            .backends
            .stmts
            .get_mut(id)
            .and_then(|s| s.with_id(side, payload))
            .unwrap_or_default();
        self.relay_primary(side, &p, kind, false).await.map(|_| ())
    }

    /// SEND_LONG_DATA (no response) to one side.
    async fn send_to_statement(&mut self, side: Side, id: u32, payload: &[u8]) {
        if !self.backends.is_open(side) || self.backends.ensure_prepared(side, id).await.is_err() {
            return;
        }
        let p = self
            .backends
            .stmts
            .get_mut(id)
            .and_then(|s| s.with_id(side, payload));
        if let (Some(p), Some(b)) = (p, self.backends.get(side)) {
            if b.send(&p).await.is_err() {
                self.drop_backend(side);
            }
        }
    }
}

impl Backends {
    /// Lazily prepare statement `id` on `side` (which must be connected).
    ///
    /// # Errors
    /// [`Unsendable::Backend`] when the backend fails or refuses the
    /// PREPARE, [`Unsendable::Malformed`] for an unknown id or no connection.
    pub(super) async fn ensure_prepared(&mut self, side: Side, id: u32) -> Result<(), Unsendable> {
        let Some(stmt) = self.stmts.get_mut(id) else {
            return Err(Unsendable::Malformed);
        };
        if stmt.id(side).is_some() {
            return Ok(());
        }
        let p = command::payload(Com::COM_STMT_PREPARE, &stmt.sql);
        let backend = self.get(side).ok_or(Unsendable::Malformed)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(id: u32, bound: bool) -> Vec<u8> {
        // 2 params: null bitmap 1 byte
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
        if bound {
            p.push(1);
            p.extend_from_slice(&[8, 0, 253, 0]);
        } else {
            p.push(0);
        }
        p.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0, 1, b'x']);
        p
    }

    #[test]
    fn rewrites_id_and_resends_types() {
        let mut s = Statement::new(b"INSERT INTO t VALUES (?,?)".to_vec(), Class::Write, 2);
        s.set_id(Side::Source, 70);
        let out = s.execute_for(Side::Source, &exec(1, true)).unwrap();
        assert_eq!(&out[1..5], &70u32.to_le_bytes());
        assert_eq!(out.len(), exec(1, true).len());
        // destination prepared later; client sends bound=0
        s.set_id(Side::Destination, 9);
        let out = s.execute_for(Side::Destination, &exec(1, false)).unwrap();
        assert_eq!(out, {
            let mut e = exec(9, true);
            e[1..5].copy_from_slice(&9u32.to_le_bytes());
            e
        });
        // second time: passes through unchanged
        let out = s.execute_for(Side::Destination, &exec(1, false)).unwrap();
        assert_eq!(out.len(), exec(1, false).len());
        assert!(s.execute_for(Side::Source, &[0x17, 1]).is_none());
    }

    #[test]
    fn ids_are_unique_and_bounded() {
        let mut m = Statements::default();
        let a = m.insert(Statement::new(vec![], Class::Read, 0)).unwrap();
        assert_eq!(m.peek_next_id(), a + 1);
        let b = m.insert(Statement::new(vec![], Class::Read, 0)).unwrap();
        assert_ne!(a, b);
    }
}
