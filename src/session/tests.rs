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
    cmd.starts_with(b"\x03") && testing::statement(cmd).starts_with(b"INSERT")
}

#[tokio::test]
async fn an_autocommit_write_is_answered_only_after_the_mirror_applied_it() {
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), holding(is_insert)).await;
    h.send("INSERT INTO t VALUES (1)").await;
    assert!(
        !h.answered_soon().await,
        "answered before the mirror applied it"
    );
    assert!(h
        .source
        .received()
        .iter()
        .any(|c| stmt(c).starts_with("INSERT")));
    h.destination.release();
    assert_eq!(h.answer().await[0], 0x00);
    h.stop().await;
}

/// A logged command without cutover's `SET STATEMENT … FOR ` prefix.
fn stmt(logged: &str) -> &str {
    std::str::from_utf8(testing::statement(logged.as_bytes())).unwrap()
}

/// `SET STATEMENT <assignments> FOR <statement>` → (assignments, statement).
fn set_statement(logged: &str) -> (&str, &str) {
    logged
        .strip_prefix("SET STATEMENT ")
        .and_then(|r| r.split_once(" FOR "))
        .unwrap_or_else(|| panic!("not pinned by SET STATEMENT: {logged}"))
}

#[tokio::test]
async fn mirrored_writes_carry_the_same_pin_on_both_sides_and_leave_nothing_behind() {
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), testing::tiny_db()).await;
    h.ok("INSERT INTO t VALUES (7)").await;
    h.ok("UPDATE t SET a = 1").await;
    let (src, dst) = (h.source.received(), h.destination.received());
    assert_eq!(src.len(), 2, "nothing before or after the writes: {src:?}");
    assert_eq!(dst.len(), 2, "{dst:?}");
    let (pin, stmt) = set_statement(&src[0]);
    assert!(
        pin.starts_with("timestamp=") && pin.contains(", rand_seed1="),
        "{pin}"
    );
    assert_eq!(stmt, "INSERT INTO t VALUES (7)");
    assert_eq!(
        set_statement(&dst[0]),
        (format!("{pin}, insert_id=1").as_str(), stmt),
        "same pin; the primary's id"
    );
    let (pin2, stmt2) = set_statement(&src[1]);
    assert_eq!(stmt2, "UPDATE t SET a = 1");
    assert_eq!(
        set_statement(&dst[1]),
        (pin2, stmt2),
        "no insert id for an UPDATE"
    );
    assert_ne!(pin, pin2, "a fresh pin per statement");
    assert_eq!(h.shared.stats.snapshot().double_write_success, 2);
    h.stop().await;
}

#[tokio::test]
async fn statements_without_set_statement_are_pinned_around_and_the_clients_pins_stay() {
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), testing::tiny_db()).await;
    h.ok("LOCK TABLES t WRITE").await;
    assert_eq!(
        h.source.received(),
        ["LOCK TABLES t WRITE"],
        "nothing to pin"
    );
    h.ok("SET timestamp = 1000000000").await;
    h.ok("FROBNICATE t").await; // not known to take SET STATEMENT
    h.ok("INSERT INTO t VALUES (8)").await;
    let src = h.source.received();
    assert_eq!(src[1], "SET timestamp = 1000000000");
    assert!(
        src[2].starts_with("SET rand_seed1="),
        "the client's timestamp is not overridden: {src:?}"
    );
    assert_eq!(src[3], "FROBNICATE t", "and not reset afterwards: {src:?}");
    let (pin, stmt) = set_statement(&src[4]);
    assert!(
        pin.starts_with("rand_seed1=") && !pin.contains("timestamp"),
        "{pin}"
    );
    assert_eq!(stmt, "INSERT INTO t VALUES (8)");
    h.ok("SET timestamp = DEFAULT").await;
    h.ok("FROBNICATE t").await;
    h.ok("SET @done = 1").await;
    let src = h.source.received();
    let n = src.len();
    assert!(src[n - 4].starts_with("SET timestamp="), "{src:?}");
    assert_eq!(src[n - 3], "FROBNICATE t");
    assert_eq!(
        src[n - 2],
        "SET timestamp=DEFAULT",
        "normal time again after it: {src:?}"
    );
    assert_eq!(src[n - 1], "SET @done = 1");
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
        if is_update(cmd) {
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
        if is_update(cmd) {
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

#[tokio::test]
async fn a_write_that_waited_at_the_gate_asks_the_fence_again_before_it_runs() {
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), testing::tiny_db()).await;
    let pattern = h.shared.pattern.clone();
    let fence = pattern.fence();
    fence.set_wait(Duration::from_millis(100));
    fence.confirm_until(std::time::Instant::now() + LIVE * 6, "lease confirmed");
    // A switch holds the gate (a prepare this member acknowledged) ...
    let drained = timeout(LIVE, pattern.drain(LIVE)).await.unwrap().unwrap();
    h.send("INSERT INTO t VALUES (1)").await;
    assert!(!h.answered_soon().await, "the write waits at the gate");
    // ... then the lease lapses: the member lets the prepare go under a
    // reads-only fence, and the waiting write must not run under the old pattern.
    fence.reads_only("coordinator unreachable");
    drop(drained);
    let p = h.answer().await;
    assert_eq!(p[0], 0xFF, "expected ERR, got {p:?}");
    assert_eq!(u16::from_le_bytes([p[1], p[2]]), 1290);
    let message = String::from_utf8_lossy(&p[9..]).to_string();
    assert!(message.contains("writes are fenced"), "{message}");
    for side in [&h.source, &h.destination] {
        assert!(
            !side.received().iter().any(|c| c.starts_with("INSERT")),
            "the fenced write reached a backend"
        );
    }
    // Reads still run under the last known pattern.
    h.send("SELECT 1").await;
    assert_ne!(h.answer().await[0], 0xFF);
    h.stop().await;
}

