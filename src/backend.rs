//! One authenticated connection to a backend database, pinned to one client
//! session, plus the relay of its responses.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MyDeserialize;
use mysql_common::scramble::{scramble_native, scramble_sha256};
use tokio::net::TcpStream;

use crate::command::{self, Com};
use crate::config::BackendConfig;
use crate::error::{BackendError, SessionError};
use crate::pattern::Side;
use crate::response::{ResponseKind, Step, Summary, Tracker};
use crate::wire::{self, PacketIo, FLUSH_THRESHOLD};

const NATIVE: &[u8] = b"mysql_native_password";
const CACHING_SHA2: &[u8] = b"caching_sha2_password";

/// What a backend announced in its greeting.
#[derive(Debug, Clone)]
pub struct Greeting {
    pub version: String,
    pub capabilities: CapabilityFlags,
    pub collation: u8,
}

/// How a session wants its backend connections set up.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// Capabilities negotiated with the client (wire-format flags must match).
    pub capabilities: CapabilityFlags,
    pub collation: u8,
    pub database: Option<String>,
    pub max_packet: u32,
    pub timeout: Duration,
    pub attributes: Vec<(String, String)>,
}

pub struct Backend {
    pub side: Side,
    io: PacketIo,
    /// The backend's own connection (thread) id.
    pub thread_id: u32,
    pub capabilities: CapabilityFlags,
    /// Last known IN_TRANS status of this backend session.
    pub in_trans: bool,
    /// Answers still to be read, in order, before the next real response:
    /// those of `queue_silent` commands (dropped) and of `send_deferred`
    /// commands (kept in `settled` for the session to judge).
    expected: VecDeque<Expected>,
    settled: Vec<(MirrorTag, Summary)>,
}

enum Expected {
    Silent,
    Deferred(MirrorTag),
}

/// What a deferred mirrored statement must be compared with once its answer
/// arrives: the authoritative side's outcome and where it wrote.
#[derive(Debug, Clone)]
pub struct MirrorTag {
    pub primary: Summary,
    pub pinned: bool,
    pub table: Option<String>,
    pub digest: String,
}

/// Bytes of a LOCAL INFILE the client sent, kept (up to a limit) to mirror.
#[derive(Debug, Default)]
pub struct InfileCopy {
    pub data: Vec<u8>,
    pub truncated: bool,
}

