//! The session's ordering rules (see `secondary.rs`), checked over scripted
//! fake backends on in-memory duplex pipes: no real database, but full
//! control over when each side answers or fails. The same rules are covered
//! end to end against MariaDB pairs in tests/routing.rs and tests/integrity.rs.

use std::sync::Arc;
use std::time::Duration;

use mysql_common::constants::CapabilityFlags;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::handshake::Login;
use super::Session;
use crate::command;
use crate::config::Config;
use crate::pattern::{Pattern, PatternHandle, Side};
use crate::shared::Shared;
use crate::stats::DataPathStats;
use crate::testing::{self, Answer, Fake, Script, TinyDb};
use crate::wire::{self, PacketIo};

/// Generous bound for anything that must happen (liveness, not timing).
const LIVE: Duration = Duration::from_secs(10);
/// How long a test waits to see that something does *not* happen. A slow
/// machine can only make such a check pass wrongly, never fail wrongly.
const QUIET: Duration = Duration::from_millis(300);

/// A session in `pattern` with fake backends already connected; the test
/// is the client.
struct Harness {
    client: PacketIo,
    shared: Arc<Shared>,
    source: Fake,
    destination: Fake,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Harness {
    /// Both backends connected; a backend that must be reopened is
    /// unreachable (127.0.0.1:1 refuses at once).
    async fn start(pattern: Pattern, source: Script, destination: Script) -> Harness {
        let cfg = Config::parse(
            "[source]\nurl = \"mysql://app:app@127.0.0.1:1/shop\"\n\
             [destination]\nurl = \"mysql://app:app@127.0.0.1:1/shop\"\n",
        )
        .expect("test config");
        let stats = DataPathStats::new();
        let shared = Arc::new(Shared::new(
            Arc::new(cfg),
            PatternHandle::new(pattern),
            stats,
        ));
        let (proxy_end, client_end) = tokio::io::duplex(1 << 20);
        let login = Login {
            user: "app".into(),
            database: None,
            capabilities: testing::connect_params().capabilities
                | CapabilityFlags::CLIENT_TRANSACTIONS,
            mariadb: mysql_common::constants::MariadbCapabilities::empty(),
            accounts: super::auth::configured_accounts(&crate::config::UserConfig::new(
                "app", "app",
            )),
            collation: 45,
            attributes: Vec::new(),
            seq: 2,
        };
        let mut session = Session::new(shared.clone(), PacketIo::new(proxy_end), 1, login, [0; 20]);
        let (src, source) = testing::backend(Side::Source, source).await;
        let (dst, destination) = testing::backend(Side::Destination, destination).await;
        session.backends.insert(src);
        session.backends.insert(dst);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let _ = session.run(token).await;
            session.close().await;
        });
        Harness {
            client: PacketIo::new(client_end),
            shared,
            source,
            destination,
            stop,
            task,
        }
    }

    async fn send(&mut self, sql: &str) {
        self.client
            .send_packet(0, &command::query(sql))
            .await
            .unwrap();
    }

    /// The first packet of the next answer.
    async fn answer(&mut self) -> Vec<u8> {
        let frame = timeout(LIVE, self.client.expect_frame()).await;
        frame
            .expect("an answer in time")
            .unwrap()
            .payload()
            .to_vec()
    }

    /// Send `sql` (not a SELECT) and expect an OK.
    async fn ok(&mut self, sql: &str) {
        self.send(sql).await;
        let p = self.answer().await;
        assert_eq!(p[0], 0x00, "{sql}: expected OK, got {p:?}");
    }

    /// Whether an answer arrives within [`QUIET`].
    async fn answered_soon(&mut self) -> bool {
        timeout(QUIET, self.client.read_frame()).await.is_ok()
    }

    async fn stop(self) {
        self.stop.cancel();
        drop(self.client);
        timeout(LIVE, self.task).await.unwrap().unwrap();
    }
}

/// TinyDb answers, except that commands matching `held` wait for a release.
fn holding(held: fn(&[u8]) -> bool) -> Script {
    let mut db = TinyDb::default();
    Box::new(move |cmd| {
        let packets = db.answer(cmd);
        if held(cmd) {
            Answer::Held(packets)
        } else {
            Answer::Packets(packets)
        }
    })
}

fn is_insert(cmd: &[u8]) -> bool {
    cmd.starts_with(b"\x03INSERT")
}

#[tokio::test]
async fn an_autocommit_write_is_answered_only_after_the_mirror_applied_it() {
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), holding(is_insert)).await;
    h.send("INSERT INTO t VALUES (1)").await;
    assert!(
        !h.answered_soon().await,
        "answered before the mirror applied it"
    );
    assert!(h.source.received().iter().any(|c| c.starts_with("INSERT")));
    h.destination.release();
    assert_eq!(h.answer().await[0], 0x00);
    h.stop().await;
}

