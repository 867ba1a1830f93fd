//! Test doubles for unit tests of the data path's ordering rules that need
//! no real database: a scripted MySQL server over an in-memory duplex.
//!
//! Integration tests (tests/) run against real MariaDB pairs; these fakes
//! only stand in where a test must control *when* a backend answers or
//! fails, which a real server cannot be made to do on cue.
#![allow(dead_code)] // a toolbox: not every test uses every tool

use std::sync::{Arc, Mutex};

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::packets::HandshakePacket;
use mysql_common::proto::MySerialize;
use tokio::io::duplex;
use tokio::sync::Semaphore;

use crate::backend::{Backend, ConnectParams};
use crate::config::BackendConfig;
use crate::pattern::Side;
use crate::wire::{self, PacketIo};

/// What the fake does with one command.
pub(crate) enum Answer {
    /// Send these payloads (sequence ids 1, 2, …).
    Packets(Vec<Vec<u8>>),
    /// Wait for a permit from [`Fake::release`], then send these payloads.
    Held(Vec<Vec<u8>>),
    /// Send nothing (COM_STMT_CLOSE and the like).
    Nothing,
    /// Drop the connection without answering (a lost backend).
    Close,
}

/// A script: every command the fake receives (payload, command byte
/// included) → what to answer.
pub(crate) type Script = Box<dyn FnMut(&[u8]) -> Answer + Send>;

/// Handle on a running fake backend.
#[derive(Clone)]
pub(crate) struct Fake {
    /// Every command received, in order: COM_QUERY as its SQL text,
    /// anything else as `COM 0x..`.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Entries appended by the fake right after it sent an answer
    /// (`answered <command>`), in order with [`Fake::log`]'s.
    pub events: Arc<Mutex<Vec<String>>>,
    held: Arc<Semaphore>,
}

impl Fake {
    /// Let one held answer go.
    pub fn release(&self) {
        self.held.add_permits(1);
    }

