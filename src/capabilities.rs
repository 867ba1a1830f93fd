//! Capability negotiation, done the way a server does it: the greeting
//! offers what the relay can keep faithful on **both** backends, each
//! handshake response is read with the client's flags ∩ the offered ones,
//! and every backend connection of the session is opened with that same set.
//!
//! Sources: MySQL Client/Server Protocol, "Capabilities Flags" and
//! "Protocol::HandshakeResponse41"; MariaDB "Connection" (the lowest
//! capability bit, `CLIENT_MYSQL`, is cleared in a MariaDB greeting, which
//! then carries MariaDB's extended capabilities in the last 4 of its 10
//! reserved bytes; a client that also clears it answers with its own in the
//! last 4 of the response's 23 filler bytes).
//!
//! What is offered, and why the rest is not:
//! - every flag of [`RELAYED`] that both backends offer (the source's
//!   `CLIENT_NO_SCHEMA`, `CLIENT_ODBC`, `CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS`,
//!   `CLIENT_REMEMBER_OPTIONS` included: they change nothing the relay reads);
//! - of MariaDB's extended capabilities only `MARIADB_CLIENT_EXTENDED_METADATA`
//!   (type names such as `json`, `uuid` in column definitions, which the
//!   relay passes through untouched), and only once both backends are known
//!   to offer it. `MARIADB_CLIENT_CACHE_METADATA` changes the framing of
//!   COM_STMT_EXECUTE answers per backend connection, `PROGRESS` puts
//!   progress packets inside a response, `STMT_BULK_OPERATIONS` needs
//!   COM_STMT_BULK_EXECUTE: none of them is relayed faithfully yet;
//! - no `CLIENT_COMPRESS`; `CLIENT_SSL` is cutover's own, added to the greeting
//!   when `[tls]` is configured (`session::handshake`), never a backend's.

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};

use crate::backend::{ConnectParams, Greeting};
use crate::session::handshake::ServerIdentity;

/// The capabilities whose effect the relay keeps faithful: cutover reads
/// (or passes through unchanged) everything they change on the wire.
pub const RELAYED: CapabilityFlags = CapabilityFlags::CLIENT_LONG_PASSWORD
    .union(CapabilityFlags::CLIENT_FOUND_ROWS)
    .union(CapabilityFlags::CLIENT_LONG_FLAG)
    .union(CapabilityFlags::CLIENT_CONNECT_WITH_DB)
    .union(CapabilityFlags::CLIENT_NO_SCHEMA)
    .union(CapabilityFlags::CLIENT_ODBC)
    .union(CapabilityFlags::CLIENT_LOCAL_FILES)
    .union(CapabilityFlags::CLIENT_IGNORE_SPACE)
    .union(CapabilityFlags::CLIENT_PROTOCOL_41)
    .union(CapabilityFlags::CLIENT_INTERACTIVE)
    .union(CapabilityFlags::CLIENT_IGNORE_SIGPIPE)
    .union(CapabilityFlags::CLIENT_TRANSACTIONS)
    .union(CapabilityFlags::CLIENT_RESERVED)
    .union(CapabilityFlags::CLIENT_SECURE_CONNECTION)
    .union(CapabilityFlags::CLIENT_MULTI_STATEMENTS)
    .union(CapabilityFlags::CLIENT_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PS_MULTI_RESULTS)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH)
    .union(CapabilityFlags::CLIENT_CONNECT_ATTRS)
    .union(CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA)
    .union(CapabilityFlags::CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS)
    .union(CapabilityFlags::CLIENT_SESSION_TRACK)
    .union(CapabilityFlags::CLIENT_DEPRECATE_EOF)
    .union(CapabilityFlags::CLIENT_REMEMBER_OPTIONS);

/// The MariaDB extended capabilities the relay keeps faithful.
pub const RELAYED_MARIADB: MariadbCapabilities =
    MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA;

/// Flags that change how responses are framed: a backend connection must
/// have each one the session negotiated, or its answers would not parse
/// the way the client expects.
const WIRE_FORMAT: [(CapabilityFlags, &str); 3] = [
    (CapabilityFlags::CLIENT_PROTOCOL_41, "CLIENT_PROTOCOL_41"),
    (
        CapabilityFlags::CLIENT_DEPRECATE_EOF,
        "CLIENT_DEPRECATE_EOF",
    ),
    (
        CapabilityFlags::CLIENT_SESSION_TRACK,
        "CLIENT_SESSION_TRACK",
    ),
];

/// A server's MariaDB extended capabilities: its reserved bytes count only
/// when its greeting clears `CLIENT_MYSQL`.
pub fn mariadb_of(caps: CapabilityFlags, ext: MariadbCapabilities) -> MariadbCapabilities {
    if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
        MariadbCapabilities::empty()
    } else {
        ext
    }
}