#[tokio::test]
async fn mirrored_writes_are_pinned_on_both_sides_around_the_write() {
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), testing::tiny_db()).await;
    h.ok("INSERT INTO t VALUES (7)").await;
    h.ok("UPDATE t SET a = 1").await;
    let (src, dst) = (h.source.received(), h.destination.received());
    assert_eq!(src.len(), 5, "{src:?}");
    assert_eq!(dst.len(), 5, "{dst:?}");
    for log in [&src, &dst] {
        assert!(log[0].starts_with("SET timestamp="), "{log:?}");
        assert_eq!(log[1], "INSERT INTO t VALUES (7)");
        assert_eq!(
            log[2], "SET timestamp=DEFAULT",
            "reset queued after the write"
        );
        assert!(log[3].starts_with("SET timestamp="), "{log:?}");
        assert_eq!(log[4], "UPDATE t SET a = 1");
    }
    assert_eq!(
        dst[0],
        format!("{}, insert_id=1", src[0]),
        "same pin; the primary's id"
    );
    assert_eq!(dst[3], src[3], "no insert id for an UPDATE");
    assert_ne!(src[0], src[3], "a fresh pin per statement");
    assert_eq!(h.shared.stats.snapshot().double_write_success, 2);
    h.stop().await;
}

#[tokio::test]
async fn writes_inside_a_transaction_are_pipelined_and_commit_waits_for_them() {
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), holding(is_insert)).await;
    h.ok("BEGIN").await;
    // Answered although the mirror holds both INSERTs: pipelined.
    h.ok("INSERT INTO t VALUES (1)").await;
    h.ok("INSERT INTO t VALUES (2)").await;
    h.send("COMMIT").await;
    assert!(
        !h.answered_soon().await,
        "COMMIT answered before the mirror's writes"
    );
    h.destination.release();
    h.destination.release();
    assert_eq!(h.answer().await[0], 0x00);
    let dst = h.destination.received();
    assert_eq!(dst.last().map(String::as_str), Some("COMMIT"), "{dst:?}");
    let stats = h.shared.stats.snapshot();
    assert_eq!(
        (stats.double_write_success, stats.mirror_mismatches),
        (4, 0)
    );
    h.stop().await;
}

#[tokio::test]
async fn a_mirror_lost_inside_a_transaction_is_not_reopened_until_it_ends() {
    let mut db = TinyDb::default();
    let dies_at_insert: Script = Box::new(move |cmd| {
        if is_insert(cmd) {
            Answer::Close
        } else {
            Answer::Packets(db.answer(cmd))
        }
    });
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), dies_at_insert).await;
    h.ok("BEGIN").await;
    h.ok("INSERT INTO t VALUES (1)").await;
    h.ok("INSERT INTO t VALUES (2)").await;
    h.ok("COMMIT").await;
    let stats = h.shared.stats.snapshot();
    assert_eq!(
        stats.destination_connect_failures, 0,
        "no reopen inside the transaction"
    );
    assert!(stats.double_write_failure >= 2, "{stats:?}");
    h.ok("INSERT INTO t VALUES (3)").await;
    let stats = h.shared.stats.snapshot();
    assert_eq!(
        stats.destination_connect_failures, 1,
        "reopen tried after it ended"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_transaction_the_primary_ended_is_rolled_back_on_the_mirror() {
    let mut db = TinyDb::default();
    let deadlocks: Script = Box::new(move |cmd| {
        if cmd.starts_with(b"\x03UPDATE") {
            db.in_trans = false; // the server rolled the transaction back
            Answer::Packets(vec![wire::err_payload(1213, "40001", "Deadlock found")])
        } else {
            Answer::Packets(db.answer(cmd))
        }
    });
    let mut h = Harness::start(Pattern::DstFirst, testing::tiny_db(), deadlocks).await;
    h.ok("BEGIN").await;
    h.ok("INSERT INTO t VALUES (1)").await;
    h.send("UPDATE t SET a = 2").await;
    assert_eq!(wire::parse_err(&h.answer().await).code, 1213);
    let src = h.source.received();
    assert_eq!(src.last().map(String::as_str), Some("ROLLBACK"), "{src:?}");
    assert!(
        !src.iter().any(|c| c.starts_with("UPDATE")),
        "a failed write is not mirrored"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_mirror_result_that_differs_is_counted_and_queued_for_recheck() {
    let mut db = TinyDb::default();
    let matches_nothing: Script = Box::new(move |cmd| {
        if cmd.starts_with(b"\x03UPDATE") {
            Answer::Packets(vec![wire::ok_payload(0, 0, 0, db.status(), 0)])
        } else {
            Answer::Packets(db.answer(cmd))
        }
    });
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), matches_nothing).await;
    h.ok("UPDATE t SET a = 1 WHERE id = 5").await;
    assert_eq!(h.shared.stats.snapshot().mirror_mismatches, 1);
    let dirty = h.shared.stats.dirty.drain();
    assert_eq!(dirty.len(), 1);
    assert_eq!(
        (dirty[0].table.as_deref(), dirty[0].reason.as_str()),
        (Some("t"), "mismatch:affected_rows")
    );
    h.stop().await;
}

#[tokio::test]
async fn a_switch_drains_only_once_the_open_transaction_ends() {
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), testing::tiny_db()).await;
    h.ok("BEGIN").await;
    let pattern = h.shared.pattern.clone();
    let waited = pattern.drain(Duration::from_millis(100)).await;
    assert_eq!(
        waited.unwrap_err().in_flight,
        1,
        "the open transaction holds the gate"
    );
    h.ok("COMMIT").await;
    let drained = timeout(LIVE, pattern.drain(LIVE)).await.unwrap();
    drained
        .expect("nothing in flight after COMMIT")
        .swap(Pattern::DstFirst);
    h.stop().await;
}
