//! Logging in to a backend: TCP connect, the server's greeting, the
//! handshake response and the authentication exchange (MySQL Client/Server
//! Protocol, "Connection Phase"); and `ping` (log in, COM_PING, COM_QUIT).
//!
//! [`Backend::handshake`] runs over any connected [`PacketIo`], so a TLS
//! upgrade or an in-memory test transport plugs in before it.

use std::time::{Duration, Instant};

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MyDeserialize;
use tokio::net::TcpStream;

use super::Backend;
use crate::auth::client::{authenticate, Exchange};
use crate::auth::Plugin;
pub use crate::auth::{Credentials, Secret};
use crate::capabilities;
use crate::command::{self, Com};
use crate::config::BackendConfig;
use crate::error::BackendError;
use crate::pattern::Side;
use crate::response::{ResponseKind, IN_TRANS};
use crate::wire::{self, PacketIo};

/// What a backend announced in its greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Server version string, e.g. `5.5.5-10.11.6-MariaDB`.
    pub version: String,
    /// Capabilities the server offers.
    pub capabilities: CapabilityFlags,
    /// Default collation id of the server.
    pub collation: u8,
    /// MariaDB extended capabilities (empty unless the greeting clears
    /// CLIENT_MYSQL, i.e. the server is MariaDB 10.2+).
    pub mariadb: MariadbCapabilities,
}

/// How a session wants its backend connections set up.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// Capabilities negotiated with the client (wire-format flags must match).
    pub capabilities: CapabilityFlags,
    /// MariaDB extended capabilities negotiated with the client.
    pub mariadb: MariadbCapabilities,
    /// The account to log in as; `None`: the backend URL's (cutover's own work).
    pub credentials: Option<Credentials>,
    /// Collation id the client logged in with.
    pub collation: u8,
    /// Default database to log in to.
    pub database: Option<String>,
    /// Largest packet the backend may send, in bytes.
    pub max_packet: u32,
    /// Bound on TCP connect plus login.
    pub timeout: Duration,
    /// Connection attributes to pass on (the client's).
    pub attributes: Vec<(String, String)>,
}

impl<T> Backend<T> {
    /// Connect over TCP, authenticate as `params.credentials` (the URL's
    /// account when `None`) and apply the session's capabilities, collation
    /// and default database.
    ///
    /// # Errors
    /// [`BackendError::Connect`] when the TCP connect fails or the whole
    /// login takes longer than `params.timeout`; otherwise as [`Self::handshake`].
    pub async fn connect(
        cfg: &BackendConfig,
        side: Side,
        params: &ConnectParams,
    ) -> Result<(Backend<T>, Greeting), BackendError> {
        let addr = cfg.address();
        let login = async {
            let stream = TcpStream::connect((cfg.host.as_str(), cfg.port))
                .await
                .map_err(|e| BackendError::Connect {
                    side,
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            Self::handshake(PacketIo::new(stream), cfg, side, params).await
        };
        match tokio::time::timeout(params.timeout, login).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Connect {
                side,
                addr,
                reason: format!("timed out after {} ms", params.timeout.as_millis()),
            }),
        }
    }

    /// Log in over a connected transport: read the greeting, upgrade to TLS
    /// per the side's `ssl_mode` (SSLRequest, handshake), answer with the
    /// greeting's auth plugin as `params.credentials` (the URL's account when
    /// `None`), follow auth switches and caching_sha2's full authentication
    /// (see `auth::client`). The connection gets the session's negotiated
    /// capabilities (MariaDB extended ones included), limited to what the
    /// server offers.
    ///
    /// # Errors
    /// [`BackendError::Server`] for an ERR greeting or a refused login,
    /// [`BackendError::Io`] when the connection breaks,
    /// [`BackendError::Protocol`] for a malformed greeting or a server
    /// lacking a wire-format capability the session negotiated,
    /// [`BackendError::Tls`] when TLS is required but not offered or the
    /// certificate is refused, [`BackendError::Auth`] naming a plugin
    /// cutover cannot answer (any but mysql_native_password for a
    /// pass-through login).
    pub async fn handshake(
        mut io: PacketIo,
        cfg: &BackendConfig,
        side: Side,
        params: &ConnectParams,
    ) -> Result<(Backend<T>, Greeting), BackendError> {
        let io_err = |source| BackendError::Io { side, source };
        let frame = io.expect_frame().await.map_err(io_err)?;
        if frame.payload().first() == Some(&0xFF) {
            let err = wire::parse_err(frame.payload());
            return Err(BackendError::Server { side, err });
        }
        let hs = HandshakePacket::deserialize((), &mut ParseBuf(frame.payload()))
            .map_err(|e| proto(side, format!("bad greeting: {e}")))?;
        let greeting = Greeting::from_handshake(&hs);
        if let Some(missing) = capabilities::missing(params, &greeting) {
            return Err(proto(side, format!(
                "the server lacks {missing}, which this session negotiated with its client (the greeting offered what the backends had then)"
            )));
        }
        let caps = backend_capabilities(
            params.capabilities,
            greeting.capabilities,
            params.database.is_some(),
            !params.attributes.is_empty(),
        );
        let seq = frame.seq().wrapping_add(1);
        let mariadb = capabilities::backend_mariadb(caps, params.mariadb, greeting.mariadb);
        let (caps, seq) =
            secure(&mut io, cfg, side, params, (caps, mariadb), &greeting, seq).await?;
        let creds = params
            .credentials
            .clone()
            .unwrap_or_else(|| Credentials::of(cfg));
        let server_key = cfg.tls.public_key.as_deref();
        let mut exchange = Exchange::new(side, &creds, io.is_secure(), server_key);
        let (plugin, auth) = exchange.first(hs.auth_plugin_name_ref(), &hs.nonce());
        let payload = handshake_response(&creds.user, params, (caps, mariadb), &auth, plugin);
        io.send_packet(seq, &payload).await.map_err(io_err)?;
        let status = authenticate(&mut io, &mut exchange).await?;
        let backend = Backend::new(side, io, hs.connection_id(), caps, status & IN_TRANS != 0);
        Ok((backend, greeting))
    }
}

