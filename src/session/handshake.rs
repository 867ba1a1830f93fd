//! The client-facing handshake: greeting, TLS upgrade on an SSLRequest,
//! capability negotiation, login checks (mysql_native_password,
//! caching_sha2_password full authentication over TLS, switching clients
//! that default to another plugin), and COM_CHANGE_USER. What a login maps to on the backends is
//! decided in `auth`; answering a denied login (after any throttling delay)
//! is the caller's, in `login`.

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use rand::Rng;

use super::auth::{self, Accounts, Proof};
use super::secure;
use crate::capabilities::{self, Negotiated};
use crate::codes::{
    ER_ACCESS_DENIED_ERROR, ER_HANDSHAKE_ERROR, ER_NET_PACKETS_OUT_OF_ORDER,
    ER_NOT_SUPPORTED_AUTH_MODE,
};
use crate::error::SessionError;
use crate::shared::Shared;
use crate::wire::{self, PacketIo};

const NATIVE: &[u8] = b"mysql_native_password";

/// Capabilities cutover can offer a client before limiting them to what
/// the backends offer ([`capabilities::RELAYED`]).
pub fn offered_capabilities() -> CapabilityFlags {
    capabilities::RELAYED
}

/// What the server side of the greeting says about itself.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// Server version string: the authoritative backend's, verbatim (e.g.
    /// `5.5.5-10.11.19-MariaDB-0+deb12u1`), once learned.
    pub version: String,
    /// Capabilities offered to clients.
    pub capabilities: CapabilityFlags,
    /// MariaDB extended capabilities offered (sent only when
    /// `capabilities` lacks CLIENT_MYSQL, as MariaDB does).
    pub mariadb: MariadbCapabilities,
    /// Default collation id.
    pub collation: u8,
}

/// A client that passed authentication.
#[derive(Debug, Clone)]
pub struct Login {
    /// The user name the client logged in as.
    pub user: String,
    /// Default database from the handshake, if any.
    pub database: Option<String>,
    /// Capabilities in effect (the client's, limited to what was offered).
    pub capabilities: CapabilityFlags,
    /// MariaDB extended capabilities in effect.
    pub mariadb: MariadbCapabilities,
    /// The account each backend connection logs in as.
    pub accounts: Accounts,
    /// The client's collation id.
    pub collation: u8,
    /// Connection attributes the client sent, sorted by name.
    pub attributes: Vec<(String, String)>,
    /// Next sequence id to answer with.
    pub seq: u8,
}

fn new_scramble() -> [u8; 20] {
    let mut rng = rand::thread_rng();
    let mut s = [0u8; 20];
    for b in &mut s {
        // printable, never NUL: some clients treat the scramble as a C string
        *b = rng.gen_range(0x21..0x7F);
    }
    s
}

/// Largest packet accepted before authentication (handshake response,
/// auth-switch answer), in bytes. A real response is under 1 KB plus the
/// connection attributes; a bigger one is refused from its header alone,
/// before any of it is buffered.
pub const PRE_AUTH_LIMIT: usize = 16 * 1024;

/// A login attempt with a wrong user or password, not answered yet: the
/// caller sends the ERR (with [`deny`]) after any throttling delay.
#[derive(Debug)]
pub struct Denial {
    /// The user name the client tried.
    pub user: String,
    /// The sequence id the ERR must carry.
    pub seq: u8,
    /// Whether the client sent a password.
    pub with_password: bool,
}

/// How a login attempt ended.
#[derive(Debug)]
pub enum Accepted {
    /// Authenticated: the login and the scramble its password was checked against.
    Login(Login, [u8; 20]),
    /// Wrong user or password.
    Denied(Denial),
}