/// A mirror script: TinyDb, except that the first `n` commands matching
/// `fails` get `code` (a deadlock also ends the fake's transaction).
fn failing_first(n: usize, code: u16, fails: fn(&[u8]) -> bool) -> Script {
    let mut db = TinyDb::default();
    let mut left = n;
    Box::new(move |cmd| {
        if left > 0 && fails(cmd) {
            left -= 1;
            if code == 1213 {
                db.in_trans = false;
            }
            let state = if code == 1213 { "40001" } else { "HY000" };
            Answer::Packets(vec![wire::err_payload(code, state, "lock conflict")])
        } else {
            Answer::Packets(db.answer(cmd))
        }
    })
}

fn is_first_insert(cmd: &[u8]) -> bool {
    cmd.starts_with(b"\x03") && testing::statement(cmd) == b"INSERT INTO t VALUES (1)"
}

#[tokio::test]
async fn a_mirror_only_deadlock_in_a_transaction_is_replayed_before_commit() {
    let mirror = failing_first(1, 1213, is_first_insert);
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), mirror).await;
    h.ok("BEGIN").await;
    h.ok("INSERT INTO t VALUES (1)").await;
    h.ok("INSERT INTO t VALUES (2)").await;
    h.ok("COMMIT").await;
    let dst = h.destination.received();
    let pos = |what: &str| dst.iter().rposition(|c| c == what);
    let begin = dst.iter().position(|c| c == "BEGIN").unwrap();
    assert_eq!(dst[begin - 1], "SET autocommit=0", "{dst:?}");
    let rollback = pos("ROLLBACK").expect("the share is rolled back first");
    let replayed: Vec<&str> = dst[rollback + 1..].iter().map(|c| stmt(c)).collect();
    assert_eq!(
        replayed,
        [
            "SET autocommit=0",
            "BEGIN",
            "INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (2)",
            "COMMIT"
        ],
        "{dst:?}"
    );
    let s = h.shared.stats.snapshot();
    assert_eq!(
        (s.double_write_failure, s.mirror_retries_succeeded),
        (0, 1),
        "{s:?}"
    );
    assert_eq!(s.double_write_success, 4, "BEGIN, 2 INSERTs, COMMIT: {s:?}");
    // replayed after another transaction's lock: re-checked, not a failure
    let dirty = h.shared.stats.dirty.drain();
    assert!(
        !dirty.is_empty(),
        "the replayed writes are queued for a re-check"
    );
    assert!(dirty.iter().all(|d| d.reason == "retried"), "{dirty:?}");
    h.ok("INSERT INTO t VALUES (3)").await;
    let dst = h.destination.received();
    let commit = dst.iter().rposition(|c| c == "COMMIT").unwrap();
    let insert = dst.iter().rposition(|c| c.ends_with("VALUES (3)")).unwrap();
    assert!(
        dst[commit..insert].iter().any(|c| c == "SET autocommit=1"),
        "autocommit given back after the transaction: {dst:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn the_mirror_share_of_a_transaction_the_primary_rolled_back_is_no_failure() {
    let mut db = TinyDb::default();
    let deadlocks: Script = Box::new(move |cmd| {
        if is_update(cmd) {
            db.in_trans = false;
            Answer::Packets(vec![wire::err_payload(1213, "40001", "Deadlock found")])
        } else {
            Answer::Packets(db.answer(cmd))
        }
    });
    // The mirror fails too (lock wait on its side): still consistent.
    let mirror = failing_first(1, 1205, is_first_insert);
    let mut h = Harness::start(Pattern::SrcFirst, deadlocks, mirror).await;
    h.ok("BEGIN").await;
    h.ok("INSERT INTO t VALUES (1)").await;
    h.ok("INSERT INTO t VALUES (2)").await;
    h.send("UPDATE t SET a = 2").await;
    assert_eq!(wire::parse_err(&h.answer().await).code, 1213);
    let s = h.shared.stats.snapshot();
    assert_eq!(s.double_write_failure, 0, "{s:?}");
    assert_eq!(s.double_write_rolled_back, 3, "BEGIN and 2 INSERTs: {s:?}");
    assert_eq!(
        s.destination_secondary_errors, 1,
        "the mirror's own error, a diagnostic"
    );
    assert!(h.shared.stats.dirty.is_empty());
    assert_eq!(
        h.destination.received().last().map(String::as_str),
        Some("ROLLBACK")
    );
    h.stop().await;
}

