//! One authenticated connection to a backend database, pinned to one client
//! session: the streaming relay of its responses, and a queue of answers
//! still to be read for commands sent ahead (pipelined).
//!
//! Logging in is in `login.rs`. Answers on one connection come in the order
//! the commands were sent, so every read first consumes the outstanding
//! ones: silent answers are dropped (an ERR is logged), deferred ones are
//! kept with the caller's opaque tag `T` until [`Backend::take_settled`].

#![warn(missing_docs)]

mod capture;
mod login;
mod query;

use std::collections::VecDeque;

use mysql_common::constants::CapabilityFlags;

pub use capture::{Captured, Cell, ColumnMeta};
pub use login::{ping, ConnectParams, Credentials, Greeting, Secret};
pub use query::TextRow;

use crate::command::{self, Com};
use crate::error::{BackendError, RelayError};
use crate::pattern::Side;
use crate::response::{ResponseKind, Step, Summary, Tracker};
use crate::wire::{self, Frame, PacketIo, Readable, FLUSH_THRESHOLD};

/// Bytes a peer may send ahead while it is watched for a disconnect (a
/// client pipelining commands during a statement, a backend's answers to
/// commands sent ahead); beyond it, watching stops and the bytes wait.
const PIPELINED_LIMIT: usize = 1 << 20;

/// A response the client left in the middle of: where it stands, for
/// [`Backend::finish`].
pub struct Unfinished {
    tracker: Tracker,
}

impl std::fmt::Debug for Unfinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unfinished")
    }
}

/// How a backend connection ended while idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The server closed it (FIN).
    Eof,
    /// The connection was reset (RST), as MariaDB does on `wait_timeout`.
    Reset,
}

/// A logged-in backend connection; `T` tags deferred answers (see
/// [`Backend::send_deferred`]).
pub struct Backend<T = ()> {
    /// Which database this connection is to.
    pub side: Side,
    io: PacketIo,
    /// The backend's own connection (thread) id.
    pub thread_id: u32,
    /// Capabilities in effect on this connection.
    pub capabilities: CapabilityFlags,
    /// Last known IN_TRANS status of this backend session.
    pub in_trans: bool,
    /// Last known AUTOCOMMIT status of this backend session.
    pub autocommit: bool,
    /// The server is MariaDB (its greeting says so): `SET STATEMENT … FOR`
    /// is available. Set by whoever opens the connection; assumed at first.
    pub mariadb: bool,
    /// Answers still to be read, in order, before the next real response.
    expected: VecDeque<Expected<T>>,
    /// Deferred answers read so far, with their tags.
    settled: Vec<(T, Summary)>,
    /// Results of queued captures read so far.
    captured: Vec<Captured>,
    /// A pinning reset (`SET timestamp=DEFAULT`) owed by this session,
    /// sent before the next statement that may read the clock and does not
    /// read the previous statement's diagnostics (`session::pinning::
    /// OwedReset`, `Session::owed_reset`).
    pub pending_reset: Option<&'static [u8]>,
    /// `SET autocommit=1` is owed: cutover switched autocommit off on this
    /// (mirror) connection for a transaction that has ended. Sent before
    /// the next command of any kind, unless [`Self::keep_autocommit_off`]
    /// takes it first (the next command is a mirrored BEGIN, which needs
    /// autocommit off again): one command less per transaction.
    restore_autocommit: bool,
}

/// An answer owed by the backend for a command sent ahead.
enum Expected<T> {
    /// One packet, dropped (an ERR is logged).
    Silent,
    /// A full query response, kept with its tag.
    Deferred(T),
    /// A text result set the proxy reads itself (at most this many bytes
    /// of rows kept).
    Captured(usize),
}

/// Bytes of a LOCAL INFILE the client sent, kept (up to a limit) to mirror.
#[derive(Debug, Default)]
pub struct InfileCopy {
    /// The file's bytes, at most the limit given to [`Backend::relay`].
    pub data: Vec<u8>,
    /// More than the limit arrived; `data` holds only the beginning.
    pub truncated: bool,
}

