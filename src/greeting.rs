//! What cutover's own greeting tells applications when the two backends
//! differ (MariaDB → MySQL 8, MySQL 5.7 → 8.0, …).
//!
//! Relayed packets are in the wire format the client negotiated with
//! cutover, and after a switch they come from the other backend; so the
//! capabilities offered are those the relay keeps faithful that **both**
//! backends offer, once both greetings are known
//! ([`capabilities::offer`], which also decides CLIENT_MYSQL and MariaDB's
//! extended capabilities). The
//! version string is the authoritative backend's (what the client talks
//! to), the default collation the backends' common one, or
//! utf8mb4_general_ci (45, known to every MySQL ≥ 5.5 and MariaDB) when
//! they differ. CLIENT_SSL is cutover's own ([tls]), never a backend's.

#![warn(missing_docs)]

use mysql_common::packets::HandshakePacket;

use crate::backend::Greeting;
use crate::capabilities;
use crate::session::handshake::ServerIdentity;

/// utf8mb4_general_ci: the collation id every server knows.
pub const COMMON_COLLATION: u8 = 45;

impl Greeting {
    /// The parts of a server's initial handshake packet cutover uses.
    pub fn from_handshake(hs: &HandshakePacket<'_>) -> Greeting {
        Greeting {
            version: hs.server_version_str().into_owned(),
            capabilities: hs.capabilities(),
            collation: hs.default_collation(),
            mariadb: capabilities::mariadb_of(hs.capabilities(), hs.mariadb_ext_capabilities()),
        }
    }
}

/// The identity for client greetings from the authoritative backend's
/// greeting and, when known, the other backend's.
pub fn for_clients(authoritative: &Greeting, other: Option<&Greeting>) -> ServerIdentity {
    let (capabilities, mariadb) = capabilities::offer([Some(authoritative), other]);
    let collation = match other {
        Some(o) if o.collation != authoritative.collation => COMMON_COLLATION,
        _ => authoritative.collation,
    };
    ServerIdentity {
        version: authoritative.version.clone(),
        capabilities,
        mariadb,
        collation,
    }
}

#[cfg(test)]
mod tests;
