//! MySQL packet framing over any byte stream, and the few payload encodings
//! the proxy writes itself.
//!
//! A packet is `len: u24 LE | seq: u8 | payload` (MySQL Client/Server
//! Protocol, "MySQL Packets"). Payloads of 2^24-1 bytes or more are split;
//! the last fragment is shorter than 2^24-1 (possibly empty).

#![warn(missing_docs)]

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;

use mysql_common::constants::StatusFlags;

/// Largest payload of one physical packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// Flush the write buffer once it holds this much while relaying.
pub const FLUSH_THRESHOLD: usize = 64 * 1024;

/// One physical packet as read off the wire, header included.
#[derive(Debug)]
pub struct Frame {
    /// Header (4 bytes: length u24 LE, sequence id) and payload.
    pub bytes: BytesMut,
}

impl Frame {
    /// The sequence id.
    pub fn seq(&self) -> u8 {
        self.bytes[3]
    }

    /// The payload (after the 4-byte header).
    pub fn payload(&self) -> &[u8] {
        &self.bytes[4..]
    }

    /// Payload length in bytes.
    pub fn payload_len(&self) -> usize {
        self.bytes.len() - 4
    }
    /// A payload of exactly 2^24-1 bytes continues in the next packet.
    pub fn continues(&self) -> bool {
        self.payload_len() == MAX_PAYLOAD
    }
}

/// A byte stream a MySQL conversation runs over: TCP for clients and
/// backends, an in-memory [`DuplexStream`] in unit tests; a TLS stream
/// wrapping either is one more implementation.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The peer's address where the transport has one (logs, and the
    /// `'user'@'host'` of an access-denied message).
    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Send small writes at once (TCP_NODELAY where the transport has it):
    /// [`PacketIo`] batches packets itself and flushes whole responses.
    fn set_nodelay(&self) {}

    /// Make closing this transport reset the connection (TCP RST through
    /// `SO_LINGER` 0) instead of a graceful close, where the transport can.
    fn set_reset_on_close(&self) {}

    /// Whether the bytes are encrypted (a TLS stream): decides whether a
    /// password may be sent or accepted in cleartext.
    fn is_secure(&self) -> bool {
        false
    }
}

impl Transport for TcpStream {
    fn peer_addr(&self) -> Option<SocketAddr> {
        TcpStream::peer_addr(self).ok()
    }

    fn set_nodelay(&self) {
        let _ = TcpStream::set_nodelay(self, true);
    }

    fn set_reset_on_close(&self) {
        let _ = TcpStream::set_zero_linger(self);
    }
}

impl Transport for DuplexStream {}

/// A buffered packet connection (client or backend side) over a boxed
/// [`Transport`]: one dynamic call per read or write syscall, none per packet.
pub struct PacketIo {
    stream: Box<dyn Transport>,
    peer: Option<SocketAddr>,
    secure: bool,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
}

impl PacketIo {
    /// Wrap a connected stream (TCP_NODELAY is set where applicable).
    pub fn new(stream: impl Transport) -> Self {
        stream.set_nodelay();
        PacketIo {
            peer: stream.peer_addr(),
            secure: stream.is_secure(),
            stream: Box::new(stream),
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: Vec::with_capacity(16 * 1024),
        }
    }

    /// The peer's address, if the transport has one.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Whether the connection is encrypted (TLS).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// Bytes read from the transport and not yet consumed as packets.
    pub fn read_buffered(&self) -> usize {
        self.rbuf.len()
    }

