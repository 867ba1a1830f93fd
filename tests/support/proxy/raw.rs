//! A hand-rolled MySQL client for what client libraries never send:
//! unknown commands, malformed packets, classic EOF framing, LOCAL INFILE.

use cutover::wire::PacketIo;
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MyDeserialize;
use mysql_common::scramble::{scramble_native, scramble_sha256};
use tokio::net::TcpStream;

pub fn default_caps() -> CapabilityFlags {
    CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
        | CapabilityFlags::CLIENT_LONG_PASSWORD
}

/// Log in announcing `plugin` with `caps` (database `shop`); returns the
/// connection, the server's reply payload and the greeting's connection id.
pub async fn login(
    port: u16,
    caps: CapabilityFlags,
    plugin: &str,
    password: &str,
) -> (PacketIo, Vec<u8>) {
    let mut io = PacketIo::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    let greeting = io.expect_frame().await.unwrap();
    let hs = HandshakePacket::deserialize((), &mut ParseBuf(greeting.payload())).unwrap();
    let nonce = hs.nonce();
    let auth: Vec<u8> = if plugin == "caching_sha2_password" {
        scramble_sha256(&nonce, password.as_bytes())
            .unwrap()
            .to_vec()
    } else {
        scramble_native(&nonce, password.as_bytes())
            .unwrap()
            .to_vec()
    };
    let caps = caps | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
    let mut p = caps.bits().to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(b"app\0");
    p.push(auth.len() as u8);
    p.extend_from_slice(&auth);
    p.extend_from_slice(b"shop\0");
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    io.send_packet(1, &p).await.unwrap();
    let reply = io.expect_frame().await.unwrap();
    (io, reply.payload().to_vec())
}

/// Send a command, return the first response packet's payload.
pub async fn command(io: &mut PacketIo, payload: &[u8]) -> Vec<u8> {
    io.send_packet(0, payload).await.unwrap();
    next(io).await
}

pub async fn next(io: &mut PacketIo) -> Vec<u8> {
    io.expect_frame().await.unwrap().payload().to_vec()
}

/// Read packets until (and including) one whose first byte is 0xFE or 0xFF.
pub async fn until_terminator(io: &mut PacketIo) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let p = next(io).await;
        let end = matches!(p.first(), Some(0xFE) | Some(0xFF)) && p.len() < 0xFF_FFFF;
        out.push(p);
        if end {
            return out;
        }
    }
}

pub fn err_code(p: &[u8]) -> u16 {
    assert_eq!(p[0], 0xFF, "expected ERR, got {p:?}");
    u16::from_le_bytes([p[1], p[2]])
}

/// What a raw login saw: the greeting, and the server's reply payload.
pub struct RawLogin {
    pub io: PacketIo,
    pub greeting: HandshakePacket<'static>,
    pub reply: Vec<u8>,
}

/// Log in as `user` with exactly `caps` and MariaDB extended capabilities
/// `mariadb` (sent in the last 4 filler bytes, as MariaDB clients do when
/// they clear CLIENT_MYSQL), mysql_native_password, database `shop`.
pub async fn login_as(
    port: u16,
    caps: CapabilityFlags,
    mariadb: u32,
    user: &str,
    password: &str,
) -> RawLogin {
    let mut io = PacketIo::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    let frame = io.expect_frame().await.unwrap();
    let greeting = HandshakePacket::deserialize((), &mut ParseBuf(frame.payload()))
        .unwrap()
        .into_owned();
    let auth = scramble_native(&greeting.nonce(), password.as_bytes())
        .map(|a| a.to_vec())
        .unwrap_or_default();
    let caps = caps | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
    let mut p = caps.bits().to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 19]);
    p.extend_from_slice(&mariadb.to_le_bytes());
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(auth.len() as u8);
    p.extend_from_slice(&auth);
    p.extend_from_slice(b"shop\0");
    p.extend_from_slice(b"mysql_native_password\0");
    io.send_packet(1, &p).await.unwrap();
    let reply = io.expect_frame().await.unwrap().payload().to_vec();
    RawLogin {
        io,
        greeting,
        reply,
    }
}