fn proto(side: Side, reason: String) -> BackendError {
    BackendError::Protocol { side, reason }
}

/// TLS per the side's `ssl_mode`: when wanted, the SSLRequest (the first 32
/// bytes of a handshake response, CLIENT_SSL set) and the TLS handshake.
/// Returns the capabilities for the handshake response and its sequence id.
async fn secure(
    io: &mut PacketIo,
    cfg: &BackendConfig,
    side: Side,
    params: &ConnectParams,
    (caps, mariadb): (CapabilityFlags, MariadbCapabilities),
    greeting: &Greeting,
    seq: u8,
) -> Result<(CapabilityFlags, u8), BackendError> {
    let upgrade = crate::tls::client::Upgrade {
        side,
        host: &cfg.host,
        tls: &cfg.tls,
        server_caps: greeting.capabilities,
    };
    if !crate::tls::client::wanted(&upgrade)? {
        return Ok((caps, seq));
    }
    let caps = caps | CapabilityFlags::CLIENT_SSL;
    let request = &handshake_response("", params, (caps, mariadb), &[], Plugin::Native)[..32];
    crate::tls::client::upgrade(io, &upgrade, request, seq).await?;
    Ok((caps, seq.wrapping_add(1)))
}

/// The capabilities cutover asks a backend for: the client's wire-format
/// choices (CLIENT_MYSQL, the lowest bit, included: it says whether MariaDB
/// extended capabilities follow), limited to what the backend offers, plus
/// what the proxy needs.
fn backend_capabilities(
    client: CapabilityFlags,
    server: CapabilityFlags,
    with_db: bool,
    attrs: bool,
) -> CapabilityFlags {
    let wanted = CapabilityFlags::CLIENT_PROTOCOL_41
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
    // CLIENT_LONG_PASSWORD doubles as MariaDB's "CLIENT_MYSQL": set, the
    // server speaks the plain MySQL protocol; clear (the client's choice
    // against a MariaDB greeting), MariaDB extended capabilities follow.
    let mariadb_client = !client.contains(CapabilityFlags::CLIENT_LONG_PASSWORD)
        && !server.contains(CapabilityFlags::CLIENT_LONG_PASSWORD);
    caps.set(CapabilityFlags::CLIENT_LONG_PASSWORD, !mariadb_client);
    if with_db {
        caps.insert(CapabilityFlags::CLIENT_CONNECT_WITH_DB);
    }
    if attrs && server.contains(CapabilityFlags::CLIENT_CONNECT_ATTRS) {
        caps.insert(CapabilityFlags::CLIENT_CONNECT_ATTRS);
    }
    caps
}

/// The HandshakeResponse41 payload (MariaDB's extended capabilities in the
/// last 4 of the 23 filler bytes).
fn handshake_response(
    user: &str,
    params: &ConnectParams,
    (caps, mariadb): (CapabilityFlags, MariadbCapabilities),
    auth: &[u8],
    plugin: Plugin,
) -> Vec<u8> {
    let mut p = Vec::with_capacity(128);
    p.extend_from_slice(&caps.bits().to_le_bytes());
    p.extend_from_slice(&params.max_packet.to_le_bytes());
    p.push(params.collation);
    p.extend_from_slice(&[0u8; 19]);
    p.extend_from_slice(&mariadb.bits().to_le_bytes());
    p.extend_from_slice(user.as_bytes());
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
    p.extend_from_slice(plugin.name());
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
/// Returns the round trip of the whole exchange and the greeting.
///
/// # Errors
/// As [`Backend::connect`]; [`BackendError::Io`] when the ping takes longer
/// than `timeout`; [`BackendError::Server`] when the ping gets an ERR.
pub async fn ping(
    cfg: &BackendConfig,
    side: Side,
    timeout: Duration,
) -> Result<(Duration, Greeting), BackendError> {
    let started = Instant::now();
    let params = ConnectParams {
        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_DEPRECATE_EOF
            | CapabilityFlags::CLIENT_LONG_PASSWORD,
        mariadb: MariadbCapabilities::empty(),
        credentials: None,
        collation: 45,
        database: None,
        max_packet: 16 * 1024 * 1024,
        timeout,
        attributes: Vec::new(),
    };
    let (mut b, greeting) = Backend::<()>::connect(cfg, side, &params).await?;
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