fn is_update(cmd: &[u8]) -> bool {
    cmd.starts_with(b"\x03") && testing::statement(cmd).starts_with(b"UPDATE")
}

#[tokio::test]
async fn a_mirror_only_lock_wait_timeout_on_an_autocommit_write_is_retried() {
    let mirror = failing_first(2, 1205, is_update);
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), mirror).await;
    h.ok("UPDATE t SET a = 1 WHERE id = 1").await;
    let updates = h
        .destination
        .received()
        .iter()
        .filter(|c| stmt(c).starts_with("UPDATE"))
        .count();
    assert_eq!(updates, 3, "two timeouts, then applied");
    let s = h.shared.stats.snapshot();
    assert_eq!(
        (s.double_write_success, s.double_write_failure),
        (1, 0),
        "{s:?}"
    );
    assert_eq!(s.mirror_retries_succeeded, 1);
    h.stop().await;
}

#[tokio::test]
async fn exhausted_retries_count_one_failure_and_one_dirty_record() {
    let mirror = failing_first(100, 1205, is_update);
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), mirror).await;
    h.ok("UPDATE t SET a = 1 WHERE id = 1").await;
    let s = h.shared.stats.snapshot();
    assert_eq!(
        (s.double_write_failure, s.mirror_retries_failed),
        (1, 1),
        "{s:?}"
    );
    let dirty = h.shared.stats.dirty.drain();
    assert_eq!(dirty.len(), 1, "{dirty:?}");
    assert_eq!(
        (dirty[0].table.as_deref(), dirty[0].reason.as_str()),
        (Some("t"), "failure:lock_conflict")
    );
    h.stop().await;
}

#[tokio::test]
async fn a_mirror_error_that_is_not_transient_in_a_committed_transaction_is_a_failure() {
    let mut db = TinyDb::default();
    let dup: Script = Box::new(move |cmd| {
        if is_first_insert(cmd) {
            Answer::Packets(vec![wire::err_payload(1062, "23000", "Duplicate entry")])
        } else {
            Answer::Packets(db.answer(cmd))
        }
    });
    let mut h = Harness::start(Pattern::SrcFirst, testing::tiny_db(), dup).await;
    h.ok("BEGIN").await;
    h.ok("INSERT INTO t VALUES (1)").await;
    h.ok("INSERT INTO t VALUES (2)").await;
    h.ok("COMMIT").await;
    let s = h.shared.stats.snapshot();
    assert_eq!(
        (s.double_write_failure, s.double_write_success),
        (1, 3),
        "{s:?}"
    );
    assert_eq!(s.mirror_retries_succeeded + s.mirror_retries_failed, 0);
    let dirty = h.shared.stats.dirty.drain();
    let failures: Vec<&str> = dirty
        .iter()
        .map(|d| d.reason.as_str())
        .filter(|r| r.starts_with("failure:"))
        .collect();
    assert_eq!(failures, ["failure:constraint"], "{dirty:?}");
    h.stop().await;
}