impl Backend {
    /// Connect, authenticate with the configured credentials and apply the
    /// session's capabilities, collation and default database.
    pub async fn connect(
        cfg: &BackendConfig,
        side: Side,
        params: &ConnectParams,
    ) -> Result<(Backend, Greeting), BackendError> {
        let addr = cfg.address();
        match tokio::time::timeout(params.timeout, Self::connect_inner(cfg, side, params)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Connect {
                side,
                addr,
                reason: format!("timed out after {} ms", params.timeout.as_millis()),
            }),
        }
    }

    async fn connect_inner(
        cfg: &BackendConfig,
        side: Side,
        params: &ConnectParams,
    ) -> Result<(Backend, Greeting), BackendError> {
        let addr = cfg.address();
        let stream = TcpStream::connect((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| BackendError::Connect {
                side,
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        let mut io = PacketIo::new(stream);
        let io_err = |source| BackendError::Io { side, source };
        let proto = |reason: String| BackendError::Protocol { side, reason };

        let frame = io.expect_frame().await.map_err(io_err)?;
        if frame.payload().first() == Some(&0xFF) {
            return Err(BackendError::Server {
                side,
                err: wire::parse_err(frame.payload()),
            });
        }
        let hs = HandshakePacket::deserialize((), &mut ParseBuf(frame.payload()))
            .map_err(|e| proto(format!("bad greeting: {e}")))?;
        let greeting = Greeting {
            version: hs.server_version_str().into_owned(),
            capabilities: hs.capabilities(),
            collation: hs.default_collation(),
        };
        let nonce = hs.nonce();
        let caps = backend_capabilities(
            params.capabilities,
            greeting.capabilities,
            params.database.is_some(),
            !params.attributes.is_empty(),
        );

        let auth = scramble_native(&nonce, cfg.password.as_bytes())
            .map(|a| a.to_vec())
            .unwrap_or_default();
        let payload = handshake_response(cfg, params, caps, &auth);
        io.send_packet(frame.seq().wrapping_add(1), &payload)
            .await
            .map_err(io_err)?;

        let mut seq;
        // Authentication exchange: OK, ERR, auth switch, or more data.
        loop {
            let reply = io.expect_frame().await.map_err(io_err)?;
            seq = reply.seq().wrapping_add(1);
            let p = reply.payload();
            match p.first() {
                Some(0x00) => {
                    let status = wire::parse_ok(p).map(|o| o.status).unwrap_or(0);
                    let backend = Backend {
                        side,
                        io,
                        thread_id: hs.connection_id(),
                        capabilities: caps,
                        in_trans: status & crate::response::IN_TRANS != 0,
                        expected: VecDeque::new(),
                        settled: Vec::new(),
                    };
                    return Ok((backend, greeting));
                }
                Some(0xFF) => return Err(BackendError::Server { side, err: wire::parse_err(p) }),
                Some(0xFE) => {
                    let rest = &p[1..];
                    let nul = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                    let plugin = &rest[..nul];
                    let mut data = rest.get(nul + 1..).unwrap_or_default();
                    if data.last() == Some(&0) {
                        data = &data[..data.len() - 1];
                    }
                    let answer = match plugin {
                        NATIVE => scramble_native(data, cfg.password.as_bytes()).map(|a| a.to_vec()),
                        CACHING_SHA2 => scramble_sha256(data, cfg.password.as_bytes()).map(|a| a.to_vec()),
                        other => {
                            return Err(proto(format!(
                                "backend user `{}` needs auth plugin {}; cutover supports mysql_native_password and caching_sha2_password (fast path)",
                                cfg.user,
                                String::from_utf8_lossy(other)
                            )))
                        }
                    }
                    .unwrap_or_default();
                    io.send_packet(seq, &answer).await.map_err(io_err)?;
                }
                Some(0x01) => match p.get(1) {
                    Some(0x03) => continue, // caching_sha2 fast auth OK; the OK packet follows
                    Some(0x04) => {
                        return Err(proto(format!(
                            "backend user `{}` needs caching_sha2_password full authentication (TLS/RSA), which cutover does not do; use mysql_native_password for it",
                            cfg.user
                        )))
                    }
                    _ => return Err(proto("unexpected auth data from backend".into())),
                },
                _ => return Err(proto("unexpected packet during authentication".into())),
            }
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

    pub fn deprecate_eof(&self) -> bool {
        self.capabilities
            .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    }

    /// Send a command packet (sequence 0). Commands without a response
    /// (STMT_CLOSE, SEND_LONG_DATA) end here.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        self.io.queue_packet(0, payload);
        self.io.flush().await.map_err(|e| self.io_err(e))
    }

    /// Queue a command whose single-packet answer the proxy will consume
    /// itself (pinning SETs around a mirrored write). Sent with the next
    /// command, so it costs no round trip of its own.
    pub fn queue_silent(&mut self, payload: &[u8]) {
        self.io.queue_packet(0, payload);
        self.expected.push_back(Expected::Silent);
    }

    /// Send a mirrored statement without waiting for its answer (inside a
    /// transaction: the answer is read before anything else on this
    /// connection, at the latest at COMMIT). Collect it with `take_settled`.
    pub async fn send_deferred(
        &mut self,
        payload: &[u8],
        tag: MirrorTag,
    ) -> Result<(), BackendError> {
        self.io.queue_packet(0, payload);
        self.expected.push_back(Expected::Deferred(tag));
        self.io.flush().await.map_err(|e| self.io_err(e))
    }

    /// Deferred statements whose answers are still outstanding.
    pub fn deferred_outstanding(&self) -> usize {
        self.expected
            .iter()
            .filter(|e| matches!(e, Expected::Deferred(_)))
            .count()
    }

    /// Answers of deferred statements read so far.
    pub fn take_settled(&mut self) -> Vec<(MirrorTag, Summary)> {
        std::mem::take(&mut self.settled)
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
            }
        }
        Ok(())
    }

    /// Read and drop a response, returning what it amounted to. A LOCAL
    /// INFILE request is answered with `infile` (or an empty file).
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
    pub async fn relay(
        &mut self,
        client: &mut PacketIo,
        kind: ResponseKind,
        stmt_id: Option<u32>,
        infile_limit: usize,
        hold_last: bool,
    ) -> Result<(Summary, Option<InfileCopy>), SessionError> {
        self.drain_expected().await?;
        let mut tracker = Tracker::new(kind, self.deprecate_eof());
        let mut infile = None;
        let mut first = true;
        loop {
            let mut frame = self.io.expect_frame().await.map_err(|e| self.io_err(e))?;
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
                        client.flush().await?;
                    }
                }
                Step::Done => break,
                Step::LocalInfile => {
                    client.flush().await?;
                    infile = Some(self.relay_infile(client, infile_limit).await?);
                    tracker.resume_after_infile();
                }
            }
        }
        if !hold_last {
            client.flush().await?;
        }
        self.note_status(&tracker.summary);
        Ok((tracker.summary, infile))
    }

    async fn relay_infile(
        &mut self,
        client: &mut PacketIo,
        limit: usize,
    ) -> Result<InfileCopy, SessionError> {
        let mut copy = InfileCopy::default();
        loop {
            let frame = client.expect_frame().await?;
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
    }

    /// Politely close (COM_QUIT).
    pub async fn quit(mut self) {
        self.io
            .queue_packet(0, &command::payload(Com::COM_QUIT, &[]));
        self.io.shutdown().await;
    }
}