/// Greet, upgrade to TLS on an SSLRequest (when `[tls]` is configured),
/// negotiate capabilities, check the login.
///
/// # Errors
/// [`SessionError::Malformed`] for a client asking for TLS that is not
/// configured, a pre-4.1 client or an unparsable response (an ERR is sent),
/// [`SessionError::InsecureTransport`] for a plaintext login that the TLS
/// policy refuses (ER_SECURE_TRANSPORT_REQUIRED sent),
/// [`SessionError::PacketTooLarge`] for a packet over [`PRE_AUTH_LIMIT`]
/// (ER_HANDSHAKE_ERROR sent), [`SessionError::OutOfOrder`] for a wrong
/// sequence id (ER_NET_PACKETS_OUT_OF_ORDER sent),
/// [`SessionError::ClientIo`] when the client leaves.
pub async fn accept(
    client: &mut PacketIo,
    shared: &Shared,
    conn_id: u32,
) -> Result<Accepted, SessionError> {
    let scramble = new_scramble();
    let (identity, resp, seq) = greet(client, shared, conn_id, &scramble).await?;
    let client_caps = response_caps(&resp);
    refuse_unsupported(client, seq, client_caps, resp.len()).await?;
    let negotiated = capabilities::negotiate(
        client_caps,
        capabilities::response_mariadb(&resp),
        &identity,
    );
    let masked = capabilities::masked_response(&resp, negotiated.capabilities)
        .ok_or_else(|| SessionError::Malformed("handshake response too short".into()))?;
    let hs = HandshakeResponse::deserialize((), &mut ParseBuf(&masked))
        .map_err(|e| SessionError::Malformed(format!("handshake response: {e}")))?;
    let user = String::from_utf8_lossy(hs.user()).into_owned();
    let plugin = hs.auth_plugin().map(|p| p.as_bytes().to_vec());
    let mut scramble = scramble;
    let (answer, seq, cleartext) = client_answer(
        client,
        plugin.as_deref(),
        hs.scramble_buf().to_vec(),
        seq,
        &mut scramble,
    )
    .await?;
    let proof = proof(&answer, cleartext);
    let authoritative = shared.pattern.load().primary();
    match auth::verify(shared, &user, &scramble, proof, authoritative).await {
        Some(accounts) => {
            secure::enforce(client, seq, &shared.config, false, Some(&user)).await?;
            Ok(Accepted::Login(
                login(&hs, user, negotiated, accounts, seq),
                scramble,
            ))
        }
        None => Ok(Accepted::Denied(Denial {
            user,
            seq,
            with_password: !answer.is_empty(),
        })),
    }
}

/// Send the greeting (CLIENT_SSL added when `[tls]` is configured), read
/// the handshake response, upgrading to TLS first on an SSLRequest, and
/// refuse a plaintext one when `[tls] require` is set. Returns the identity
/// announced, the response and the sequence id to answer with.
async fn greet(
    client: &mut PacketIo,
    shared: &Shared,
    conn_id: u32,
    scramble: &[u8; 20],
) -> Result<(ServerIdentity, Vec<u8>, u8), SessionError> {
    let tls = shared.tls.as_deref();
    let mut identity = ServerIdentity::clone(&shared.identity());
    if tls.is_some() {
        identity.capabilities |= CapabilityFlags::CLIENT_SSL;
    }
    send_greeting(client, &identity, conn_id, scramble).await?;
    let (mut resp, mut seq) = read_pre_auth(client, 1).await?;
    if let Some(tls) = tls.filter(|_| secure::is_ssl_request(response_caps(&resp), resp.len())) {
        secure::upgrade(client, tls).await?;
        (resp, seq) = read_pre_auth(client, seq.wrapping_add(1)).await?;
    }
    let seq = seq.wrapping_add(1);
    let require = tls.is_some_and(|t| t.require);
    secure::enforce(client, seq, &shared.config, require, None).await?;
    Ok((identity, resp, seq))
}

/// The capability flags at the start of a handshake response.
fn response_caps(resp: &[u8]) -> CapabilityFlags {
    CapabilityFlags::from_bits_truncate(u32::from_le_bytes(
        resp.get(..4)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 4]),
    ))
}

/// The client's proof of its password, for the plugin it logged in with
/// (`answer`: its first answer, to `scramble`). mysql_native_password: the
/// answer itself; caching_sha2_password over TLS: full authentication, the
/// password itself (`auth::server`, no switch); anything else (e.g.
/// caching_sha2_password in plaintext): switched to mysql_native_password
/// with a fresh `scramble`. Returns the answer, the next sequence id and
/// whether the answer is the cleartext password.
async fn client_answer(
    client: &mut PacketIo,
    plugin: Option<&[u8]>,
    answer: Vec<u8>,
    seq: u8,
    scramble: &mut [u8; 20],
) -> Result<(Vec<u8>, u8, bool), SessionError> {
    match plugin {
        None | Some(b"") | Some(NATIVE) => Ok((answer, seq, false)),
        Some(crate::auth::caching_sha2::NAME) if client.is_secure() => {
            let (password, seq) = crate::auth::server::full_auth(client, seq).await?;
            Ok((password, seq, true))
        }
        Some(_) => {
            *scramble = new_scramble();
            let (answer, seq) = switch_to_native(client, seq, scramble).await?;
            Ok((answer, seq, false))
        }
    }
}

fn proof(answer: &[u8], cleartext: bool) -> Proof<'_> {
    if cleartext {
        Proof::Cleartext(answer)
    } else {
        Proof::Native(answer)
    }
}

