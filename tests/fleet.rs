//! A fleet of `cutover serve` processes sharing one migration through a real
//! etcd 3.4 (started by the harness on free ports) in front of a real
//! MariaDB pair: coordinated two-phase switches, membership, fencing, leader
//! failover of background work (docs/FLEET.md).

mod support;

use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use serde_json::Value;
use support::binary::Cutover;
use support::{Etcd, Pair};

const PREFIX: &str = "/cutover/test";

/// How a member is configured.
struct Member<'a> {
    id: &'a str,
    pattern: &'a str,
    lease_ttl_ms: u64,
    switch_timeout_ms: u64,
    /// Extra top-level keys.
    top: &'a str,
    /// Extra `[coordination]` keys.
    coordination: &'a str,
}

impl<'a> Member<'a> {
    fn new(id: &'a str) -> Self {
        Member {
            id,
            pattern: "src_first",
            lease_ttl_ms: 4000,
            switch_timeout_ms: 8000,
            top: "",
            coordination: "",
        }
    }

    async fn start(&self, pair: &Pair, etcd: &Etcd) -> Cutover {
        let extra = format!(
            "initial_pattern = \"{}\"\nswitch_drain_timeout_ms = 5000\n{}\n\
             [coordination]\nbackend = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{PREFIX}\"\n\
             member_id = \"{}\"\nlease_ttl_ms = {}\nswitch_timeout_ms = {}\nfence_wait_ms = 1500\n{}\n",
            self.pattern,
            self.top,
            etcd.url(),
            self.id,
            self.lease_ttl_ms,
            self.switch_timeout_ms,
            self.coordination
        );
        Cutover::start(pair, &extra, &[]).await
    }
}

fn opts(port: u16) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(Some("shop"))
        .prefer_socket(false)
        .stmt_cache_size(0)
}

async fn conn(m: &Cutover) -> mysql_async::Conn {
    mysql_async::Conn::new(opts(m.port))
        .await
        .unwrap_or_else(|e| panic!("connect through member on {}: {e}", m.port))
}

/// The planted row `who` says which side answered.
async fn plant_sides(pair: &Pair) {
    for (db, side) in [(&pair.source, "source"), (&pair.destination, "destination")] {
        db.exec(&format!(
            "CREATE TABLE who (id INT PRIMARY KEY, side VARCHAR(20)); INSERT INTO who VALUES (1, '{side}')"
        ))
        .await;
    }
}

async fn side_seen(m: &Cutover) -> String {
    let mut c = conn(m).await;
    let side: Option<String> = c
        .query_first("SELECT side FROM who WHERE id = 1")
        .await
        .unwrap();
    let _ = c.disconnect().await;
    side.unwrap()
}