/// What the greeting offers given the backends' greetings known so far
/// (`None`: not learned yet). `CLIENT_MYSQL` is cleared, as MariaDB does,
/// when every known backend clears it; MariaDB extended capabilities are
/// offered only when both backends are known to have them (a session keeps
/// what it negotiated, so offering one only the source has would break the
/// relay after a switch to the destination).
pub fn offer(greetings: [Option<&Greeting>; 2]) -> (CapabilityFlags, MariadbCapabilities) {
    let mut caps = RELAYED;
    let mut mariadb = RELAYED_MARIADB;
    let mut mysql = false;
    for g in greetings {
        match g {
            Some(g) => {
                caps &= g.capabilities | CapabilityFlags::CLIENT_LONG_PASSWORD;
                mariadb &= g.mariadb;
                mysql |= g
                    .capabilities
                    .contains(CapabilityFlags::CLIENT_LONG_PASSWORD);
            }
            None => mariadb = MariadbCapabilities::empty(),
        }
    }
    let known = greetings.iter().any(Option::is_some);
    caps.set(CapabilityFlags::CLIENT_LONG_PASSWORD, mysql || !known);
    if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
        mariadb = MariadbCapabilities::empty();
    }
    (caps, mariadb)
}

/// What a client and cutover agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The client's flags ∩ the offered ones; `CLIENT_MYSQL` as the client
    /// sent it (it selects the MariaDB dialect of the handshake).
    pub capabilities: CapabilityFlags,
    /// MariaDB extended capabilities in effect (empty for a MySQL client).
    pub mariadb: MariadbCapabilities,
}

/// Negotiate with a client whose handshake response announced `client`
/// and `client_mariadb` against the greeting `offered`.
pub fn negotiate(
    client: CapabilityFlags,
    client_mariadb: MariadbCapabilities,
    offered: &ServerIdentity,
) -> Negotiated {
    let mut capabilities = client & offered.capabilities;
    let client_mysql = client.contains(CapabilityFlags::CLIENT_LONG_PASSWORD);
    capabilities.set(CapabilityFlags::CLIENT_LONG_PASSWORD, client_mysql);
    let mariadb = if client_mysql
        || offered
            .capabilities
            .contains(CapabilityFlags::CLIENT_LONG_PASSWORD)
    {
        MariadbCapabilities::empty()
    } else {
        client_mariadb & offered.mariadb
    };
    Negotiated {
        capabilities,
        mariadb,
    }
}

/// The handshake response with its capability flags replaced by the
/// negotiated ones, so it is parsed as the server would parse it: a client
/// claiming CONNECT_ATTRS against a greeting without it still logs in (the
/// attributes are not read). `None` for a response too short to hold flags.
pub fn masked_response(response: &[u8], negotiated: CapabilityFlags) -> Option<Vec<u8>> {
    let mut copy = response.to_vec();
    copy.get_mut(..4)?
        .copy_from_slice(&negotiated.bits().to_le_bytes());
    Some(copy)
}

/// The MariaDB extended capabilities a response announces (filler bytes
/// 19..23 after flags, max packet size and collation).
pub fn response_mariadb(response: &[u8]) -> MariadbCapabilities {
    response
        .get(28..32)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .map(MariadbCapabilities::from_bits_truncate)
        .unwrap_or_else(MariadbCapabilities::empty)
}

/// The extended capabilities to ask a backend for: the session's, when the
/// backend connection runs in the MariaDB dialect (`caps` without
/// `CLIENT_MYSQL`), limited to what the server offers.
pub fn backend_mariadb(
    caps: CapabilityFlags,
    session: MariadbCapabilities,
    server: MariadbCapabilities,
) -> MariadbCapabilities {
    if caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) {
        MariadbCapabilities::empty()
    } else {
        session & server
    }
}