/// Read a packet before authentication: at most [`PRE_AUTH_LIMIT`] bytes,
/// first sequence id `seq`. Refusals are answered (ER_HANDSHAKE_ERROR,
/// ER_NET_PACKETS_OUT_OF_ORDER) before the error is returned.
async fn read_pre_auth(client: &mut PacketIo, seq: u8) -> Result<(Vec<u8>, u8), SessionError> {
    match client.read_packet_seq(PRE_AUTH_LIMIT, seq).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(SessionError::ClientIo(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "client left during handshake",
        ))),
        Err(e) => Err(refuse_read(client, seq, e).await),
    }
}

/// Answer a refused client packet the way MariaDB does (ERR, then the
/// caller closes): a packet over the limit before authentication gets
/// ER_HANDSHAKE_ERROR, one with a wrong sequence id
/// ER_NET_PACKETS_OUT_OF_ORDER. Returns the error ending the session.
pub(crate) async fn refuse_read(
    client: &mut PacketIo,
    seq: u8,
    e: wire::ReadError,
) -> SessionError {
    match e {
        wire::ReadError::TooLarge => {
            let msg = format!(
                "Bad handshake: a packet larger than {PRE_AUTH_LIMIT} bytes before authentication"
            );
            let _ = client
                .send_packet(seq.wrapping_add(1), &ER_HANDSHAKE_ERROR.payload(&msg))
                .await;
            SessionError::PacketTooLarge
        }
        wire::ReadError::OutOfOrder { got, .. } => {
            let p = ER_NET_PACKETS_OUT_OF_ORDER.payload("Got packets out of order");
            let _ = client.send_packet(got.wrapping_add(1), &p).await;
            SessionError::OutOfOrder
        }
        wire::ReadError::Io(e) => SessionError::ClientIo(e),
    }
}

/// The initial handshake packet (protocol 10) announcing `identity`
/// (MariaDB's extended capabilities in the last 4 reserved bytes).
async fn send_greeting(
    client: &mut PacketIo,
    identity: &ServerIdentity,
    conn_id: u32,
    scramble: &[u8; 20],
) -> Result<(), SessionError> {
    let mut tail = scramble[8..].to_vec();
    tail.push(0);
    let greeting = HandshakePacket::new(
        10,
        identity.version.as_bytes(),
        conn_id,
        scramble[..8].try_into().expect("8 bytes"),
        Some(tail),
        identity.capabilities,
        identity.collation,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(NATIVE),
    )
    .with_mariadb_ext_capabilities(identity.mariadb);
    let mut payload = Vec::with_capacity(128);
    greeting.serialize(&mut payload);
    client.send_packet(0, &payload).await?;
    Ok(())
}

/// Refuse what cutover cannot serve with ER_NOT_SUPPORTED_AUTH_MODE: an
/// SSLRequest (a short response with CLIENT_SSL) and pre-4.1 clients.
async fn refuse_unsupported(
    client: &mut PacketIo,
    seq: u8,
    caps: CapabilityFlags,
    response_len: usize,
) -> Result<(), SessionError> {
    let (msg, why) = if caps.contains(CapabilityFlags::CLIENT_SSL) && response_len <= 32 {
        let msg = "cutover does not offer TLS on its MySQL port; connect without SSL (e.g. ssl-mode=DISABLED/PREFERRED)";
        (msg, "client requested TLS")
    } else if !caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        let msg = "cutover needs a client speaking protocol 4.1 or newer";
        (msg, "pre-4.1 client")
    } else {
        return Ok(());
    };
    client
        .send_packet(seq, &ER_NOT_SUPPORTED_AUTH_MODE.payload(msg))
        .await?;
    Err(SessionError::Malformed(why.into()))
}

/// Ask the client to answer `scramble` with mysql_native_password (an
/// AuthSwitchRequest); returns its answer and the next sequence id.
async fn switch_to_native(
    client: &mut PacketIo,
    seq: u8,
    scramble: &[u8; 20],
) -> Result<(Vec<u8>, u8), SessionError> {
    let mut switch = Vec::with_capacity(48);
    switch.push(0xFE);
    switch.extend_from_slice(NATIVE);
    switch.push(0);
    switch.extend_from_slice(scramble);
    switch.push(0);
    client.send_packet(seq, &switch).await?;
    let (answer, s) = read_pre_auth(client, seq.wrapping_add(1)).await?;
    Ok((answer, s.wrapping_add(1)))
}