    /// The commands received so far.
    pub fn received(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Capabilities the fake offers (a MariaDB 10.11 subset).
fn fake_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// Client parameters the tests log in with (DEPRECATE_EOF framing).
pub(crate) fn connect_params() -> ConnectParams {
    ConnectParams {
        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_DEPRECATE_EOF
            | CapabilityFlags::CLIENT_LONG_PASSWORD,
        mariadb: mysql_common::constants::MariadbCapabilities::empty(),
        credentials: None,
        collation: 45,
        database: None,
        max_packet: 16 * 1024 * 1024,
        timeout: std::time::Duration::from_secs(5),
        attributes: Vec::new(),
    }
}

/// A logged-in [`Backend`] for `side` talking to a fake running `script`.
pub(crate) async fn backend<T>(side: Side, script: Script) -> (Backend<T>, Fake) {
    let (io, fake) = spawn(script);
    let cfg = BackendConfig::from_url("mysql://app:app@127.0.0.1:1/shop").expect("test url");
    let (backend, _) = Backend::handshake(io, &cfg, side, &connect_params())
        .await
        .expect("fake login");
    (backend, fake)
}

/// Start a fake server task; returns the client end of its connection.
pub(crate) fn spawn(script: Script) -> (PacketIo, Fake) {
    let (client, server) = duplex(1 << 20);
    let fake = Fake {
        log: Arc::default(),
        events: Arc::default(),
        held: Arc::new(Semaphore::new(0)),
    };
    tokio::spawn(serve(PacketIo::new(server), script, fake.clone()));
    (PacketIo::new(client), fake)
}

async fn serve(mut io: PacketIo, mut script: Script, fake: Fake) {
    let greeting = HandshakePacket::new(
        10,
        &b"5.5.5-10.11.0-MariaDB-fake"[..],
        77,
        *b"abcdefgh",
        Some(&b"ijklmnopqrst\0"[..]),
        fake_capabilities(),
        45,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(&b"mysql_native_password"[..]),
    );
    let mut p = Vec::new();
    greeting.serialize(&mut p);
    if io.send_packet(0, &p).await.is_err() || io.read_packet(1 << 20).await.is_err() {
        return;
    }
    let ok = wire::ok_payload(0, 0, 0, StatusFlags::SERVER_STATUS_AUTOCOMMIT, 0);
    if io.send_packet(2, &ok).await.is_err() {
        return;
    }
    while let Ok(Some((cmd, _))) = io.read_packet(1 << 24).await {
        let name = describe(&cmd);
        fake.log.lock().unwrap().push(name.clone());
        let packets = match script(&cmd) {
            Answer::Packets(p) => p,
            Answer::Held(p) => {
                let Ok(permit) = fake.held.acquire().await else {
                    return;
                };
                permit.forget();
                p
            }
            Answer::Nothing => continue,
            Answer::Close => return,
        };
        let mut seq = 1u8;
        for p in &packets {
            seq = io.queue_packet(seq, p);
        }
        if io.flush().await.is_err() {
            return;
        }
        fake.events.lock().unwrap().push(format!("answered {name}"));
    }
}

fn describe(cmd: &[u8]) -> String {
    match cmd.split_first() {
        Some((0x03, sql)) => String::from_utf8_lossy(sql).into_owned(),
        Some((b, _)) => format!("COM {b:#04x}"),
        None => "empty".into(),
    }
}

/// A tiny database for scripts: tracks IN_TRANS from BEGIN/COMMIT/ROLLBACK,
/// answers writes with one affected row (INSERTs get ids 1, 2, …), SELECT
/// with a one-row result, everything else with a plain OK.
#[derive(Default)]
pub(crate) struct TinyDb {
    pub in_trans: bool,
    pub next_id: u64,
}

impl TinyDb {
    /// The status flags of the next answer.
    pub fn status(&self) -> StatusFlags {
        let mut s = StatusFlags::SERVER_STATUS_AUTOCOMMIT;
        if self.in_trans {
            s |= StatusFlags::SERVER_STATUS_IN_TRANS;
        }
        s
    }

    /// The answer a server would give to `cmd`.
    pub fn answer(&mut self, cmd: &[u8]) -> Vec<Vec<u8>> {
        let sql = match cmd.split_first() {
            Some((0x03, _)) => String::from_utf8_lossy(statement(cmd)).to_ascii_uppercase(),
            Some((0x01, _)) => return Vec::new(),
            _ => return vec![wire::ok_payload(0, 0, 0, self.status(), 0)],
        };
        let word = sql.split_whitespace().next().unwrap_or("").to_string();
        let (mut affected, mut id) = (0, 0);
        match word.as_str() {
            "BEGIN" | "START" => self.in_trans = true,
            "COMMIT" | "ROLLBACK" => self.in_trans = false,
            "INSERT" => {
                // `SET STATEMENT … insert_id=N … FOR INSERT`: the id is N.
                let pinned = String::from_utf8_lossy(cmd)
                    .split(" FOR ")
                    .next()
                    .and_then(|p| p.split("insert_id=").nth(1))
                    .and_then(|v| v.split([',', ' ']).next()?.parse::<u64>().ok());
                if let Some(id) = pinned {
                    self.next_id = id - 1;
                }
                self.next_id += 1;
                (affected, id) = (1, self.next_id);
            }
            "UPDATE" | "DELETE" => affected = 1,
            "SELECT" => return self.one_row(),
            _ => {}
        }
        vec![wire::ok_payload(0, affected, id, self.status(), 0)]
    }

    fn one_row(&self) -> Vec<Vec<u8>> {
        let mut col = Vec::new();
        for s in ["def", "", "", "", "x", ""] {
            wire::put_lenenc_int(&mut col, s.len() as u64);
            col.extend_from_slice(s.as_bytes());
        }
        col.extend_from_slice(&[0x0c, 45, 0, 1, 0, 0, 0, 253, 0, 0, 0, 0, 0]);
        let terminator = wire::ok_payload(0xFE, 0, 0, self.status(), 0);
        vec![vec![1], col, vec![1, b'1'], terminator]
    }
}

/// The statement of a COM_QUERY payload without cutover's pinning prefix
/// (`SET STATEMENT … FOR `): what a test's script matches on.
pub(crate) fn statement(cmd: &[u8]) -> &[u8] {
    let sql = cmd.strip_prefix(b"\x03").unwrap_or(cmd);
    if !sql.starts_with(b"SET STATEMENT ") {
        return sql;
    }
    match sql.windows(5).position(|w| w == b" FOR ") {
        Some(i) => &sql[i + 5..],
        None => sql,
    }
}

/// A script answering like [`TinyDb`].
pub(crate) fn tiny_db() -> Script {
    let mut db = TinyDb::default();
    Box::new(move |cmd| Answer::Packets(db.answer(cmd)))
}