/// Poll `GET /status` on `m` until `done` (liveness bound `within`).
async fn wait_status(
    m: &Cutover,
    within: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = m.get("/status").await;
        let s: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        if r.status == 200 && done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last /status ({}):\n{s:#}\nlog:\n{}",
            r.status,
            tail(&m.log_text(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every member runs `state` at the same epoch, and routes to `side`.
async fn all_agree(members: &[&Cutover], state: &str, pattern: &str, side: &str) -> u64 {
    let mut epochs = Vec::new();
    for m in members {
        let s = wait_status(
            m,
            Duration::from_secs(20),
            &format!("{state} everywhere"),
            |s| s["current_state"] == state && s["current_pattern"] == pattern,
        )
        .await;
        epochs.push(s["fleet"]["epoch"].as_u64().unwrap());
        assert_eq!(
            side_seen(m).await,
            side,
            "member on port {} routes to the wrong side in {state}",
            m.port
        );
    }
    assert!(
        epochs.windows(2).all(|w| w[0] == w[1]),
        "epochs differ: {epochs:?}"
    );
    epochs[0]
}

#[tokio::test]
async fn etcd_client_speaks_kv_lease_watch_and_txn_with_etcd_3_4() {
    use etcd_client::{
        Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions,
    };
    let etcd = Etcd::start().await;
    let mut c = Client::connect([etcd.url()], None).await.unwrap();
    let v = c.status().await.unwrap();
    assert!(v.version().starts_with("3.4"), "etcd {}", v.version());
    // KV
    c.put("/t/a", "1", None).await.unwrap();
    let got = c.get("/t/a", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"1");
    // watch from the next revision
    let rev = got.header().unwrap().revision();
    let mut w = c
        .watch(
            "/t/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1),
            ),
        )
        .await
        .unwrap();
    // txn: compare-and-swap wins once
    let cas = |expect: &'static str, to: &'static str| {
        Txn::new()
            .when([Compare::value("/t/a", CompareOp::Equal, expect)])
            .and_then([TxnOp::put("/t/a", to, None)])
    };
    assert!(c.txn(cas("1", "2")).await.unwrap().succeeded());
    assert!(!c.txn(cas("1", "3")).await.unwrap().succeeded());
    let mut next_event = async || loop {
        let m = w.message().await.unwrap().unwrap();
        if let Some(e) = m.events().first() {
            return e.clone();
        }
    };
    let ev = next_event().await;
    assert_eq!(ev.event_type(), EventType::Put);
    assert_eq!(ev.kv().unwrap().value(), b"2");
    // lease: a key attached to it goes when it expires, keep-alive keeps it
    let lease = c.lease_grant(2, None).await.unwrap();
    assert_eq!(lease.ttl(), 2);
    c.put(
        "/t/leased",
        "x",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await
    .unwrap();
    let (mut keeper, mut stream) = c.lease_keep_alive(lease.id()).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().ttl(), 2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c.get("/t/leased", None).await.unwrap().kvs().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the leased key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    keeper.keep_alive().await.unwrap();
    assert_eq!(
        stream.message().await.unwrap().unwrap().ttl(),
        0,
        "an expired lease renews to TTL 0"
    );
    let ev = w.message().await.unwrap().unwrap();
    assert!(ev.events().iter().any(|e| e.event_type() == EventType::Put));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_walk_the_migration_through_different_members_and_agree() {
    let (etcd, pair) = tokio::join!(Etcd::start(), Pair::start());
    plant_sides(&pair).await;
    let mut m1 = Member::new("m1");
    m1.pattern = "src_only";
    let a = m1.start(&pair, &etcd).await;
    let b = Member { id: "m2", ..m1 }.start(&pair, &etcd).await;
    let c = Member {
        id: "m3",
        ..Member::new("m3")
    }
    .start(&pair, &etcd)
    .await;
    let all = [&a, &b, &c];
    // m3 said src_first in its config: the fleet's state (created by m1) wins.
    let e0 = all_agree(&all, "initial", "src_only", "source").await;
    let s = wait_status(&a, Duration::from_secs(10), "3 members", |s| {
        s["fleet"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3)
            && s["fleet"]["leader"].is_string()
    })
    .await;
    assert_eq!(s["fleet"]["prefix"], PREFIX);

    let walk = [
        (&a, "/src_only", "src_only", "src_only", "source"),
        (&b, "/src_first", "src_first", "src_first", "source"),
        (
            &c,
            "/dst_first?force=true",
            "dst_first",
            "dst_first",
            "destination",
        ),
        (
            &a,
            "/dst_only?force=true",
            "dst_only",
            "dst_only",
            "destination",
        ),
        (&b, "/dst_first", "dst_first", "dst_first", "destination"),
        (
            &c,
            "/src_first?force=true",
            "src_first",
            "src_first",
            "source",
        ),
    ];
    let mut epoch = e0;
    for (via, path, state, pattern, side) in walk {
        let r = via.post(path).await;
        assert_eq!(
            r.status, 200,
            "POST {path} via port {}: {}",
            via.port, r.body
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["current_state"], state, "{body:#}");
        let now = all_agree(&all, state, pattern, side).await;
        assert_eq!(now, epoch + 1, "every switch increments the epoch once");
        epoch = now;
    }
    // Every member shows the same history, newest last, and the same members.
    let histories: Vec<Value> = {
        let mut h = Vec::new();
        for m in all {
            h.push(m.get("/status").await.json()["history"].clone());
        }
        h
    };
    assert!(histories.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(histories[0].as_array().unwrap().len(), 6);
    // A refusal from the leader reaches the caller through any member, as is.
    let r = b.post("/dst_only").await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.error().contains("from src_first the legal moves are to"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_writers_over_three_members_through_three_authority_switches_lose_nothing() {
    let (etcd, pair) = tokio::join!(Etcd::start(), Pair::start());
    for db in [&pair.source, &pair.destination] {
        db.exec("CREATE TABLE t (id BIGINT PRIMARY KEY, writer INT NOT NULL, seq INT NOT NULL, n INT NOT NULL DEFAULT 0)")
            .await;
        db.exec("CREATE TABLE counters (writer INT PRIMARY KEY, n INT NOT NULL)")
            .await;
    }
    let members = [
        Member::new("w1").start(&pair, &etcd).await,
        Member::new("w2").start(&pair, &etcd).await,
        Member::new("w3").start(&pair, &etcd).await,
    ];
    let stop = tokio_util::sync::CancellationToken::new();
    let mut writers = Vec::new();
    for w in 0..6u32 {
        let port = members[w as usize % 3].port;
        let stop = stop.clone();
        writers.push(tokio::spawn(
            async move { write_until(port, w, stop).await },
        ));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    for (i, to) in ["dst_first", "src_first", "dst_first"].iter().enumerate() {
        let via = &members[i % 3];
        let r = via.post(&format!("/{to}?force=true")).await;
        assert_eq!(r.status, 200, "switch to {to} via member {i}: {}", r.body);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    stop.cancel();
    let mut acked = Vec::new();
    for w in writers {
        let (ids, errors) = w.await.unwrap();
        assert!(
            errors.is_empty(),
            "client errors during the switches: {errors:?}"
        );
        acked.extend(ids);
    }
    assert!(
        acked.len() > 60,
        "only {} writes were acknowledged",
        acked.len()
    );
    let dump = "SELECT id, writer, seq, n FROM t ORDER BY id";
    let src: Vec<(i64, i32, i32, i32)> = pair.source.query(dump).await;
    let dst: Vec<(i64, i32, i32, i32)> = pair.destination.query(dump).await;
    let have: std::collections::BTreeSet<i64> = src.iter().map(|r| r.0).collect();
    for id in &acked {
        assert!(have.contains(id), "acknowledged insert {id} is missing");
    }
    assert_eq!(src.len(), dst.len(), "row counts differ");
    assert!(src == dst, "the two sides differ row for row");
    let cs: Vec<(i32, i32)> = pair
        .source
        .query("SELECT writer, n FROM counters ORDER BY writer")
        .await;
    let cd: Vec<(i32, i32)> = pair
        .destination
        .query("SELECT writer, n FROM counters ORDER BY writer")
        .await;
    assert_eq!(cs, cd, "read-modify-write counters differ");
}

/// One writer: autocommit inserts and small transactions (insert + update
/// of its counter), until `stop`. Returns the acknowledged ids and errors.
async fn write_until(
    port: u16,
    w: u32,
    stop: tokio_util::sync::CancellationToken,
) -> (Vec<i64>, Vec<String>) {
    let mut c = mysql_async::Conn::new(opts(port)).await.expect("connect");
    c.query_drop(format!("INSERT INTO counters VALUES ({w}, 0)"))
        .await
        .unwrap();
    let (mut ids, mut errors) = (Vec::new(), Vec::new());
    let mut seq = 0i64;
    while !stop.is_cancelled() && errors.is_empty() {
        seq += 1;
        let id = i64::from(w) * 1_000_000 + seq;
        let r = if seq % 3 == 0 {
            c.query_drop(format!(
                "BEGIN; INSERT INTO t (id, writer, seq) VALUES ({id}, {w}, {seq}); \
                 UPDATE counters SET n = n + 1 WHERE writer = {w}; COMMIT"
            ))
            .await
        } else {
            c.query_drop(format!(
                "INSERT INTO t (id, writer, seq) VALUES ({id}, {w}, {seq})"
            ))
            .await
        };
        match r {
            Ok(()) => ids.push(id),
            Err(e) => errors.push(format!("writer {w} id {id}: {e}")),
        }
        if seq % 5 == 0 {
            if let Err(e) = c
                .query_drop(format!("UPDATE t SET n = n + 1 WHERE id = {}", id - 1))
                .await
            {
                errors.push(format!("writer {w} update: {e}"));
            }
        }
    }
    (ids, errors)
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_paused_during_a_switch_never_serves_the_old_pattern_after_it_resumes() {
    let (etcd, pair) = tokio::join!(Etcd::start(), Pair::start());
    for (db, v) in [(&pair.source, "old"), (&pair.destination, "new")] {
        db.exec(&format!(
            "CREATE TABLE planted (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO planted VALUES (1, '{v}')"
        ))
        .await;
    }
    let short = |id| Member {
        lease_ttl_ms: 2000,
        switch_timeout_ms: 10_000,
        ..Member::new(id)
    };
    let a = short("p1").start(&pair, &etcd).await;
    let b = short("p2").start(&pair, &etcd).await;
    let paused = short("p3").start(&pair, &etcd).await;
    wait_status(&a, Duration::from_secs(10), "3 members", |s| {
        s["fleet"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3)
    })
    .await;
    // A session opened before the pause, and one statement through it.
    let mut held = conn(&paused).await;
    let v: Option<String> = held
        .query_first("SELECT v FROM planted WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("old"));

    signal(paused.pid(), "-STOP");
    let r = a.post("/dst_first?force=true").await;
    match r.status {
        // Committed: only once the paused member's lease had expired.
        200 => {
            let s = a.get("/status").await.json();
            let ids: Vec<&str> = s["fleet"]["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap())
                .collect();
            assert!(
                !ids.contains(&"p3"),
                "committed while p3's lease was live: {ids:?}"
            );
        }
        // Aborted: it names the silent member, and nothing changed.
        409 => {
            assert!(r.body.contains("p3"), "{}", r.body);
            assert_eq!(
                b.get("/status").await.json()["current_pattern"],
                "src_first"
            );
        }
        other => panic!("switch answered {other}: {}", r.body),
    }
    let want = if r.status == 200 { "new" } else { "old" };
    signal(paused.pid(), "-CONT");
    // Through the held session and through fresh ones: the new authority's
    // value or an error, never the old one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut served = 0;
    while served < 5 {
        assert!(Instant::now() < deadline, "the resumed member never served");
        let got: Result<Option<String>, _> =
            held.query_first("SELECT v FROM planted WHERE id = 1").await;
        match got {
            Ok(v) => {
                assert_eq!(
                    v.as_deref(),
                    Some(want),
                    "the resumed member served under the old pattern"
                );
                served += 1;
            }
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1290, "{e:?}");
            }
            Err(e) => {
                // The session may have been lost: open another one.
                eprintln!("held session: {e}");
                held = conn(&paused).await;
            }
        }
        if let Ok(mut fresh) = mysql_async::Conn::new(opts(paused.port)).await {
            let got: Result<Option<String>, _> = fresh
                .query_first("SELECT v FROM planted WHERE id = 1")
                .await;
            if let Ok(v) = got {
                assert_eq!(
                    v.as_deref(),
                    Some(want),
                    "a fresh session on the resumed member read the old pattern"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected_pattern = if r.status == 200 {
        "dst_first"
    } else {
        "src_first"
    };
    wait_status(
        &paused,
        Duration::from_secs(20),
        "the resumed member rejoined",
        |s| s["current_pattern"] == expected_pattern && s["fleet"]["fenced"] == false,
    )
    .await;
    let _ = b;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_member_started_in_dst_first_routes_to_the_destination_from_its_first_statement() {
    let (etcd, pair) = tokio::join!(Etcd::start(), Pair::start());
    plant_sides(&pair).await;
    let a = Member::new("d1").start(&pair, &etcd).await;
    let b = Member::new("d2").start(&pair, &etcd).await;
    let c = Member::new("d3").start(&pair, &etcd).await;
    let r = b.post("/dst_first?force=true").await;
    assert_eq!(r.status, 200, "{}", r.body);
    all_agree(&[&a, &b, &c], "dst_first", "dst_first", "destination").await;
    // Its own config says src_only: the fleet's state wins before any statement.
    let mut d4 = Member::new("d4");
    d4.pattern = "src_only";
    let d = d4.start(&pair, &etcd).await;
    assert_eq!(
        side_seen(&d).await,
        "destination",
        "the first statement of a new member"
    );
    let s = d.get("/status").await.json();
    assert_eq!(s["current_state"], "dst_first");
    assert_eq!(
        s["fleet"]["epoch"],
        a.get("/status").await.json()["fleet"]["epoch"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_killed_writes_are_fenced_after_the_lease_bound_reads_go_on_and_writes_resume_after_restart(
) {
    let (etcd, pair) = tokio::join!(Etcd::start(), Pair::start());
    let mut etcd = etcd;
    for db in [&pair.source, &pair.destination] {
        db.exec("CREATE TABLE k (id INT PRIMARY KEY)").await;
    }
    let short = |id| Member {
        lease_ttl_ms: 2000,
        ..Member::new(id)
    };
    let a = short("e1").start(&pair, &etcd).await;
    let b = short("e2").start(&pair, &etcd).await;
    let mut c = conn(&a).await;
    c.query_drop("INSERT INTO k VALUES (1)").await.unwrap();

    etcd.kill();
    // Before the bound, writes go on; after it, they get a clear error.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 2;
    let refusal = loop {
        assert!(Instant::now() < deadline, "writes were never fenced");
        match c.query_drop(format!("INSERT INTO k VALUES ({id})")).await {
            Ok(()) => id += 1,
            Err(mysql_async::Error::Server(e)) => break e,
            Err(e) => panic!("unexpected error: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refusal.code, 1290, "{refusal:?}");
    assert!(
        refusal.message.contains("writes are fenced"),
        "{}",
        refusal.message
    );
    assert!(
        refusal.message.contains("e1"),
        "names the member: {}",
        refusal.message
    );
    // Reads work (under the last known pattern), on this and the other member.
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM k").await.unwrap();
    assert_eq!(n, Some(id - 1));
    let mut other = conn(&b).await;
    let n2: Option<i64> = other.query_first("SELECT COUNT(*) FROM k").await.unwrap();
    assert_eq!(n2, n);
    let m = a.get("/metrics").await.body;
    assert!(m.contains("cutover_fenced 1"), "{m}");

    etcd.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.query_drop(format!("INSERT INTO k VALUES ({id})")).await {
            Ok(()) => break,
            Err(mysql_async::Error::Server(e)) if e.code == 1290 => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "writes never resumed after etcd came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    other
        .query_drop(format!("INSERT INTO k VALUES ({})", id + 1))
        .await
        .unwrap();
    let src: Vec<i64> = pair.source.query("SELECT id FROM k ORDER BY id").await;
    assert_eq!(src.len() as i64, id + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_validation_whose_leader_is_killed_is_finished_by_another_member() {
    let (etcd, pair) = tokio::join!(Etcd::start(), Pair::start());
    let rows = 20_000;
    for db in [&pair.source, &pair.destination] {
        db.exec(&format!(
            "CREATE TABLE big (id INT PRIMARY KEY, v INT NOT NULL);
             INSERT INTO big SELECT seq, seq FROM seq_1_to_{rows}"
        ))
        .await;
    }
    // Differences spread over the table (found on both sides of the failover).
    pair.destination
        .exec("UPDATE big SET v = -v WHERE id % 1000 = 7")
        .await;
    let slow = "[validation]\nchunk_min_rows = 100\nchunk_max_rows = 100\nmax_rows_per_second = 2500\nrecheck_delay_ms = 0\n";
    let member = |id| Member {
        lease_ttl_ms: 2000,
        ..Member::new(id)
    };
    // `[validation]` is a table: it goes after the coordination keys.
    let mut started = Vec::new();
    for id in ["v1", "v2", "v3"] {
        let mut m = member(id);
        m.coordination = slow;
        started.push(m.start(&pair, &etcd).await);
    }
    let s = wait_status(&started[0], Duration::from_secs(10), "a leader", |s| {
        s["fleet"]["leader"].is_string()
    })
    .await;
    let leader_id = s["fleet"]["leader"].as_str().unwrap().to_string();
    let leader_ix = ["v1", "v2", "v3"]
        .iter()
        .position(|i| *i == leader_id)
        .unwrap();
    let asker = &started[(leader_ix + 1) % 3];
    let r = asker.post("/full/start").await;
    assert_eq!(r.status, 202, "{}", r.body);
    // Kill the leader once the run is under way and has recorded events.
    wait_status(asker, Duration::from_secs(30), "the run under way", |s| {
        s["validation_detail"]["full"]["tables"][0]["rows_checked"]
            .as_u64()
            .is_some_and(|n| n >= 3000)
    })
    .await;
    let leader = started.remove(leader_ix);
    drop(leader); // SIGKILL
    let survivors = started;
    let done = wait_status(
        &survivors[0],
        Duration::from_secs(90),
        "the run finished by the new leader",
        |s| s["validation"]["last_full"]["outcome"] == "completed",
    )
    .await;
    assert_ne!(done["fleet"]["leader"], leader_id, "{done:#}");
    // (rows between the last checkpoint and the kill are checked twice)
    let found = done["validation"]["last_full"]["found"].as_u64().unwrap();
    assert!((20..=40).contains(&found), "{done:#}");
    // The events, from every remaining member, are the same 20 rows.
    let mut lists = Vec::new();
    for m in &survivors {
        let r = m.get("/inconsistencies?limit=1000").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let mut ids: Vec<i64> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pk"]["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        lists.push(ids);
    }
    assert_eq!(lists[0], lists[1]);
    assert_eq!(
        lists[0],
        (0..20).map(|k| k * 1000 + 7).collect::<Vec<i64>>()
    );
}

/// `keep_serving`: a registered member that stops answering holds back
/// every switch (409 naming it), even once its lease expired, until an
/// operator evicts it; evicting a member whose lease is live is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_serving_members_block_switches_until_evicted() {
    let (etcd, pair) = tokio::join!(Etcd::start(), Pair::start());
    plant_sides(&pair).await;
    let member = |id| Member {
        lease_ttl_ms: 2000,
        switch_timeout_ms: 2000,
        coordination: "on_coordinator_loss = \"keep_serving\"\n",
        ..Member::new(id)
    };
    let a = member("k1").start(&pair, &etcd).await;
    let s = wait_status(&a, Duration::from_secs(10), "k1 leads", |s| {
        s["fleet"]["leader"] == "k1"
    })
    .await;
    assert_eq!(s["fleet"]["leader"], "k1");
    let b = member("k2").start(&pair, &etcd).await;
    wait_status(&a, Duration::from_secs(10), "2 members", |s| {
        s["fleet"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
    })
    .await;
    let r = a.post("/fleet/evict?member=k2").await;
    assert_eq!(r.status, 409, "a live member was evicted: {}", r.body);

    signal(b.pid(), "-STOP");
    // Once k2's lease is gone it is no longer a live member, but it is
    // still registered: the switch must not commit without it.
    wait_status(&a, Duration::from_secs(20), "k2's lease expired", |s| {
        s["fleet"]["members"]
            .as_array()
            .is_some_and(|m| m.len() == 1)
    })
    .await;
    let r = a.post("/dst_first?force=true").await;
    assert_eq!(
        r.status, 409,
        "committed without a registered member: {}",
        r.body
    );
    assert!(r.body.contains("k2"), "names the silent member: {}", r.body);
    assert_eq!(
        a.get("/status").await.json()["current_pattern"],
        "src_first"
    );
    assert_eq!(side_seen(&a).await, "source");

    let r = a.post("/fleet/evict?member=k2").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["evicted"], true, "{}", r.body);
    let r = a.post("/dst_first?force=true").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(side_seen(&a).await, "destination");

    // Resumed, k2 re-joins and follows the fleet.
    signal(b.pid(), "-CONT");
    wait_status(&b, Duration::from_secs(20), "k2 follows the fleet", |s| {
        s["current_pattern"] == "dst_first"
    })
    .await;
    assert_eq!(side_seen(&b).await, "destination");
}

/// `keep_serving` with etcd gone: reads and writes go on under the last
/// known pattern (never fenced), and the member re-joins when etcd is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_serving_members_keep_writing_while_etcd_is_down() {
    let (etcd, pair) = tokio::join!(Etcd::start(), Pair::start());
    let mut etcd = etcd;
    for db in [&pair.source, &pair.destination] {
        db.exec("CREATE TABLE k (id INT PRIMARY KEY)").await;
    }
    let a = Member {
        lease_ttl_ms: 2000,
        coordination: "on_coordinator_loss = \"keep_serving\"\n",
        ..Member::new("s1")
    }
    .start(&pair, &etcd)
    .await;
    let mut c = conn(&a).await;
    c.query_drop("INSERT INTO k VALUES (1)").await.unwrap();
    etcd.kill();
    // Well past the lease TTL plus fence_wait_ms: every write is answered.
    let until = Instant::now() + Duration::from_secs(5);
    let mut id = 2;
    while Instant::now() < until {
        c.query_drop(format!("INSERT INTO k VALUES ({id})"))
            .await
            .unwrap_or_else(|e| panic!("keep_serving write {id} failed: {e}"));
        id += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM k").await.unwrap();
    assert_eq!(n, Some(id - 1));
    assert!(a.get("/metrics").await.body.contains("cutover_fenced 0"));
    let dst: Vec<i64> = pair.destination.query("SELECT id FROM k ORDER BY id").await;
    assert_eq!(dst.len() as i64, id - 1, "the mirror got every write");

    etcd.restart().await;
    let r = a.post("/dst_first?force=true").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut r = r;
    while r.status != 200 {
        assert!(
            Instant::now() < deadline,
            "no switch after etcd came back: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        r = a.post("/dst_first?force=true").await;
    }
    c.query_drop(format!("INSERT INTO k VALUES ({id})"))
        .await
        .unwrap();
}
