//! cutover authenticating an application that logs in with
//! caching_sha2_password over TLS: full authentication, the way a MySQL 8
//! server does it with a cold cache (`01 04`, then the password over the
//! encrypted connection), so the client needs no switch to
//! mysql_native_password. Plaintext clients are still switched (cutover
//! has no RSA key pair to offer them).

use super::{caching_sha2, constant_time_eq};
use crate::error::SessionError;
use crate::session::handshake::{refuse_read, PRE_AUTH_LIMIT};
use crate::wire::PacketIo;

/// Send `01 04` (sequence `seq`) and read the client's cleartext password.
/// Returns it (NUL stripped) and the next sequence id.
///
/// # Errors
/// [`SessionError::Malformed`] when the connection is not TLS (cutover
/// never asks for a cleartext password in plaintext) or the client leaves;
/// [`SessionError::ClientIo`] / [`SessionError::PacketTooLarge`] /
/// [`SessionError::OutOfOrder`] on read failures (the refusals answered,
/// as every packet before authentication).
pub async fn full_auth(client: &mut PacketIo, seq: u8) -> Result<(Vec<u8>, u8), SessionError> {
    if !client.is_secure() {
        return Err(SessionError::Malformed(
            "cleartext password requested without TLS".into(),
        ));
    }
    client
        .send_packet(seq, &[0x01, caching_sha2::FULL_AUTH])
        .await?;
    let next = seq.wrapping_add(1);
    let packet = match client.read_packet_seq(PRE_AUTH_LIMIT, next).await {
        Ok(p) => p,
        Err(e) => return Err(refuse_read(client, next, e).await),
    };
    let Some((mut password, s)) = packet else {
        return Err(SessionError::Malformed(
            "client left during full authentication".into(),
        ));
    };
    if password.last() == Some(&0) {
        password.pop();
    }
    Ok((password, s.wrapping_add(1)))
}

/// Whether the cleartext `answer` is `expected`.
pub fn verify_cleartext(expected: &str, answer: &[u8]) -> bool {
    constant_time_eq(expected.as_bytes(), answer)
}