    /// Replace the transport by what `wrap` makes of it (a TLS handshake
    /// over it): the SSLRequest upgrade of either side. Bytes already read
    /// past the last packet (a client's ClientHello sent right behind its
    /// SSLRequest) are handed to `wrap` ahead of the stream. A TLS client
    /// must first check [`Self::read_buffered`] is 0: a server sends nothing
    /// after an SSLRequest, so bytes there are plaintext injected before the
    /// handshake.
    ///
    /// # Errors
    /// `wrap`'s error (the connection is unusable afterwards).
    pub async fn upgrade<F, Fut, T>(&mut self, wrap: F) -> std::io::Result<()>
    where
        F: FnOnce(Box<dyn Transport>) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<T>>,
        T: Transport,
    {
        self.flush().await?;
        let (closed, _) = tokio::io::duplex(1);
        let plain = std::mem::replace(&mut self.stream, Box::new(closed));
        let plain: Box<dyn Transport> = if self.rbuf.is_empty() {
            plain
        } else {
            Box::new(Rewind {
                prefix: self.rbuf.split(),
                inner: plain,
            })
        };
        let secured = wrap(plain).await?;
        self.secure = secured.is_secure();
        self.stream = Box::new(secured);
        Ok(())
    }

    /// Read one physical packet. `Ok(None)` on a clean EOF before any byte.
    ///
    /// # Errors
    /// The stream's read error; `UnexpectedEof` when it closes mid-packet.
    pub async fn read_frame(&mut self) -> std::io::Result<Option<Frame>> {
        match self.read_frame_within(MAX_PAYLOAD).await {
            Ok(f) => Ok(f),
            Err(ReadError::Io(e)) => Err(e),
            Err(_) => unreachable!("a payload never exceeds MAX_PAYLOAD"),
        }
    }

