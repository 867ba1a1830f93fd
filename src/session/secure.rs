//! TLS for applications: the SSLRequest upgrade of a client connection and
//! the secure-transport policy (`[tls] require`, `[[users]] require_tls`).

use mysql_common::constants::CapabilityFlags;

use crate::codes::ER_SECURE_TRANSPORT_REQUIRED;
use crate::config::Config;
use crate::error::SessionError;
use crate::tls::server::ServerTls;
use crate::wire::PacketIo;

/// Whether a handshake response is an SSLRequest: CLIENT_SSL and only the
/// 32-byte fixed part (MySQL Client/Server Protocol, "Protocol::SSLRequest").
pub fn is_ssl_request(caps: CapabilityFlags, len: usize) -> bool {
    caps.contains(CapabilityFlags::CLIENT_SSL) && len == 32
}

/// Run the TLS handshake on a client that sent an SSLRequest.
///
/// # Errors
/// [`SessionError::ClientIo`] when the handshake fails (bad client, no
/// common cipher suite, plaintext bytes sent after the SSLRequest).
pub async fn upgrade(client: &mut PacketIo, tls: &ServerTls) -> Result<(), SessionError> {
    let acceptor = tls.acceptor();
    client
        .upgrade(|stream| acceptor.accept(stream))
        .await
        .map_err(|e| {
            SessionError::ClientIo(std::io::Error::new(
                e.kind(),
                format!("TLS handshake with client failed: {e}"),
            ))
        })
}

/// Refuse a plaintext login with ER_SECURE_TRANSPORT_REQUIRED when `[tls]
/// require` is set (`user` = `None`, before authentication) or the user's
/// `require_tls` is. `Ok` when the connection may continue.
///
/// # Errors
/// [`SessionError::InsecureTransport`] after sending the ERR.
pub async fn enforce(
    client: &mut PacketIo,
    seq: u8,
    config: &Config,
    require: bool,
    user: Option<&str>,
) -> Result<(), SessionError> {
    if client.is_secure() {
        return Ok(());
    }
    let per_user = user
        .and_then(|u| config.user(u.as_bytes()))
        .is_some_and(|u| u.require_tls);
    if !require && !per_user {
        return Ok(());
    }
    let msg = match user {
        Some(u) if per_user => format!(
            "Connections for user '{u}' must use TLS (require_tls in cutover's [[users]]); \
             connect with SSL enabled"
        ),
        _ => "Connections using insecure transport are prohibited while cutover's [tls] \
              require = true; connect with SSL enabled"
            .to_string(),
    };
    client
        .send_packet(seq, &ER_SECURE_TRANSPORT_REQUIRED.payload(&msg))
        .await?;
    Err(SessionError::InsecureTransport(
        user.unwrap_or_default().to_string(),
    ))
}