impl<T> Backend<T> {
    fn new(
        side: Side,
        io: PacketIo,
        thread_id: u32,
        capabilities: CapabilityFlags,
        in_trans: bool,
    ) -> Self {
        Backend {
            side,
            io,
            thread_id,
            capabilities,
            in_trans,
            autocommit: true,
            mariadb: true,
            expected: VecDeque::new(),
            settled: Vec::new(),
            captured: Vec::new(),
            pending_reset: None,
            restore_autocommit: false,
        }
    }

    fn io_err(&self, source: std::io::Error) -> BackendError {
        BackendError::Io {
            side: self.side,
            source,
        }
    }

    fn malformed(&self, reason: impl ToString) -> BackendError {
        BackendError::Protocol {
            side: self.side,
            reason: reason.to_string(),
        }
    }

    /// Whether results end with an OK packet (CLIENT_DEPRECATE_EOF) rather
    /// than a classic EOF packet.
    pub fn deprecate_eof(&self) -> bool {
        self.capabilities
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// Owe `SET autocommit=1` (see the field): it goes before the next
    /// command this connection sends.
    pub fn owe_autocommit_restore(&mut self) {
        self.restore_autocommit = true;
    }

    /// Whether `SET autocommit=1` is owed.
    pub fn autocommit_restore_owed(&self) -> bool {
        self.restore_autocommit
    }

    /// Take the owed `SET autocommit=1` without sending it: the next command
    /// is a BEGIN that wants autocommit off. `false` when none was owed.
    pub fn keep_autocommit_off(&mut self) -> bool {
        std::mem::take(&mut self.restore_autocommit)
    }

    /// Every command goes through here first: an owed `SET autocommit=1`
    /// is queued ahead of it, so no path can send a command on a connection
    /// whose autocommit cutover left off.
    fn before_command(&mut self) {
        if std::mem::take(&mut self.restore_autocommit) {
            self.io.queue_packet(0, &command::query("SET autocommit=1"));
            self.expected.push_back(Expected::Silent);
            self.autocommit = true;
        }
    }

    /// Send a command packet (sequence 0), with any queued silent commands
    /// before it. Commands without a response (STMT_CLOSE, SEND_LONG_DATA)
    /// end here.
    ///
    /// # Errors
    /// [`BackendError::Io`] when the write fails.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        self.before_command();
        self.io.queue_packet(0, payload);
        self.io.flush().await.map_err(|e| self.io_err(e))
    }

    /// Queue a command whose single-packet answer the proxy will consume
    /// itself (e.g. pinning SETs around a mirrored write). Sent with the next
    /// command, so it costs no round trip of its own; an ERR answer is logged.
    pub fn queue_silent(&mut self, payload: &[u8]) {
        self.before_command();
        self.io.queue_packet(0, payload);
        self.expected.push_back(Expected::Silent);
    }

    /// Send a command without waiting for its answer: the answer is read
    /// before any later one on this connection, and kept with `tag` until
    /// [`Self::take_settled`] collects it.
    ///
    /// # Errors
    /// [`BackendError::Io`] when the write fails (the tag stays outstanding).
    pub async fn send_deferred(&mut self, payload: &[u8], tag: T) -> Result<(), BackendError> {
        self.before_command();
        self.io.queue_packet(0, payload);
        self.expected.push_back(Expected::Deferred(tag));
        self.io.flush().await.map_err(|e| self.io_err(e))
    }

    /// Deferred commands whose answers are still outstanding.
    pub fn deferred_outstanding(&self) -> usize {
        self.expected
            .iter()
            .filter(|e| matches!(e, Expected::Deferred(_)))
            .count()
    }

    /// Answers of deferred commands read so far, in sending order.
    pub fn take_settled(&mut self) -> Vec<(T, Summary)> {
        std::mem::take(&mut self.settled)
    }

