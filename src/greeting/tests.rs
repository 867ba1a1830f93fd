//! Greetings of MySQL 8.0 / 8.4 / 5.6 and MariaDB 10.11 / 11.4, written
//! byte by byte from the protocol spec (MySQL Client/Server Protocol,
//! "Protocol::HandshakeV10"; MariaDB "Connection", the extended
//! capabilities in the last 4 filler bytes), then parsed the way the
//! backend login parses them.

use mysql_common::constants::CapabilityFlags as C;
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MyDeserialize;

use super::*;

/// A HandshakeV10 payload: protocol 10, version NUL, thread id, 8 bytes of
/// nonce, filler, capabilities (low), collation, status, capabilities
/// (high), auth data length, 6 reserved + 4 MariaDB-extended bytes, the
/// rest of the nonce (12 + NUL), the plugin name NUL.
fn greeting(version: &str, caps: u32, collation: u8, plugin: &str, mariadb_ext: u32) -> Vec<u8> {
    let mut p = vec![10u8];
    p.extend_from_slice(version.as_bytes());
    p.push(0);
    p.extend_from_slice(&42u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh");
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(collation);
    p.extend_from_slice(&0x0002u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&mariadb_ext.to_le_bytes());
    p.extend_from_slice(b"ijklmnopqrst");
    p.push(0);
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    p
}

fn parse(bytes: &[u8]) -> Greeting {
    let hs = HandshakePacket::deserialize((), &mut ParseBuf(bytes)).expect("a valid greeting");
    assert_eq!(&hs.nonce()[..], b"abcdefghijklmnopqrst");
    Greeting::from_handshake(&hs)
}

/// MySQL 8.0.36: every low flag, high 0xdfff (query attributes, MFA, …),
/// utf8mb4_0900_ai_ci, caching_sha2_password.
fn mysql80() -> Greeting {
    parse(&greeting(
        "8.0.36",
        0xdfff_ffff,
        255,
        "caching_sha2_password",
        0,
    ))
}

/// MySQL 8.4.0 LTS: as 8.0 (mysql_native_password off by default).
fn mysql84() -> Greeting {
    parse(&greeting(
        "8.4.0",
        0xdfff_ffff,
        255,
        "caching_sha2_password",
        0,
    ))
}

/// MySQL 5.6.51: no CLIENT_DEPRECATE_EOF, no CLIENT_SESSION_TRACK (5.7 added them).
fn mysql56() -> Greeting {
    parse(&greeting(
        "5.6.51",
        0x807f_f7ff,
        8,
        "mysql_native_password",
        0,
    ))
}

/// MariaDB 10.11.6 with TLS: bit 0 (CLIENT_MYSQL) clear, extended
/// capabilities 0x1d (progress, bulk, extended metadata, cache metadata).
fn mariadb1011() -> Greeting {
    parse(&greeting(
        "5.5.5-10.11.6-MariaDB",
        0x81bf_fffe,
        45,
        "mysql_native_password",
        0x1d,
    ))
}

/// MariaDB 11.4.2: as 10.11, no version prefix, uca1400 default collation.
fn mariadb114() -> Greeting {
    parse(&greeting(
        "11.4.2-MariaDB",
        0x81bf_fffe,
        225,
        "mysql_native_password",
        0x1d,
    ))
}

fn all() -> Vec<(&'static str, Greeting)> {
    vec![
        ("mysql 8.0", mysql80()),
        ("mysql 8.4", mysql84()),
        ("mysql 5.6", mysql56()),
        ("mariadb 10.11", mariadb1011()),
        ("mariadb 11.4", mariadb114()),
    ]
}

#[test]
fn greetings_parse_from_the_spec_layout() {
    let g = mysql80();
    assert_eq!((g.version.as_str(), g.collation), ("8.0.36", 255));
    assert!(g
        .capabilities
        .contains(C::CLIENT_DEPRECATE_EOF | C::CLIENT_QUERY_ATTRIBUTES));
    let m = mariadb1011();
    assert!(
        !m.capabilities.contains(C::CLIENT_LONG_PASSWORD),
        "MariaDB clears bit 0"
    );
    assert!(!mysql56().capabilities.contains(C::CLIENT_DEPRECATE_EOF));
}

#[test]
fn every_pair_offers_only_what_both_backends_offer() {
    for (a_name, a) in all() {
        for (b_name, b) in all() {
            let id = for_clients(&a, Some(&b));
            let both = a.capabilities & b.capabilities;
            let extra = id.capabilities - both - C::CLIENT_LONG_PASSWORD;
            assert!(
                extra.is_empty(),
                "{a_name} → {b_name}: offers {extra:?} one backend lacks"
            );
            assert!(id
                .capabilities
                .contains(C::CLIENT_PROTOCOL_41 | C::CLIENT_PLUGIN_AUTH));
            assert!(
                !id.capabilities.contains(C::CLIENT_SSL),
                "TLS is cutover's own"
            );
            assert!(!id
                .capabilities
                .contains(C::CLIENT_COMPRESS | C::CLIENT_QUERY_ATTRIBUTES));
            assert_eq!(
                id.version, a.version,
                "{a_name} → {b_name}: the authoritative side's version"
            );
        }
    }
}

#[test]
fn mariadb_to_mysql8_keeps_the_modern_framing_and_a_common_collation() {
    for (src, dst) in [(mariadb1011(), mysql84()), (mysql80(), mariadb114())] {
        let id = for_clients(&src, Some(&dst));
        assert!(id
            .capabilities
            .contains(C::CLIENT_DEPRECATE_EOF | C::CLIENT_SESSION_TRACK));
        assert_eq!(
            id.collation, COMMON_COLLATION,
            "255 is unknown to MariaDB, 225 to MySQL"
        );
    }
    let same = for_clients(&mysql80(), Some(&mysql84()));
    assert_eq!(same.collation, 255, "equal collations are kept");
}

#[test]
fn an_old_side_takes_deprecate_eof_away_from_both() {
    let id = for_clients(&mysql56(), Some(&mariadb1011()));
    assert!(!id
        .capabilities
        .contains(C::CLIENT_DEPRECATE_EOF | C::CLIENT_SESSION_TRACK));
    let id = for_clients(&mariadb1011(), Some(&mysql56()));
    assert!(!id.capabilities.contains(C::CLIENT_DEPRECATE_EOF));
    let alone = for_clients(&mariadb1011(), None);
    assert!(
        alone.capabilities.contains(C::CLIENT_DEPRECATE_EOF),
        "until the other side is known"
    );
}
