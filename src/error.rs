//! Errors of the data path, each mapped to the MySQL error a client sees.

#![warn(missing_docs)]

use crate::codes::{ER_CONNECT_TO_FOREIGN_DATA_SOURCE, ER_NET_READ_ERROR};
use crate::pattern::Side;
use crate::wire::{self, ErrInfo};

/// A failure talking to one backend; every variant names the side.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // fields: the side, and what the message says
pub enum BackendError {
    /// TCP connect failed or timed out (`addr` is `host:port`).
    #[error("cannot connect to {side} backend {addr}: {reason}")]
    Connect {
        side: Side,
        addr: String,
        reason: String,
    },
    /// The backend answered with an ERR packet (login or command); relayed
    /// to the client verbatim.
    #[error("{side} backend refused: {} ({})", .err.message, .err.code)]
    Server { side: Side, err: ErrInfo },
    /// The connection broke mid-conversation.
    #[error("lost connection to {side} backend: {source}")]
    Io { side: Side, source: std::io::Error },
    /// The backend sent something we could not understand.
    #[error("protocol error from {side} backend: {reason}")]
    Protocol { side: Side, reason: String },
    /// TLS to the backend failed or was refused (`reason` names the
    /// ssl_mode and, for a verification failure, the trusted CA).
    #[error("TLS to {side} backend failed: {reason}")]
    Tls { side: Side, reason: String },
    /// The backend asks for an authentication plugin cutover cannot
    /// answer, or answers it in a way cutover cannot follow.
    #[error("cannot log in to {side} backend as `{user}` with auth plugin {plugin}: {reason}")]
    Auth {
        side: Side,
        user: String,
        plugin: String,
        reason: String,
    },
    /// Back-off after recent failures: not even tried.
    #[error("{side} backend is backing off after failures ({reason})")]
    BackingOff { side: Side, reason: String },
}

impl BackendError {
    /// Which backend failed.
    pub fn side(&self) -> Side {
        match self {
            BackendError::Connect { side, .. }
            | BackendError::Server { side, .. }
            | BackendError::Io { side, .. }
            | BackendError::Protocol { side, .. }
            | BackendError::Tls { side, .. }
            | BackendError::Auth { side, .. }
            | BackendError::BackingOff { side, .. } => *side,
        }
    }

    /// Whether the backend connection is unusable afterwards.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, BackendError::Server { .. })
    }

    /// The ERR packet payload to send to the client for this failure.
    /// Server errors keep their code, SQLSTATE and message verbatim.
    pub fn to_err_payload(&self) -> Vec<u8> {
        match self {
            BackendError::Server { err, .. } => {
                wire::err_payload(err.code, &err.state, &err.message)
            }
            BackendError::Connect { .. }
            | BackendError::BackingOff { .. }
            | BackendError::Tls { .. }
            | BackendError::Auth { .. } => {
                ER_CONNECT_TO_FOREIGN_DATA_SOURCE.payload(&format!("cutover: {self}"))
            }
            BackendError::Io { .. } | BackendError::Protocol { .. } => {
                ER_NET_READ_ERROR.payload(&format!("cutover: {self}"))
            }
        }
    }
}

/// Why relaying a response stopped: the backend side or the client side failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The backend failed (the client may have part of the response).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Reading from or writing to the client failed.
    #[error("client i/o: {0}")]
    Client(std::io::Error),
    /// The client sent LOCAL INFILE data with a wrong sequence id.
    #[error("client sent packets out of order")]
    ClientOutOfOrder,
    /// The client disconnected while the backend was still working; the
    /// rest of the response is still to be read ([`crate::backend::Backend::finish`]).
    #[error("client disconnected during the statement")]
    ClientGone(crate::backend::Unfinished),
}

/// Why a client session ended abnormally (logged; the client may already be gone).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading from or writing to the client failed (it left).
    #[error("client i/o: {0}")]
    ClientIo(#[from] std::io::Error),
    /// The client sent something that is not the MySQL protocol (what).
    #[error("malformed packet from client: {0}")]
    Malformed(String),
    /// A client packet over `max_allowed_packet` (ER_NET_PACKET_TOO_LARGE sent).
    #[error("client packet larger than max_allowed_packet")]
    PacketTooLarge,
    /// A client packet with a wrong sequence id (ER_NET_PACKETS_OUT_OF_ORDER sent).
    #[error("client sent packets out of order")]
    OutOfOrder,
    /// The client did not authenticate within `handshake_timeout_ms`.
    #[error("no login within handshake_timeout_ms")]
    HandshakeTimeout,
    /// Wrong user or password (the user name; ER_ACCESS_DENIED_ERROR sent).
    #[error("authentication failed for user '{0}'")]
    AccessDenied(String),
    /// A plaintext login refused by the TLS policy (the user, if known;
    /// ER_SECURE_TRANSPORT_REQUIRED sent).
    #[error("plaintext login refused: TLS is required (user '{0}')")]
    InsecureTransport(String),
    /// The authoritative backend failed in a way that ends the session.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl From<RelayError> for SessionError {
    fn from(e: RelayError) -> Self {
        match e {
            RelayError::Backend(e) => SessionError::Backend(e),
            RelayError::Client(e) => SessionError::ClientIo(e),
            RelayError::ClientOutOfOrder => SessionError::OutOfOrder,
            RelayError::ClientGone(_) => SessionError::ClientIo(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "client disconnected during the statement",
            )),
        }
    }
}