    /// Read every outstanding answer now (deferred ones are then available
    /// from [`Self::take_settled`]).
    ///
    /// # Errors
    /// [`BackendError::Io`] / [`BackendError::Protocol`] as [`Self::discard`].
    pub async fn settle_outstanding(&mut self) -> Result<(), BackendError> {
        // Queued silent commands are only sent with the next command: send
        // them now, or their answers never come.
        self.io.flush().await.map_err(|e| self.io_err(e))?;
        self.drain_expected().await
    }

    /// Read every outstanding answer (they come before any new one).
    async fn drain_expected(&mut self) -> Result<(), BackendError> {
        while let Some(e) = self.expected.pop_front() {
            match e {
                Expected::Silent => {
                    let s = self.read_discard(ResponseKind::Single, None).await?;
                    if let Some(err) = s.err {
                        tracing::warn!(side = %self.side, code = err.code, "pinning statement failed: {}", err.message);
                    }
                }
                Expected::Deferred(tag) => {
                    let s = self.read_discard(ResponseKind::Query, None).await?;
                    self.settled.push((tag, s));
                }
                Expected::Captured(limit) => {
                    let c = self.read_captured(limit).await?;
                    self.captured.push(c);
                }
            }
        }
        Ok(())
    }

    /// Read and drop a response (after every outstanding answer), returning
    /// what it amounted to. A LOCAL INFILE request is answered with `infile`
    /// (or an empty file).
    ///
    /// # Errors
    /// [`BackendError::Io`] when the connection breaks,
    /// [`BackendError::Protocol`] for a response that does not parse.
    pub async fn discard(
        &mut self,
        kind: ResponseKind,
        infile: Option<&InfileCopy>,
    ) -> Result<Summary, BackendError> {
        self.drain_expected().await?;
        self.read_discard(kind, infile).await
    }

    async fn read_discard(
        &mut self,
        kind: ResponseKind,
        infile: Option<&InfileCopy>,
    ) -> Result<Summary, BackendError> {
        let mut tracker = Tracker::new(kind, self.deprecate_eof());
        loop {
            let frame = self.io.expect_frame().await.map_err(|e| self.io_err(e))?;
            match tracker
                .feed(frame.payload())
                .map_err(|e| self.malformed(e))?
            {
                Step::More => {}
                Step::Done => break,
                Step::LocalInfile => {
                    let mut seq = frame.seq().wrapping_add(1);
                    if let Some(copy) = infile {
                        for chunk in copy.data.chunks(wire::MAX_PAYLOAD - 1) {
                            seq = self.io.queue_packet(seq, chunk);
                        }
                    }
                    self.io.queue_packet(seq, &[]);
                    self.io.flush().await.map_err(|e| self.io_err(e))?;
                    tracker.resume_after_infile();
                }
            }
        }
        self.note_status(&tracker.summary);
        Ok(tracker.summary)
    }

    /// Send a command and discard its response.
    ///
    /// # Errors
    /// As [`Self::send`] and [`Self::discard`].
    pub async fn run(
        &mut self,
        payload: &[u8],
        kind: ResponseKind,
    ) -> Result<Summary, BackendError> {
        self.send(payload).await?;
        self.discard(kind, None).await
    }

