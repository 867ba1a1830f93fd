//! The MySQL errors the proxy itself sends, each with its SQLSTATE.
//!
//! Errors a backend sends are relayed verbatim and never pass through here.
//! Numbers, names and SQLSTATEs are MySQL's own (MySQL Reference Manual,
//! "Server Error Message Reference" for ER_*, "Client Error Message
//! Reference"), so clients and their retry logic recognise them.

#![warn(missing_docs)]

use crate::wire;

/// A MySQL error as a client sees it: the error number and its SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    /// The error number (server range, ER_*: a client reads 2000–2999 as its
    /// own CR_* codes, never from a server).
    pub code: u16,
    /// The five-character SQLSTATE sent after `#`.
    pub sqlstate: &'static str,
}

impl ErrorCode {
    /// The ERR packet payload carrying `message`.
    pub fn payload(self, message: &str) -> Vec<u8> {
        wire::err_payload(self.code, self.sqlstate, message)
    }
}

/// 1040: more clients than `max_connections`.
pub const ER_CON_COUNT_ERROR: ErrorCode = ErrorCode {
    code: 1040,
    sqlstate: "08004",
};
/// 1043 `ER_HANDSHAKE_ERROR` ("Bad handshake"): a handshake packet cutover
/// refuses to read (larger than the pre-authentication bound).
pub const ER_HANDSHAKE_ERROR: ErrorCode = ErrorCode {
    code: 1043,
    sqlstate: "08S01",
};
/// 1045: unknown user or wrong password.
pub const ER_ACCESS_DENIED_ERROR: ErrorCode = ErrorCode {
    code: 1045,
    sqlstate: "28000",
};
/// 1047: a command byte the proxy does not serve.
pub const ER_UNKNOWN_COM_ERROR: ErrorCode = ErrorCode {
    code: 1047,
    sqlstate: "08S01",
};
/// 1094: KILL of a connection id this proxy never gave out.
pub const ER_NO_SUCH_THREAD: ErrorCode = ErrorCode {
    code: 1094,
    sqlstate: "HY000",
};
/// 1153: a client packet larger than `max_allowed_packet`.
pub const ER_NET_PACKET_TOO_LARGE: ErrorCode = ErrorCode {
    code: 1153,
    sqlstate: "08S01",
};
/// 1156 `ER_NET_PACKETS_OUT_OF_ORDER` ("Got packets out of order"): a client
/// packet with another sequence id than the protocol's next one; the
/// connection is closed after it, as MariaDB does.
pub const ER_NET_PACKETS_OUT_OF_ORDER: ErrorCode = ErrorCode {
    code: 1156,
    sqlstate: "08S01",
};
/// 1210: a malformed command (e.g. a COM_STMT_EXECUTE too short to parse).
pub const ER_WRONG_ARGUMENTS: ErrorCode = ErrorCode {
    code: 1210,
    sqlstate: "HY000",
};
/// 1213: the server rolled the whole transaction back to break a deadlock.
/// Never sent by the proxy; recognised in backend answers because it ends
/// the transaction.
pub const ER_LOCK_DEADLOCK: ErrorCode = ErrorCode {
    code: 1213,
    sqlstate: "40001",
};
/// 1235 `ER_NOT_SUPPORTED_YET` ("This version of MariaDB doesn't yet support
/// '%s'"): a KILL cutover cannot translate to backend threads (inside a
/// multi-statement, in a prepared statement, `KILL QUERY ID`).
pub const ER_NOT_SUPPORTED_YET: ErrorCode = ErrorCode {
    code: 1235,
    sqlstate: "42000",
};
/// 1243: a prepared-statement id the session does not hold.
pub const ER_UNKNOWN_STMT_HANDLER: ErrorCode = ErrorCode {
    code: 1243,
    sqlstate: "HY000",
};
/// 1251: the client asked for something the proxy cannot do at login (TLS,
/// a pre-4.1 protocol).
pub const ER_NOT_SUPPORTED_AUTH_MODE: ErrorCode = ErrorCode {
    code: 1251,
    sqlstate: "08004",
};
/// 1290 `ER_OPTION_PREVENTS_STATEMENT` ("The MySQL server is running with
/// the %s option so it cannot execute this statement", what a `read_only`
/// server answers a write): a fleet member that cannot vouch for its lease
/// (docs/FLEET.md, fencing) refuses the statement. The message names the
/// cause; nothing was executed, so the client may retry.
pub const ER_OPTION_PREVENTS_STATEMENT: ErrorCode = ErrorCode {
    code: 1290,
    sqlstate: "HY000",
};
/// 1461: more prepared statements than a session may hold.
pub const ER_MAX_PREPARED_STMT_COUNT_REACHED: ErrorCode = ErrorCode {
    code: 1461,
    sqlstate: "42000",
};
/// 1158 `ER_NET_READ_ERROR` ("Got an error reading communication packets"):
/// cutover lost a backend mid-conversation; the session's state on it is
/// gone, so SQLSTATE 08S01 (communication link failure) tells pools to drop
/// the connection. The message names the backend.
///
/// Errors cutover makes use server-range codes only: a client library reads
/// a code in 2000–2999 (its own CR_* range) inside a server's ERR packet as
/// a protocol violation (libmariadb: `ERROR 2027 Received malformed packet`).
pub const ER_NET_READ_ERROR: ErrorCode = ErrorCode {
    code: 1158,
    sqlstate: "08S01",
};
/// 1429 `ER_CONNECT_TO_FOREIGN_DATA_SOURCE` ("Unable to connect to foreign
/// data source"): cutover cannot reach a backend (or is backing off after
/// failures). The message names the backend.
pub const ER_CONNECT_TO_FOREIGN_DATA_SOURCE: ErrorCode = ErrorCode {
    code: 1429,
    sqlstate: "HY000",
};
/// 3159 `ER_SECURE_TRANSPORT_REQUIRED` ("Connections using insecure
/// transport are prohibited while --require_secure_transport=ON"): a
/// plaintext login while `[tls] require = true`, or for a `[[users]]`
/// entry with `require_tls = true` (MySQL 8.0 Server Error Reference).
pub const ER_SECURE_TRANSPORT_REQUIRED: ErrorCode = ErrorCode {
    code: 3159,
    sqlstate: "HY000",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_keeps_code_and_sqlstate() {
        let e = wire::parse_err(&ER_MAX_PREPARED_STMT_COUNT_REACHED.payload("too many"));
        assert_eq!(
            (e.code, e.state.as_str(), e.message.as_str()),
            (1461, "42000", "too many")
        );
    }
}