/// The capabilities cutover asks a backend for: the client's wire-format
/// choices, limited to what the backend offers, plus what the proxy needs.
fn backend_capabilities(
    client: CapabilityFlags,
    server: CapabilityFlags,
    with_db: bool,
    attrs: bool,
) -> CapabilityFlags {
    let wanted = CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_TRANSACTIONS;
    let mut caps = (client | wanted) & server;
    caps.remove(
        CapabilityFlags::CLIENT_SSL
            | CapabilityFlags::CLIENT_COMPRESS
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB
            | CapabilityFlags::CLIENT_CONNECT_ATTRS,
    );
    // CLIENT_LONG_PASSWORD doubles as MariaDB's "CLIENT_MYSQL": keep it so the
    // server speaks the plain MySQL protocol (no MariaDB extended metadata).
    caps.insert(CapabilityFlags::CLIENT_LONG_PASSWORD);
    if with_db {
        caps.insert(CapabilityFlags::CLIENT_CONNECT_WITH_DB);
    }
    if attrs && server.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS) {
        caps.insert(CapabilityFlags::CLIENT_CONNECT_ATTRS);
    }
    caps
}

fn handshake_response(
    cfg: &BackendConfig,
    params: &ConnectParams,
    caps: CapabilityFlags,
    auth: &[u8],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(&caps.bits().to_le_bytes());
    p.extend_from_slice(&params.max_packet.to_le_bytes());
    p.push(params.collation);
    p.extend_from_slice(&[0u8; 23]);
    p.extend_from_slice(cfg.user.as_bytes());
    p.push(0);
    if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA) {
        wire::put_lenenc_int(&mut p, auth.len() as u64);
    } else {
        p.push(auth.len() as u8);
    }
    p.extend_from_slice(auth);
    if caps.contains(CapabilityFlags::CLIENT_CONNECT_WITH_DB) {
        p.extend_from_slice(params.database.as_deref().unwrap_or("").as_bytes());
        p.push(0);
    }
    p.extend_from_slice(NATIVE);
    p.push(0);
    if caps.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS) {
        let mut attrs = Vec::new();
        for (k, v) in &params.attributes {
            wire::put_lenenc_int(&mut attrs, k.len() as u64);
            attrs.extend_from_slice(k.as_bytes());
            wire::put_lenenc_int(&mut attrs, v.len() as u64);
            attrs.extend_from_slice(v.as_bytes());
        }
        wire::put_lenenc_int(&mut p, attrs.len() as u64);
        p.extend_from_slice(&attrs);
    }
    p
}

/// Log in, ping, log out: proves a backend answers with our credentials.
pub async fn ping(
    cfg: &BackendConfig,
    side: Side,
    timeout: Duration,
) -> Result<(Duration, Greeting), BackendError> {
    let started = Instant::now();
    let params = ConnectParams {
        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_DEPRECATE_EOF,
        collation: 45,
        database: None,
        max_packet: 16 * 1024 * 1024,
        timeout,
        attributes: Vec::new(),
    };
    let (mut b, greeting) = Backend::connect(cfg, side, &params).await?;
    let ping = command::payload(Com::COM_PING, &[]);
    let fut = b.run(&ping, ResponseKind::Single);
    let summary = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| BackendError::Io {
            side,
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "ping timed out"),
        })??;
    if let Some(err) = summary.err {
        return Err(BackendError::Server { side, err });
    }
    b.quit().await;
    Ok((started.elapsed(), greeting))
}