    /// Read one physical packet whose payload is at most `limit` bytes: the
    /// length in the header is checked before any of the payload is
    /// buffered, so a peer announcing 16 MB costs nothing.
    async fn read_frame_within(&mut self, limit: usize) -> Result<Option<Frame>, ReadError> {
        while self.rbuf.len() < 4 {
            if self.fill().await? == 0 {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(truncated().into())
                };
            }
        }
        let len = u32::from_le_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], 0]) as usize;
        if len > limit {
            return Err(ReadError::TooLarge);
        }
        let total = 4 + len;
        if self.rbuf.len() < total {
            self.rbuf.reserve(total - self.rbuf.len());
            while self.rbuf.len() < total {
                if self.fill().await? == 0 {
                    return Err(truncated().into());
                }
            }
        }
        Ok(Some(Frame {
            bytes: self.rbuf.split_to(total),
        }))
    }

    /// A whole packet already in the read buffer, if there is one (no I/O).
    pub fn buffered_frame(&mut self) -> Option<Frame> {
        if self.rbuf.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes([self.rbuf[0], self.rbuf[1], self.rbuf[2], 0]) as usize;
        (self.rbuf.len() >= 4 + len).then(|| Frame {
            bytes: self.rbuf.split_to(4 + len),
        })
    }

    /// Bytes received and not yet consumed as packets.
    pub fn unread(&self) -> usize {
        self.rbuf.len()
    }

    /// Wait until the peer sends something or closes, without consuming
    /// anything: bytes read are kept for the next [`Self::read_frame`].
    /// Cancel-safe (nothing is lost when the future is dropped), so it can
    /// race other work in `tokio::select!`.
    ///
    /// # Errors
    /// The stream's read error (a reset peer).
    pub async fn readable(&mut self) -> std::io::Result<Readable> {
        match self.fill().await? {
            0 => Ok(Readable::Closed),
            _ => Ok(Readable::Data),
        }
    }

    /// Read a frame, treating EOF as an error.
    ///
    /// # Errors
    /// As [`Self::read_frame`], and `UnexpectedEof` for a clean EOF.
    pub async fn expect_frame(&mut self) -> std::io::Result<Frame> {
        self.read_frame().await?.ok_or_else(truncated)
    }

    /// Read one logical packet (joining split payloads), refusing payloads
    /// larger than `limit` bytes. Returns the payload and the last sequence
    /// id; `Ok(None)` on a clean EOF. Sequence ids are not checked (see
    /// [`Self::read_packet_seq`]).
    ///
    /// # Errors
    /// [`ReadError::TooLarge`] over `limit` (detected from the packet
    /// headers, before the payload is buffered); [`ReadError::Io`] as
    /// [`Self::read_frame`].
    pub async fn read_packet(&mut self, limit: usize) -> Result<Option<(Vec<u8>, u8)>, ReadError> {
        self.read_packet_checked(limit, None).await
    }

    /// [`Self::read_packet`] for a packet whose first frame must carry
    /// sequence id `seq` and each further frame the next one (MySQL
    /// Client/Server Protocol, "Sequence ID"): 0 for a command, 1 for the
    /// handshake response, the next id for an auth-switch answer.
    ///
    /// # Errors
    /// [`ReadError::OutOfOrder`] for any other sequence id (the server then
    /// answers ER_NET_PACKETS_OUT_OF_ORDER and closes); otherwise as
    /// [`Self::read_packet`].
    pub async fn read_packet_seq(
        &mut self,
        limit: usize,
        seq: u8,
    ) -> Result<Option<(Vec<u8>, u8)>, ReadError> {
        self.read_packet_checked(limit, Some(seq)).await
    }

    async fn read_packet_checked(
        &mut self,
        limit: usize,
        mut expected: Option<u8>,
    ) -> Result<Option<(Vec<u8>, u8)>, ReadError> {
        let Some(first) = self.read_frame_within(limit.min(MAX_PAYLOAD)).await? else {
            return Ok(None);
        };
        let mut seq = first.seq();
        check_seq(&mut expected, seq)?;
        let mut payload = first.payload().to_vec();
        let mut more = first.continues();
        while more {
            let room = limit.saturating_sub(payload.len()).min(MAX_PAYLOAD);
            let next = match self.read_frame_within(room).await? {
                Some(f) => f,
                None => return Err(truncated().into()),
            };
            seq = next.seq();
            check_seq(&mut expected, seq)?;
            payload.extend_from_slice(next.payload());
            more = next.continues();
        }
        Ok(Some((payload, seq)))
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.rbuf).await
    }

    /// Queue a payload with sequence ids starting at `seq`; returns the next seq.
    pub fn queue_packet(&mut self, seq: u8, payload: &[u8]) -> u8 {
        write_packet(&mut self.wbuf, seq, payload)
    }

    /// Queue a raw frame (header included) unchanged.
    pub fn queue_frame(&mut self, frame: &Frame) {
        self.wbuf.extend_from_slice(&frame.bytes);
    }

    /// Bytes queued for writing and not yet flushed.
    pub fn buffered(&self) -> usize {
        self.wbuf.len()
    }

    /// Write everything queued. Also gives back memory a huge packet left
    /// behind in the buffers.
    ///
    /// # Errors
    /// The stream's write error.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
            if self.wbuf.capacity() > 4 * FLUSH_THRESHOLD {
                self.wbuf.shrink_to(FLUSH_THRESHOLD);
            }
        }
        if self.rbuf.capacity() > 4 * 1024 * 1024 && self.rbuf.len() < 64 * 1024 {
            // A huge packet passed through; give the memory back.
            let keep = self.rbuf.split();
            self.rbuf = BytesMut::with_capacity(16 * 1024);
            self.rbuf.extend_from_slice(&keep);
        }
        Ok(())
    }

    /// Queue and flush one payload; returns the next sequence id.
    ///
    /// # Errors
    /// The stream's write error.
    pub async fn send_packet(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<u8> {
        let next = self.queue_packet(seq, payload);
        self.flush().await?;
        Ok(next)
    }

    /// Reset the connection when it is dropped (no graceful close): what a
    /// server does to a session it drops, e.g. MariaDB on `wait_timeout`.
    /// Nothing queued is sent.
    pub fn reset_on_drop(&mut self) {
        self.wbuf.clear();
        self.stream.set_reset_on_close();
    }

    /// Flush and shut the stream down (errors ignored: the peer may be gone).
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

/// What [`PacketIo::readable`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    /// Bytes arrived (kept in the read buffer).
    Data,
    /// The peer closed its side (EOF).
    Closed,
}

