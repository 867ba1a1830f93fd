//! The client-facing handshake: greeting, mysql_native_password
//! verification (switching clients that default to another plugin),
//! and COM_CHANGE_USER.

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use mysql_common::scramble::scramble_native;
use rand::Rng;

use crate::auth;
use crate::codes::{ER_ACCESS_DENIED_ERROR, ER_NOT_SUPPORTED_AUTH_MODE};
use crate::config::Config;
use crate::error::SessionError;
use crate::tls::server::ServerTls;
use crate::wire::{self, PacketIo};

use super::secure;

const NATIVE: &[u8] = b"mysql_native_password";

/// Capabilities cutover can offer a client (before limiting them to what
/// the backends offer). No SSL, no compression, no MariaDB extensions.
pub fn offered_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_LOCAL_FILES
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_IGNORE_SIGPIPE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_SESSION_TRACK
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// What the server side of the greeting says about itself.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    /// Server version string (the authoritative backend's, once learned).
    pub version: String,
    /// Capabilities offered to clients.
    pub capabilities: CapabilityFlags,
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
/// auth-switch answer), in bytes.
const PRE_AUTH_LIMIT: usize = 64 * 1024;

/// Greet, upgrade to TLS on an SSLRequest (when `tls` is configured),
/// authenticate. Returns the login and the scramble the password was
/// checked against.
///
/// # Errors
/// [`SessionError::AccessDenied`] for a wrong user or password,
/// [`SessionError::InsecureTransport`] for a plaintext login that the TLS
/// policy refuses, [`SessionError::Malformed`] for a client asking for TLS
/// that is not configured, a pre-4.1 client or an unparsable response,
/// [`SessionError::ClientIo`] when the client leaves or its TLS handshake
/// fails. On failure the ERR has been sent already.
pub async fn accept(
    client: &mut PacketIo,
    config: &Config,
    identity: &ServerIdentity,
    conn_id: u32,
    tls: Option<&ServerTls>,
) -> Result<(Login, [u8; 20]), SessionError> {
    let scramble = new_scramble();
    let mut identity = identity.clone();
    if tls.is_some() {
        identity.capabilities |= CapabilityFlags::CLIENT_SSL;
    }
    send_greeting(client, &identity, conn_id, &scramble).await?;
    let (mut resp, mut seq) = read_response(client).await?;
    let mut client_caps = response_caps(&resp);
    if let Some(tls) = tls.filter(|_| secure::is_ssl_request(client_caps, resp.len())) {
        secure::upgrade(client, tls).await?;
        (resp, seq) = read_response(client).await?;
        client_caps = response_caps(&resp);
    }
    refuse_unsupported(client, seq, client_caps, resp.len()).await?;
    let require = tls.is_some_and(|t| t.require);
    secure::enforce(client, seq, config, require, None).await?;
    let hs = HandshakeResponse::deserialize((), &mut ParseBuf(&resp))
        .map_err(|e| SessionError::Malformed(format!("handshake response: {e}")))?;
    let user = String::from_utf8_lossy(hs.user()).into_owned();
    let mut auth_data = hs.scramble_buf().to_vec();
    let mut cleartext = false;
    match hs.auth_plugin() {
        None | Some(AuthPlugin::MysqlNativePassword) => {}
        // Over TLS: full authentication, no switch (auth::server).
        Some(AuthPlugin::CachingSha2Password) if client.is_secure() => {
            (auth_data, seq) = auth::server::full_auth(client, seq).await?;
            cleartext = true;
        }
        // e.g. caching_sha2_password in plaintext: answer the native way.
        Some(_) => (auth_data, seq) = switch_to_native(client, seq, &scramble).await?,
    }
    let capabilities = client_caps & identity.capabilities;
    if !check(config, &user, &scramble, &auth_data, cleartext) {
        deny(client, seq, &user, !auth_data.is_empty()).await?;
        return Err(SessionError::AccessDenied(user));
    }
    secure::enforce(client, seq, config, false, Some(&user)).await?;
    Ok((login(&hs, user, capabilities, seq), scramble))
}