    /// Stream a response to the client packet by packet (sequence ids kept).
    /// `stmt_id` rewrites the statement id of a PREPARE_OK to the proxy's own.
    /// A LOCAL INFILE request is relayed to the client and the file relayed
    /// back; up to `infile_limit` bytes of it are kept for mirroring.
    /// With `hold_last`, the final packets stay in the client's buffer: the
    /// caller flushes them once the mirror has applied the statement.
    /// Outstanding answers (silent, deferred) are read first.
    ///
    /// While it waits for the backend, the client's socket is watched: a
    /// client that disconnects ends the relay at once with
    /// [`RelayError::ClientGone`], so the caller can stop the backend's work
    /// and finish the response with [`Self::finish`]. Bytes a client sends
    /// meanwhile (pipelined commands) stay buffered for later.
    ///
    /// # Errors
    /// [`RelayError::Backend`] when the backend fails (the client may have
    /// part of the response), [`RelayError::Client`] when the client does,
    /// [`RelayError::ClientGone`] when it disconnects while waiting,
    /// [`RelayError::ClientOutOfOrder`] for LOCAL INFILE data with a wrong
    /// sequence id.
    pub async fn relay(
        &mut self,
        client: &mut PacketIo,
        kind: ResponseKind,
        stmt_id: Option<u32>,
        infile_limit: usize,
        hold_last: bool,
    ) -> Result<(Summary, Option<InfileCopy>), RelayError> {
        self.drain_expected().await?;
        let mut tracker = Tracker::new(kind, self.deprecate_eof());
        let mut infile = None;
        let mut first = true;
        let mut watching = true;
        loop {
            let Some(mut frame) = self.next_watching(client, &mut watching).await? else {
                return Err(RelayError::ClientGone(Unfinished { tracker }));
            };
            let step = tracker
                .feed(frame.payload())
                .map_err(|e| self.malformed(e))?;
            if first {
                first = false;
                if let (Some(id), Some((_, _, _))) = (stmt_id, tracker.summary.prepared) {
                    frame.bytes[5..9].copy_from_slice(&id.to_le_bytes());
                }
            }
            client.queue_frame(&frame);
            match step {
                Step::More => {
                    if client.buffered() >= FLUSH_THRESHOLD {
                        client.flush().await.map_err(RelayError::Client)?;
                    }
                }
                Step::Done => break,
                Step::LocalInfile => {
                    client.flush().await.map_err(RelayError::Client)?;
                    let seq = frame.seq().wrapping_add(1);
                    infile = Some(self.relay_infile(client, infile_limit, seq).await?);
                    tracker.resume_after_infile();
                }
            }
        }
        if !hold_last {
            client.flush().await.map_err(RelayError::Client)?;
        }
        self.note_status(&tracker.summary);
        Ok((tracker.summary, infile))
    }

    /// The next backend frame; while waiting for it, watch `client` for a
    /// disconnect (`Ok(None)`). Watching stops (`watching` cleared) once the
    /// client has pipelined more than [`PIPELINED_LIMIT`] bytes.
    async fn next_watching(
        &mut self,
        client: &mut PacketIo,
        watching: &mut bool,
    ) -> Result<Option<Frame>, RelayError> {
        loop {
            if let Some(f) = self.io.buffered_frame() {
                return Ok(Some(f));
            }
            if !*watching {
                return Ok(Some(
                    self.io.expect_frame().await.map_err(|e| self.io_err(e))?,
                ));
            }
            tokio::select! {
                biased;
                f = self.io.expect_frame() => return Ok(Some(f.map_err(|e| self.io_err(e))?)),
                r = client.readable() => match r {
                    Ok(Readable::Data) => *watching = client.unread() <= PIPELINED_LIMIT,
                    Ok(Readable::Closed) | Err(_) => return Ok(None),
                },
            }
        }
    }

    /// Read and drop the rest of a response the client left in the middle
    /// of ([`RelayError::ClientGone`]); what it amounted to.
    ///
    /// # Errors
    /// As [`Self::discard`].
    pub async fn finish(&mut self, unfinished: Unfinished) -> Result<Summary, BackendError> {
        let mut tracker = unfinished.tracker;
        while !tracker.is_done() {
            let frame = self.io.expect_frame().await.map_err(|e| self.io_err(e))?;
            match tracker
                .feed(frame.payload())
                .map_err(|e| self.malformed(e))?
            {
                Step::More | Step::Done => {}
                Step::LocalInfile => {
                    // Nobody is left to send the file: an empty one.
                    self.io.queue_packet(frame.seq().wrapping_add(1), &[]);
                    self.io.flush().await.map_err(|e| self.io_err(e))?;
                    tracker.resume_after_infile();
                }
            }
        }
        self.note_status(&tracker.summary);
        Ok(tracker.summary)
    }