/// A transport whose first bytes were already read: they are read again
/// before the stream's (see [`PacketIo::upgrade`]).
struct Rewind {
    prefix: BytesMut,
    inner: Box<dyn Transport>,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Transport for Rewind {
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer_addr()
    }

    fn set_nodelay(&self) {
        self.inner.set_nodelay();
    }

    fn set_reset_on_close(&self) {
        self.inner.set_reset_on_close();
    }

    fn is_secure(&self) -> bool {
        self.inner.is_secure()
    }
}

/// Why [`PacketIo::read_packet`] returned no packet.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The payload is larger than the limit (the rest is left unread).
    #[error("packet larger than max_allowed_packet")]
    TooLarge,
    /// A frame carried another sequence id than the protocol's next one.
    #[error("got packets out of order (sequence id {got}, expected {expected})")]
    OutOfOrder {
        /// The id the protocol requires here.
        expected: u8,
        /// The id the peer sent.
        got: u8,
    },
    /// The stream failed or closed mid-packet.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Check `got` against the expected sequence id (if checking) and advance it.
fn check_seq(expected: &mut Option<u8>, got: u8) -> Result<(), ReadError> {
    if let Some(e) = expected {
        if *e != got {
            return Err(ReadError::OutOfOrder { expected: *e, got });
        }
        *e = e.wrapping_add(1);
    }
    Ok(())
}

fn truncated() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "connection closed mid-packet",
    )
}

/// Append `payload` framed as packets starting at `seq`; returns the next seq.
pub fn write_packet(out: &mut Vec<u8>, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD {
            return seq;
        }
    }
}

// ---- length-encoded integers -------------------------------------------------

/// Append `v` as a length-encoded integer (1, 3, 4 or 9 bytes).
pub fn put_lenenc_int(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=250 => out.push(v as u8),
        251..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Read a length-encoded integer from the front of `buf`. `None` if malformed.
pub fn get_lenenc_int(buf: &mut &[u8]) -> Option<u64> {
    let first = *buf.first()?;
    let (v, n) = match first {
        0..=250 => (first as u64, 1),
        0xFC if buf.len() >= 3 => (u16::from_le_bytes([buf[1], buf[2]]) as u64, 3),
        0xFD if buf.len() >= 4 => (u32::from_le_bytes([buf[1], buf[2], buf[3], 0]) as u64, 4),
        0xFE if buf.len() >= 9 => (u64::from_le_bytes(buf[1..9].try_into().ok()?), 9),
        _ => return None,
    };
    buf.advance(n);
    Some(v)
}

// ---- packets the proxy writes itself ------------------------------------------

/// An ERR packet payload.
pub fn err_payload(code: u16, state: &str, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(9 + message.len());
    p.push(0xFF);
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let mut st = [b'H', b'Y', b'0', b'0', b'0'];
    for (d, s) in st.iter_mut().zip(state.bytes()) {
        *d = s;
    }
    p.extend_from_slice(&st);
    p.extend_from_slice(message.as_bytes());
    p
}

/// An OK packet payload (`header` 0x00, or 0xFE for a DEPRECATE_EOF terminator).
pub fn ok_payload(
    header: u8,
    affected: u64,
    last_id: u64,
    status: StatusFlags,
    warnings: u16,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(16);
    p.push(header);
    put_lenenc_int(&mut p, affected);
    put_lenenc_int(&mut p, last_id);
    p.extend_from_slice(&status.bits().to_le_bytes());
    p.extend_from_slice(&warnings.to_le_bytes());
    p
}

/// Parsed fields of an ERR payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrInfo {
    /// The MySQL error number.
    pub code: u16,
    /// The SQLSTATE (`HY000` when the packet carries none).
    pub state: String,
    /// The message text (lossily UTF-8).
    pub message: String,
}