/// Read the handshake response (or SSLRequest) and the next sequence id.
async fn read_response(client: &mut PacketIo) -> Result<(Vec<u8>, u8), SessionError> {
    let Some((resp, seq)) = client.read_packet(PRE_AUTH_LIMIT).await.map_err(read_err)? else {
        return Err(SessionError::ClientIo(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "client left during handshake",
        )));
    };
    Ok((resp, seq.wrapping_add(1)))
}

/// The capability flags at the start of a handshake response.
fn response_caps(resp: &[u8]) -> CapabilityFlags {
    CapabilityFlags::from_bits_truncate(u32::from_le_bytes(
        resp.get(..4)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 4]),
    ))
}

/// A native-password answer to `scramble`, or (`cleartext`) the password
/// itself, received over TLS.
fn check(config: &Config, user: &str, scramble: &[u8; 20], answer: &[u8], cleartext: bool) -> bool {
    match config.user(user.as_bytes()) {
        Some(u) if cleartext => auth::server::verify_cleartext(&u.password, answer),
        _ => verify(config, user, scramble, answer),
    }
}

/// The initial handshake packet (protocol 10) announcing `identity`.
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
    );
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
    let Some((answer, s)) = client.read_packet(PRE_AUTH_LIMIT).await.map_err(read_err)? else {
        return Err(SessionError::Malformed(
            "client left during auth switch".into(),
        ));
    };
    Ok((answer, s.wrapping_add(1)))
}

/// The [`Login`] of an authenticated handshake response.
fn login(
    hs: &HandshakeResponse<'_>,
    user: String,
    capabilities: CapabilityFlags,
    seq: u8,
) -> Login {
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
        collation: hs.collation(),
        attributes,
        seq,
    }
}

fn read_err(e: wire::ReadError) -> SessionError {
    match e {
        wire::ReadError::TooLarge => SessionError::PacketTooLarge,
        wire::ReadError::Io(e) => SessionError::ClientIo(e),
    }
}

/// mysql_native_password: the client proves it knows the password by
/// sending SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
pub fn verify(config: &Config, user: &str, scramble: &[u8; 20], answer: &[u8]) -> bool {
    let Some(u) = config.user(user.as_bytes()) else {
        return false;
    };
    match scramble_native(scramble, u.password.as_bytes()) {
        None => answer.is_empty(),
        Some(expected) => answer.len() == 20 && constant_time_eq(&expected, answer),
    }
}

use auth::constant_time_eq;

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
/// (caching_sha2_password over TLS: full authentication). Returns the next
/// sequence id on success.
///
/// # Errors
/// [`SessionError::AccessDenied`] (the ERR is sent),
/// [`SessionError::InsecureTransport`] for a `require_tls` user on a
/// plaintext connection (the ERR is sent),
/// [`SessionError::Malformed`] when the client leaves mid-switch,
/// [`SessionError::ClientIo`] on a broken client connection.
pub async fn change_user(
    client: &mut PacketIo,
    config: &Config,
    scramble: &mut [u8; 20],
    cu: &ChangeUser,
) -> Result<u8, SessionError> {
    let mut seq = 1u8;
    let mut answer = cu.auth.clone();
    let mut cleartext = false;
    match cu.plugin.as_deref() {
        None | Some(b"") | Some(NATIVE) => {}
        Some(auth::caching_sha2::NAME) if client.is_secure() => {
            (answer, seq) = auth::server::full_auth(client, seq).await?;
            cleartext = true;
        }
        Some(_) => {
            *scramble = new_scramble();
            (answer, seq) = switch_to_native(client, seq, scramble).await?;
        }
    }
    if !check(config, &cu.user, scramble, &answer, cleartext) {
        deny(client, seq, &cu.user, !answer.is_empty()).await?;
        return Err(SessionError::AccessDenied(cu.user.clone()));
    }
    secure::enforce(client, seq, config, false, Some(&cu.user)).await?;
    Ok(seq)
}