/// The first wire-format capability the session negotiated that the server
/// behind `greeting` does not offer, by name; `None` when it has them all.
pub fn missing(params: &ConnectParams, greeting: &Greeting) -> Option<&'static str> {
    for (flag, name) in WIRE_FORMAT {
        if params.capabilities.contains(flag) && !greeting.capabilities.contains(flag) {
            return Some(name);
        }
    }
    if !(params.mariadb & (RELAYED_MARIADB - greeting.mariadb)).is_empty() {
        return Some("MARIADB_CLIENT_EXTENDED_METADATA");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARIADB_10_11: u32 = 0x81ff_f7fe; // a 10.11 greeting without TLS, measured
    const MYSQL_LIKE: u32 = 0x81ff_f7ff;

    fn greeting(caps: u32, ext: u32) -> Greeting {
        let caps = CapabilityFlags::from_bits_truncate(caps);
        Greeting {
            version: "5.5.5-10.11.19-MariaDB".into(),
            capabilities: caps,
            collation: 8,
            mariadb: mariadb_of(caps, MariadbCapabilities::from_bits_truncate(ext)),
        }
    }

    fn identity(g: [Option<&Greeting>; 2]) -> ServerIdentity {
        let (capabilities, mariadb) = offer(g);
        ServerIdentity {
            version: "v".into(),
            capabilities,
            mariadb,
            collation: 8,
        }
    }

    #[test]
    fn two_mariadb_backends_offer_extended_metadata_and_clear_client_mysql() {
        let (src, dst) = (greeting(MARIADB_10_11, 0x1d), greeting(MARIADB_10_11, 0x1d));
        let (caps, ext) = offer([Some(&src), Some(&dst)]);
        assert!(!caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
        assert_eq!(ext, MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA);
        for bit in [
            CapabilityFlags::CLIENT_NO_SCHEMA,
            CapabilityFlags::CLIENT_ODBC,
            CapabilityFlags::CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS,
            CapabilityFlags::CLIENT_REMEMBER_OPTIONS,
        ] {
            assert!(caps.contains(bit), "{bit:?}");
        }
        assert!(!caps.contains(CapabilityFlags::CLIENT_COMPRESS));
        assert!(!caps.contains(CapabilityFlags::CLIENT_SSL));
    }

    #[test]
    fn extended_capabilities_need_both_backends() {
        let src = greeting(MARIADB_10_11, 0x1d);
        let (caps, ext) = offer([Some(&src), None]);
        assert!(ext.is_empty(), "destination not known yet");
        assert!(!caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
        let old = greeting(MARIADB_10_11, 0x01); // no extended metadata (before 10.5)
        assert!(offer([Some(&src), Some(&old)]).1.is_empty());
        let mysql = greeting(MYSQL_LIKE, 0);
        let (caps, ext) = offer([Some(&src), Some(&mysql)]);
        assert!(caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) && ext.is_empty());
        let (caps, ext) = offer([None, None]);
        assert!(caps.contains(CapabilityFlags::CLIENT_LONG_PASSWORD) && ext.is_empty());
    }

    #[test]
    fn negotiation_takes_the_intersection() {
        let (src, dst) = (greeting(MARIADB_10_11, 0x1d), greeting(MARIADB_10_11, 0x1d));
        let offered = identity([Some(&src), Some(&dst)]);
        let ext_all = MariadbCapabilities::from_bits_truncate(0x3f);
        // A MariaDB client clears CLIENT_MYSQL and asks for everything.
        let client = CapabilityFlags::from_bits_truncate(MARIADB_10_11)
            | CapabilityFlags::CLIENT_SSL
            | CapabilityFlags::CLIENT_COMPRESS;
        let n = negotiate(client, ext_all, &offered);
        assert_eq!(n.mariadb, RELAYED_MARIADB);
        assert!(!n.capabilities.contains(CapabilityFlags::CLIENT_SSL));
        assert!(!n.capabilities.contains(CapabilityFlags::CLIENT_COMPRESS));
        // A MySQL client (CLIENT_MYSQL set) gets no extended capabilities.
        let n = negotiate(
            client | CapabilityFlags::CLIENT_LONG_PASSWORD,
            ext_all,
            &offered,
        );
        assert!(n.mariadb.is_empty());
        assert!(n
            .capabilities
            .contains(CapabilityFlags::CLIENT_LONG_PASSWORD));
    }

    #[test]
    fn masked_response_drops_what_was_not_offered() {
        let resp = [0xFFu8; 40];
        let m = masked_response(&resp, CapabilityFlags::CLIENT_PROTOCOL_41).unwrap();
        assert_eq!(
            &m[..4],
            &CapabilityFlags::CLIENT_PROTOCOL_41.bits().to_le_bytes()
        );
        assert_eq!(&m[4..], &resp[4..]);
        assert_eq!(masked_response(&[1, 2], CapabilityFlags::empty()), None);
        assert_eq!(response_mariadb(&resp).bits(), 0x3f);
        assert!(response_mariadb(&resp[..20]).is_empty());
    }

    #[test]
    fn backend_connection_must_keep_the_wire_format() {
        let g = greeting(MARIADB_10_11, 0x1d);
        let mut params = crate::testing::connect_params();
        params.capabilities =
            CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_DEPRECATE_EOF;
        params.mariadb = RELAYED_MARIADB;
        assert_eq!(missing(&params, &g), None);
        let old = greeting(MARIADB_10_11, 0x01);
        assert_eq!(
            missing(&params, &old),
            Some("MARIADB_CLIENT_EXTENDED_METADATA")
        );
        let no_eof = greeting(
            MARIADB_10_11 & !CapabilityFlags::CLIENT_DEPRECATE_EOF.bits(),
            0x1d,
        );
        assert_eq!(missing(&params, &no_eof), Some("CLIENT_DEPRECATE_EOF"));
    }
}