/// The fields of an ERR payload (`0xFF code [#state] message`); a
/// truncated packet gives code 0 rather than an error.
pub fn parse_err(payload: &[u8]) -> ErrInfo {
    let code = if payload.len() >= 3 {
        u16::from_le_bytes([payload[1], payload[2]])
    } else {
        0
    };
    let rest = payload.get(3..).unwrap_or_default();
    let (state, msg) = if rest.first() == Some(&b'#') && rest.len() >= 6 {
        (
            String::from_utf8_lossy(&rest[1..6]).into_owned(),
            &rest[6..],
        )
    } else {
        ("HY000".to_string(), rest)
    };
    ErrInfo {
        code,
        state,
        message: String::from_utf8_lossy(msg).into_owned(),
    }
}

/// Parsed fields of an OK payload (header 0x00 or 0xFE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OkInfo {
    /// Rows changed (or matched, with CLIENT_FOUND_ROWS).
    pub affected_rows: u64,
    /// The first AUTO_INCREMENT id generated, 0 if none.
    pub last_insert_id: u64,
    /// Server status flags (IN_TRANS, AUTOCOMMIT, MORE_RESULTS, …).
    pub status: u16,
    /// Number of warnings.
    pub warnings: u16,
}

/// The fields of an OK payload; `None` if the length-encoded integers are
/// truncated.
pub fn parse_ok(payload: &[u8]) -> Option<OkInfo> {
    let mut b = payload.get(1..)?;
    let affected_rows = get_lenenc_int(&mut b)?;
    let last_insert_id = get_lenenc_int(&mut b)?;
    if b.len() < 4 {
        // Pre-4.1 OK packets have no status; treat as autocommit.
        return Some(OkInfo {
            affected_rows,
            last_insert_id,
            status: 0x0002,
            warnings: 0,
        });
    }
    Some(OkInfo {
        affected_rows,
        last_insert_id,
        status: u16::from_le_bytes([b[0], b[1]]),
        warnings: u16::from_le_bytes([b[2], b[3]]),
    })
}

/// Status flags of a classic EOF payload (0xFE, warnings u16, status u16).
pub fn parse_eof_status(payload: &[u8]) -> u16 {
    if payload.len() >= 5 {
        u16::from_le_bytes([payload[3], payload[4]])
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_roundtrip() {
        for v in [
            0u64,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_lenenc_int(&mut out, v);
            let mut s = &out[..];
            assert_eq!(get_lenenc_int(&mut s), Some(v));
            assert!(s.is_empty());
        }
        assert_eq!(get_lenenc_int(&mut &[0xFCu8, 1][..]), None);
        assert_eq!(get_lenenc_int(&mut &[][..]), None);
    }

    #[test]
    fn split_large_payloads() {
        let payload = vec![7u8; MAX_PAYLOAD + 10];
        let mut out = Vec::new();
        assert_eq!(write_packet(&mut out, 3, &payload), 5);
        assert_eq!(out.len(), payload.len() + 8);
        // exact multiple gets an empty trailer
        let mut out = Vec::new();
        assert_eq!(write_packet(&mut out, 0, &vec![1u8; MAX_PAYLOAD]), 2);
        assert_eq!(&out[out.len() - 4..], &[0, 0, 0, 1]);
    }

    #[test]
    fn err_and_ok_roundtrip() {
        let e = parse_err(&err_payload(1045, "28000", "Access denied"));
        assert_eq!(
            (e.code, e.state.as_str(), e.message.as_str()),
            (1045, "28000", "Access denied")
        );
        let ok = parse_ok(&ok_payload(
            0,
            3,
            70000,
            StatusFlags::SERVER_STATUS_AUTOCOMMIT,
            2,
        ))
        .unwrap();
        assert_eq!(
            ok,
            OkInfo {
                affected_rows: 3,
                last_insert_id: 70000,
                status: 2,
                warnings: 2
            }
        );
        assert_eq!(parse_ok(&[0x00, 0xFC]), None);
    }
}