    /// Wait until the backend closes the connection (or resets it), without
    /// consuming anything it sends meanwhile (answers to commands sent
    /// ahead stay buffered). For an idle session: a server that drops it
    /// (`wait_timeout`) is noticed at once. Never resolves while the backend
    /// has sent more than [`PIPELINED_LIMIT`] unread bytes.
    pub async fn closed(&mut self) -> Closed {
        loop {
            if self.io.unread() > PIPELINED_LIMIT {
                return std::future::pending().await;
            }
            match self.io.readable().await {
                Ok(Readable::Data) => continue,
                Ok(Readable::Closed) => return Closed::Eof,
                Err(_) => return Closed::Reset,
            }
        }
    }

    /// Complete packets the backend sent that no command asked for (a
    /// server's last word before it closes an idle session, as MySQL 8's
    /// ER_CLIENT_INTERACTION_TIMEOUT), to pass on to the client.
    pub fn unsolicited(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        if self.expected.is_empty() {
            while let Some(f) = self.io.buffered_frame() {
                out.push(f);
            }
        }
        out
    }

    async fn relay_infile(
        &mut self,
        client: &mut PacketIo,
        limit: usize,
        mut seq: u8,
    ) -> Result<InfileCopy, RelayError> {
        let mut copy = InfileCopy::default();
        loop {
            let frame = client.expect_frame().await.map_err(RelayError::Client)?;
            if frame.seq() != seq {
                return Err(RelayError::ClientOutOfOrder);
            }
            seq = seq.wrapping_add(1);
            let empty = frame.payload_len() == 0;
            if copy.data.len() + frame.payload_len() <= limit {
                copy.data.extend_from_slice(frame.payload());
            } else {
                copy.truncated = true;
            }
            self.io.queue_frame(&frame);
            if empty {
                break;
            }
            if self.io.buffered() >= FLUSH_THRESHOLD {
                self.io.flush().await.map_err(|e| self.io_err(e))?;
            }
        }
        self.io.flush().await.map_err(|e| self.io_err(e))?;
        Ok(copy)
    }

    fn note_status(&mut self, summary: &Summary) {
        if let Some(t) = summary.in_trans() {
            self.in_trans = t;
        }
        if let Some(a) = summary.autocommit() {
            self.autocommit = a;
        }
    }