/// The [`Login`] of an authenticated handshake response.
fn login(
    hs: &HandshakeResponse<'_>,
    user: String,
    negotiated: Negotiated,
    accounts: Accounts,
    seq: u8,
) -> Login {
    let capabilities = negotiated.capabilities;
    let database = hs
        .db_name()
        .filter(|d| !d.is_empty() && capabilities.contains(CapabilityFlags::CLIENT_CONNECT_WITH_DB))
        .map(|d| String::from_utf8_lossy(d).into_owned());
    let mut attributes: Vec<(String, String)> = hs
        .connect_attributes()
        .unwrap_or_default()
        .into_iter()
        .collect();
    attributes.sort();
    Login {
        user,
        database,
        capabilities,
        mariadb: negotiated.mariadb,
        accounts,
        collation: hs.collation(),
        attributes,
        seq,
    }
}

/// Send ER_ACCESS_DENIED_ERROR worded like the server's
/// (`Access denied for user 'u'@'host' (using password: YES)`).
///
/// # Errors
/// The client write error.
pub async fn deny(
    client: &mut PacketIo,
    seq: u8,
    user: &str,
    with_password: bool,
) -> std::io::Result<()> {
    let host = client
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let msg = format!(
        "Access denied for user '{user}'@'{host}' (using password: {})",
        if with_password { "YES" } else { "NO" }
    );
    client
        .send_packet(seq, &ER_ACCESS_DENIED_ERROR.payload(&msg))
        .await?;
    Ok(())
}

/// A parsed COM_CHANGE_USER.
#[derive(Debug)]
pub struct ChangeUser {
    /// The new user name.
    pub user: String,
    /// Auth response (a mysql_native_password scramble answer: 20 bytes).
    pub auth: Vec<u8>,
    /// The new default database, if any.
    pub database: Option<String>,
    /// The new collation id, if sent.
    pub collation: Option<u8>,
    /// The auth plugin the client used, if sent.
    pub plugin: Option<Vec<u8>>,
}

/// Parse the body of a COM_CHANGE_USER (after the command byte); `None` if
/// it is truncated.
pub fn parse_change_user(body: &[u8], caps: CapabilityFlags) -> Option<ChangeUser> {
    let mut b = body;
    let take_cstr = |b: &mut &[u8]| -> Option<Vec<u8>> {
        let n = b.iter().position(|&c| c == 0)?;
        let s = b[..n].to_vec();
        *b = &b[n + 1..];
        Some(s)
    };
    let user = take_cstr(&mut b)?;
    let auth = if caps.contains(CapabilityFlags::CLIENT_SECURE_CONNECTION) {
        let n = *b.first()? as usize;
        let a = b.get(1..1 + n)?.to_vec();
        b = &b[1 + n..];
        a
    } else {
        take_cstr(&mut b)?
    };
    let db = take_cstr(&mut b).unwrap_or_default();
    let mut collation = None;
    let mut plugin = None;
    if b.len() >= 2 {
        collation = Some(b[0]);
        b = &b[2..];
        if caps.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
            plugin = take_cstr(&mut b).or_else(|| Some(b.to_vec()));
        }
    }
    Some(ChangeUser {
        user: String::from_utf8_lossy(&user).into_owned(),
        auth,
        database: (!db.is_empty()).then(|| String::from_utf8_lossy(&db).into_owned()),
        collation,
        plugin,
    })
}

/// Authenticate a COM_CHANGE_USER; switches plugins like the first login
/// (caching_sha2_password over TLS: full authentication).
/// Returns the next sequence id and the new user's backend accounts, or the
/// denial (not answered yet, as for [`accept`]).
///
/// # Errors
/// As the reads of [`accept`]: [`SessionError::ClientIo`],
/// [`SessionError::PacketTooLarge`], [`SessionError::OutOfOrder`];
/// [`SessionError::InsecureTransport`] for a `require_tls` user on a
/// plaintext connection (the ERR is sent).
pub async fn change_user(
    client: &mut PacketIo,
    shared: &Shared,
    scramble: &mut [u8; 20],
    cu: &ChangeUser,
) -> Result<Result<(u8, Accounts), Denial>, SessionError> {
    let plugin = cu.plugin.as_deref();
    let (answer, seq, cleartext) =
        client_answer(client, plugin, cu.auth.clone(), 1, scramble).await?;
    let authoritative = shared.pattern.load().primary();
    let proof = proof(&answer, cleartext);
    match auth::verify(shared, &cu.user, scramble, proof, authoritative).await {
        Some(accounts) => {
            secure::enforce(client, seq, &shared.config, false, Some(&cu.user)).await?;
            Ok(Ok((seq, accounts)))
        }
        None => Ok(Err(Denial {
            user: cu.user.clone(),
            seq,
            with_password: !answer.is_empty(),
        })),
    }
}
