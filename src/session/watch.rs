//! The edges of a session's life that happen while it waits:
//!
//! - **between commands**, a backend that drops the idle session (its
//!   `wait_timeout`) is noticed at once: the authoritative side's close
//!   closes the client connection the same way (reset for reset, so pools
//!   see what they would see directly); the mirror side's is absorbed (that
//!   connection is reopened and brought to the session's state on next use);
//! - **during a statement**, a client that disconnects is noticed at once
//!   (`Backend::relay` watches its socket): the backend thread working for it
//!   gets `KILL QUERY` from a side connection, the rest of the answer is read
//!   and dropped, and the session ends — except that a write the
//!   authoritative side already applied is still mirrored to completion, so
//!   the sides stay equal.

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Flow, Session};
use crate::backend::{Backend, Closed, Unfinished};
use crate::command::{self, Com};
use crate::error::SessionError;
use crate::pattern::Side;
use crate::response::{ResponseKind, Summary};
use crate::stats::DataPathStats;

impl Session {
    /// Wait until the client sends its next command (or closes); meanwhile
    /// handle backends that close the idle session. `Flow::Quit` when the
    /// session must end (shutdown, the authoritative backend closed it).
    ///
    /// # Errors
    /// A reset client connection.
    pub(super) async fn idle(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Flow, SessionError> {
        loop {
            if self.client.unread() > 0 {
                return Ok(Flow::Continue);
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(Flow::Quit),
                r = self.client.readable() => {
                    r?; // data, or EOF: the next read sees it
                    return Ok(Flow::Continue);
                }
                (side, how) = self.backends.closed() => {
                    if let Flow::Quit = self.backend_closed(side, how).await {
                        return Ok(Flow::Quit);
                    }
                }
            }
        }
    }

    /// A backend closed an idle connection of this session.
    async fn backend_closed(&mut self, side: Side, how: Closed) -> Flow {
        if side == self.current_pattern().primary() {
            info!(%side, ?how, "the authoritative backend closed the idle session (e.g. wait_timeout); closing the client connection the same way");
            if let Some(b) = self.backends.get(side) {
                for frame in b.unsolicited() {
                    self.client.queue_frame(&frame);
                }
            }
            let _ = self.client.flush().await;
            self.drop_backend(side);
            self.reset_client = how == Closed::Reset;
            return Flow::Quit;
        }
        let in_trans = self.backends.get(side).is_some_and(|b| b.in_trans);
        if in_trans || self.gate.in_transaction() {
            // Its share of the open transaction is gone with it
            // (`drop_backend` accounts for it: `Secondary::lost`).
            warn!(%side, "the non-authoritative backend closed its connection inside a transaction; its part of the transaction is lost");
            self.gate.suspend_mirror();
        } else {
            debug!(%side, ?how, "the non-authoritative backend closed its idle connection; reopened on next use");
        }
        self.drop_backend(side);
        Flow::Continue
    }

    /// The client left while `side` was answering: stop the backend's
    /// work, then read the rest of the answer (the statement may have
    /// completed anyway, and a completed write is still mirrored by the
    /// caller). Inside a transaction, a mirror still working on writes sent
    /// ahead is stopped too, but only once the authoritative side's answer
    /// shows its transaction still open: it is then rolled back on both
    /// sides when the session closes. When that answer shows the transaction
    /// ended (a COMMIT, an implicit commit) or does not say (an ERR), the
    /// mirror's writes are left to complete, so a commit the authoritative
    /// side made can still be mirrored whole.
    ///
    /// # Errors
    /// The backend failing while its answer is read.
    pub(super) async fn client_gone(
        &mut self,
        side: Side,
        unfinished: Unfinished,
    ) -> Result<Summary, SessionError> {
        DataPathStats::incr(&self.shared.stats.abandoned_statements);
        info!(%side, "client disconnected during its statement; killing the backend query");
        self.kill_query_from_outside(side);
        let Some(b) = self.backends.get(side) else {
            return Err(SessionError::Malformed("backend missing".into()));
        };
        let summary = match b.finish(unfinished).await {
            Ok(summary) => summary,
            Err(e) => {
                self.drop_backend(side);
                return Err(e.into());
            }
        };
        let other = side.other();
        let mirror_busy = self
            .backends
            .get(other)
            .is_some_and(|b| b.deferred_outstanding() > 0);
        if mirror_busy && self.still_in_transaction(side, &summary).await {
            self.kill_query_from_outside(other);
        }
        Ok(summary)
    }

    /// Whether `side`'s transaction is still open after the statement
    /// answered with `summary`: from its status flags, or, for an ERR
    /// (which carries none), from a COM_PING's OK. `false` when unknown.
    async fn still_in_transaction(&mut self, side: Side, summary: &Summary) -> bool {
        if let Some(open) = summary.in_trans() {
            return open;
        }
        let Some(b) = self.backends.get(side) else {
            return false;
        };
        let ping = command::payload(Com::COM_PING, &[]);
        match b.run(&ping, ResponseKind::Query).await {
            Ok(s) => s.in_trans() == Some(true),
            Err(e) => {
                debug!(%side, "COM_PING after an abandoned statement failed: {e}");
                false
            }
        }
    }

    /// `KILL QUERY <thread>` for this session's connection to `side`, sent
    /// over a connection of its own as the session's user (a user may always
    /// kill its own threads). Fire and forget: failures are logged.
    fn kill_query_from_outside(&self, side: Side) {
        let Some(thread) = self.backends.thread(side) else {
            return;
        };
        let cfg = self.shared.backend_config(side).clone();
        let params = self.backends.side_channel(side);
        tokio::spawn(async move {
            let sql = command::query(format!("KILL QUERY {thread}"));
            match Backend::<()>::connect(&cfg, side, &params).await {
                Ok((mut b, _)) => {
                    match b.run(&sql, ResponseKind::Query).await {
                        Ok(s) if s.err.is_none() => debug!(%side, thread, "backend query killed"),
                        Ok(s) => warn!(%side, thread, err = ?s.err, "KILL QUERY refused"),
                        Err(e) => warn!(%side, thread, "KILL QUERY failed: {e}"),
                    }
                    b.quit().await;
                }
                Err(e) => warn!(%side, thread, "cannot connect to kill an abandoned query: {e}"),
            }
        });
    }
}
