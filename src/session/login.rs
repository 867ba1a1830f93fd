//! The login phase of a client connection: the handshake under
//! `handshake_timeout_ms`, and the answer to a failed login, delayed by
//! login throttling (`throttle`). Successful logins are never delayed.

use std::time::Duration;

use tracing::{debug, info};

use super::handshake::{self, Accepted, Denial, Login};
use crate::error::SessionError;
use crate::shared::Shared;
use crate::stats::DataPathStats;
use crate::wire::PacketIo;

/// Run the handshake; the login and its scramble once authenticated.
///
/// # Errors
/// [`SessionError::HandshakeTimeout`] when the client has not
/// authenticated within `handshake_timeout_ms` (counted; the caller just
/// closes), [`SessionError::AccessDenied`] once the denial was answered,
/// and the handshake's own errors.
pub(super) async fn log_in(
    shared: &Shared,
    client: &mut PacketIo,
    conn_id: u32,
) -> Result<(Login, [u8; 20]), SessionError> {
    let limit = Duration::from_millis(shared.config.limits.handshake_timeout_ms);
    let accepted =
        match tokio::time::timeout(limit, handshake::accept(client, shared, conn_id)).await {
            Ok(accepted) => accepted?,
            Err(_) => {
                DataPathStats::incr(&shared.stats.handshake_timeouts);
                info!(
                    timeout_ms = limit.as_millis() as u64,
                    "no login within handshake_timeout_ms; closing"
                );
                return Err(SessionError::HandshakeTimeout);
            }
        };
    match accepted {
        Accepted::Login(login, scramble) => {
            if let Some(peer) = client.peer_addr() {
                shared.throttle.succeeded(peer.ip());
            }
            Ok((login, scramble))
        }
        Accepted::Denied(denial) => {
            answer_denied(shared, client, &denial).await?;
            Err(SessionError::AccessDenied(denial.user))
        }
    }
}

/// Answer a failed login (first handshake or COM_CHANGE_USER) with
/// ER_ACCESS_DENIED_ERROR, after the delay login throttling asks for.
///
/// # Errors
/// The client write error.
pub(super) async fn answer_denied(
    shared: &Shared,
    client: &mut PacketIo,
    denial: &Denial,
) -> Result<(), SessionError> {
    DataPathStats::incr(&shared.stats.login_failures);
    let delay = client
        .peer_addr()
        .map(|a| shared.throttle.failed(a.ip()))
        .unwrap_or_default();
    if !delay.is_zero() {
        DataPathStats::incr(&shared.stats.login_delays);
        debug!(
            user = %denial.user,
            delay_ms = delay.as_millis() as u64,
            "failed login answered late (login throttling)"
        );
        tokio::time::sleep(delay).await;
    }
    handshake::deny(client, denial.seq, &denial.user, denial.with_password).await?;
    Ok(())
}