    /// Politely close (COM_QUIT, then shut the stream down; errors ignored).
    pub async fn quit(mut self) {
        self.io
            .queue_packet(0, &command::payload(Com::COM_QUIT, &[]));
        self.io.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::query;
    use crate::testing::{self, Answer};
    use crate::wire::ErrInfo;

    #[tokio::test]
    async fn queued_answers_are_read_in_order_before_the_next_response() {
        let (mut b, fake) = testing::backend::<&str>(Side::Destination, testing::tiny_db()).await;
        b.queue_silent(&query("SET timestamp=1"));
        b.send_deferred(&query("INSERT INTO t VALUES (1)"), "first")
            .await
            .unwrap();
        b.queue_silent(&query("SET timestamp=DEFAULT"));
        b.send_deferred(&query("INSERT INTO t VALUES (2)"), "second")
            .await
            .unwrap();
        assert_eq!(b.deferred_outstanding(), 2);
        assert!(b.take_settled().is_empty(), "nothing read yet");

        let select = b
            .run(&query("SELECT 1"), ResponseKind::Query)
            .await
            .unwrap();
        assert_eq!(
            select.result_sets, 1,
            "the SELECT's own answer, not a queued one"
        );
        let settled: Vec<_> = b
            .take_settled()
            .into_iter()
            .map(|(tag, s)| (tag, s.ok.map(|o| (o.affected_rows, o.last_insert_id))))
            .collect();
        assert_eq!(
            settled,
            vec![("first", Some((1, 1))), ("second", Some((1, 2)))]
        );
        assert_eq!(b.deferred_outstanding(), 0);
        assert_eq!(
            fake.received(),
            [
                "SET timestamp=1",
                "INSERT INTO t VALUES (1)",
                "SET timestamp=DEFAULT",
                "INSERT INTO t VALUES (2)",
                "SELECT 1"
            ]
        );
    }

    #[tokio::test]
    async fn settling_sends_what_is_queued_and_reads_every_answer() {
        let (mut b, fake) = testing::backend::<&str>(Side::Destination, testing::tiny_db()).await;
        b.send_deferred(&query("INSERT INTO t VALUES (1)"), "insert")
            .await
            .unwrap();
        b.queue_silent(&query("SET timestamp=DEFAULT"));
        let settled =
            tokio::time::timeout(std::time::Duration::from_secs(10), b.settle_outstanding()).await;
        settled
            .expect("not waiting for an answer to an unsent command")
            .unwrap();
        assert_eq!(b.deferred_outstanding(), 0);
        assert_eq!(b.take_settled().len(), 1);
        assert_eq!(
            fake.received().last().map(String::as_str),
            Some("SET timestamp=DEFAULT")
        );
    }

    #[tokio::test]
    async fn a_failed_silent_command_does_not_fail_the_next_one() {
        let mut db = testing::TinyDb::default();
        let script: testing::Script = Box::new(move |cmd| {
            if cmd.starts_with(b"\x03SET") {
                Answer::Packets(vec![wire::err_payload(1231, "42000", "bad value")])
            } else {
                Answer::Packets(db.answer(cmd))
            }
        });
        let (mut b, _fake) = testing::backend::<()>(Side::Source, script).await;
        b.queue_silent(&query("SET timestamp=x"));
        let s = b
            .run(&query("UPDATE t SET a = 1"), ResponseKind::Query)
            .await
            .unwrap();
        assert_eq!(s.err, None);
        assert_eq!(s.ok.map(|o| o.affected_rows), Some(1));
        let s = b
            .run(&query("SET a = 1"), ResponseKind::Query)
            .await
            .unwrap();
        let expected = ErrInfo {
            code: 1231,
            state: "42000".into(),
            message: "bad value".into(),
        };
        assert_eq!(s.err, Some(expected), "a command's own ERR is returned");
    }

    #[tokio::test]
    async fn a_lost_connection_keeps_what_was_read_and_leaves_the_rest_outstanding() {
        let mut db = testing::TinyDb::default();
        let script: testing::Script = Box::new(move |cmd| {
            if cmd.ends_with(b"VALUES (2)") {
                Answer::Close
            } else {
                Answer::Packets(db.answer(cmd))
            }
        });
        let (mut b, _fake) = testing::backend::<u32>(Side::Destination, script).await;
        for i in 1..=3u32 {
            let sql = format!("INSERT INTO t VALUES ({i})");
            b.send_deferred(&query(sql), i).await.unwrap();
        }
        let e = b
            .run(&query("COMMIT"), ResponseKind::Query)
            .await
            .unwrap_err();
        assert!(e.is_fatal(), "{e}");
        let settled: Vec<u32> = b.take_settled().into_iter().map(|(t, _)| t).collect();
        assert_eq!(settled, [1], "the answer read before the break is kept");
        // The answer being read when the connection broke is the error
        // itself; only the ones behind it are still outstanding.
        assert_eq!(b.deferred_outstanding(), 1);
    }

    #[tokio::test]
    async fn relay_can_hold_the_end_of_a_response_until_the_caller_flushes() {
        let (mut b, _fake) = testing::backend::<()>(Side::Source, testing::tiny_db()).await;
        let (proxy_end, client_end) = tokio::io::duplex(1 << 16);
        let (mut client, mut reader) = (PacketIo::new(proxy_end), PacketIo::new(client_end));
        b.send(&query("SELECT 1")).await.unwrap();
        let (summary, infile) = b
            .relay(&mut client, ResponseKind::Query, None, 0, true)
            .await
            .unwrap();
        assert_eq!((summary.result_sets, infile.is_none()), (1, true));
        assert!(
            client.buffered() > 0,
            "held in the client's buffer, not sent"
        );
        client.flush().await.unwrap();
        for want in 1..=4u8 {
            let f = reader.expect_frame().await.unwrap();
            assert_eq!(f.seq(), want, "sequence ids kept as the backend sent them");
        }
    }
}
