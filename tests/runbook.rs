//! Issue 10, the operator's documented path, finding by finding, against
//! real MariaDB pairs with the demo's own schema (`deploy/sample/shop.sql`,
//! foreign keys included) plus a self-referencing table and an FK cycle.

mod support;

use std::path::Path;
use std::time::Duration;

use cutover::config::Config;
use serde_json::{json, Value};
use support::control::{config, Admin};
use support::proxy::TestProxy;
use support::{MariaDb, Pair};
use tokio::process::Command;

const SHOP: &str = include_str!("../deploy/sample/shop.sql");

/// Tables beyond the demo's: a self-reference whose child rows sort before
/// their parent, and a two-table cycle (inserted with checks off, as a dump does).
const EXTRA_SCHEMA: &str = "CREATE TABLE employees (id INT PRIMARY KEY, name VARCHAR(20), \
     manager_id INT NULL, CONSTRAINT fk_mgr FOREIGN KEY (manager_id) REFERENCES employees (id)); \
     CREATE TABLE teams (id INT PRIMARY KEY, lead_id INT NULL); \
     CREATE TABLE members (id INT PRIMARY KEY, team_id INT NOT NULL, \
     CONSTRAINT fk_team FOREIGN KEY (team_id) REFERENCES teams (id)); \
     ALTER TABLE teams ADD CONSTRAINT fk_lead FOREIGN KEY (lead_id) REFERENCES members (id);";
const EXTRA_DATA: &str = "INSERT INTO employees VALUES (50, 'boss', NULL); \
     INSERT INTO employees VALUES (1, 'ann', 50), (2, 'bob', 1), (3, 'cy', 2); \
     SET foreign_key_checks = 0; \
     INSERT INTO teams VALUES (1, 7), (2, 8); INSERT INTO members VALUES (7, 1), (8, 2), (9, 1); \
     SET foreign_key_checks = 1;";
const TABLES: [&str; 7] = [
    "customers",
    "employees",
    "members",
    "order_items",
    "orders",
    "products",
    "teams",
];

/// Source: the demo schema and data; destination: the schema only.
async fn shop(pair: &Pair) {
    let (schema, _) = SHOP.split_once("\n-- @@DATA@@").unwrap();
    pair.source.exec(SHOP).await;
    pair.source.exec(EXTRA_SCHEMA).await;
    pair.source.exec(EXTRA_DATA).await;
    pair.destination.exec(schema).await;
    pair.destination.exec(EXTRA_SCHEMA).await;
}

async fn checksums(db: &MariaDb) -> Vec<(String, Option<i64>)> {
    db.query(&format!("CHECKSUM TABLE {}", TABLES.join(", ")))
        .await
}

async fn assert_sides_equal(pair: &Pair) {
    let (s, d) = (
        checksums(&pair.source).await,
        checksums(&pair.destination).await,
    );
    assert_eq!(s, d, "CHECKSUM TABLE differs");
    let rows: Vec<i64> = pair
        .destination
        .query("SELECT COUNT(*) FROM order_items")
        .await;
    assert!(rows[0] > 50, "the destination got the rows: {rows:?}");
}

fn cfg(pair: &Pair, dir: &Path, extra: &str) -> Config {
    config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.join("state.json"),
        extra,
    )
}

/// Write `cfg` as TOML for the CLI (the keys these tests use).
fn write_toml(pair: &Pair, dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("cutover.toml");
    let text = format!(
        "state_file = '{}'\ndata_dir = '{}'\n{extra}\n[source]\nurl = '{}'\n[destination]\nurl = '{}'\n",
        dir.join("state.json").display(),
        dir.display(),
        pair.source.url("shop"),
        pair.destination.url("shop"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .arg("validate")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("CUTOVER_LOG", "warn")
        .output()
        .await
        .expect("run cutover validate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn post_ok(admin: &Admin, path: &str, body: &str) -> Value {
    let r = admin.post(path, body).await;
    assert!(
        r.status == 200 || r.status == 202,
        "{path}: {} {}",
        r.status,
        r.body
    );
    r.json()
}

/// Start a full run with `body` and wait until the scheduler recorded it.
async fn full_run(admin: &Admin, body: &str) -> Value {
    let before = admin.get("/status").await.json()["validation"]["last_full"].clone();
    let started = post_ok(admin, "/full/start", body).await;
    wait_recorded(admin, &before).await;
    let s = admin.get("/status").await.json();
    assert_eq!(
        s["validation_detail"]["last_full"]["run_id"], started["run_id"],
        "{s:#}"
    );
    s
}

async fn wait_recorded(admin: &Admin, before: &Value) {
    admin
        .wait_status(Duration::from_secs(60), "a full validation", |s| {
            s["validation"]["full_running"] == false && &s["validation"]["last_full"] != before
        })
        .await;
}

fn open_gauge(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with("cutover_inconsistencies_open "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cutover_inconsistencies_open in:\n{metrics}"))
}

// ---- 1 + 2: the CLI takes the authority from the persisted state; one writer per data_dir

#[tokio::test]
async fn cli_in_dst_first_keeps_the_destinations_value_and_refuses_a_running_servers_data_dir() {
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1, 'old'), (2, 'x');";
    tokio::join!(pair.source.exec(ddl), pair.destination.exec(ddl));
    let dir = tempfile::tempdir().unwrap();
    let toml = write_toml(&pair, dir.path(), "initial_pattern = 'src_only'");
    let cfg = Config::load(&toml, &Default::default()).unwrap();
    let admin = Admin::start_with_validation(&cfg).await;
    post_ok(&admin, "/src_only", "").await;
    post_ok(&admin, "/src_first", "").await;
    full_run(&admin, "").await;
    post_ok(&admin, "/dst_first", "").await;

    // 2: while the server runs, the CLI refuses: one writer per data_dir.
    let events = dir.path().join("inconsistencies.jsonl");
    let before = std::fs::read_to_string(&events).unwrap_or_default();
    let (code, out, err) = cli(&toml, &["--fix"]).await;
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(err.contains("in use by another cutover process"), "{err}");
    assert!(err.contains("cutover ctl validate"), "{err}");
    assert_eq!(std::fs::read_to_string(&events).unwrap_or_default(), before);

    // The server alone writes the event log: ids are unique.
    pair.source
        .exec("UPDATE t SET v = 'srcdiff' WHERE id = 2")
        .await;
    full_run(&admin, "").await;
    admin.stop().await;

    // 1: a destination row changed in dst_first; the CLI (server stopped)
    // reads dst_first from the state file: base DST, the newer value stays.
    pair.destination
        .exec("UPDATE t SET v = 'newer' WHERE id = 1")
        .await;
    let (code, out, err) = cli(&toml, &["--fix"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("(base DST)"), "{out}");
    let dst: Vec<(i32, String)> = pair
        .destination
        .query("SELECT id, v FROM t ORDER BY id")
        .await;
    let src: Vec<(i32, String)> = pair.source.query("SELECT id, v FROM t ORDER BY id").await;
    assert_eq!(dst, vec![(1, "newer".into()), (2, "x".into())]);
    assert_eq!(src, dst, "the source was repaired from the destination");

    // --pattern may not contradict the persisted state; no state: refused.
    let (code, _, err) = cli(&toml, &["--pattern", "src_first"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("contradicts the persisted migration state dst_first"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("state.json")).unwrap();
    let (code, _, err) = cli(&toml, &[]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no migration state"), "{err}");

    let text = std::fs::read_to_string(&events).unwrap();
    let mut ids: Vec<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["event"]["id"].as_u64())
        .collect();
    assert!(ids.len() >= 2, "{text}");
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "event ids are unique: {text}");
}

// ---- 3 + 4: backfill and repair on a schema with foreign keys, over HTTP

#[tokio::test]
async fn backfill_with_foreign_keys_through_full_start_fix() {
    let pair = Pair::start().await;
    shop(&pair).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start_with_validation(&cfg(&pair, dir.path(), "")).await;
    post_ok(&admin, "/src_only", "").await;
    post_ok(&admin, "/src_first", "").await;

    // unknown tables: 400 naming them, nothing starts
    let r = admin
        .post("/full/start", r#"{"tables": ["orders", "nope", "ghost"]}"#)
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.error().contains("nope, ghost"), "{}", r.body);
    assert_eq!(
        admin.get("/status").await.json()["validation"]["full_running"],
        false
    );

    let s = full_run(&admin, r#"{"fix": true}"#).await;
    let last = &s["validation_detail"]["last_full"];
    assert_eq!(last["outcome"], "completed", "{last:#}");
    assert_eq!(last["remaining"], 0, "{last:#}");
    assert!(last["found"].as_u64().unwrap() > 100, "{last:#}");
    assert_sides_equal(&pair).await;
    // one definition each: the scheduler's and the validator's views agree
    assert_eq!(s["validation"]["last_full"]["discrepancies"], 0);
    assert_eq!(s["validation"]["last_full"]["found"], last["found"]);
    assert_eq!(s["migration_stats"]["data_discrepancies"], 0);
    assert_eq!(s["migration_stats"]["full_validation_runs"], 1);
    let again = full_run(&admin, "").await;
    assert_eq!(again["validation_detail"]["last_full"]["found"], 0);
    admin.stop().await;
}

#[tokio::test]
async fn repair_with_foreign_keys_through_fix_and_auto_fix() {
    let pair = Pair::start().await;
    shop(&pair).await;
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start_with_validation(&cfg(&pair, dir.path(), "")).await;
    post_ok(&admin, "/src_only", "").await;
    // a run without fix records every missing row as an open event...
    let s = full_run(&admin, "").await;
    let last = &s["validation_detail"]["last_full"];
    let found = last["found"].as_u64().unwrap();
    assert!(found > 100, "{last:#}");
    assert_eq!(
        found,
        last["events_recorded"].as_u64().unwrap()
            + last["events_dropped"].as_u64().unwrap()
            + last["events_already_open"].as_u64().unwrap(),
        "{last:#}"
    );
    assert_eq!(s["open_inconsistencies"], found);
    assert_eq!(s["validation"]["last_full"]["discrepancies"], found);
    assert_eq!(
        open_gauge(&admin.get("/metrics").await.body),
        found as f64,
        "gauge up"
    );
    // ...and /fix repairs them in table order (order_items before orders).
    let fix = post_ok(&admin, "/fix", "").await;
    assert_eq!(fix["failed"], 0, "{fix:#}");
    assert_eq!(fix["fixed"], found, "{fix:#}");
    assert_sides_equal(&pair).await;
    assert_eq!(
        open_gauge(&admin.get("/metrics").await.body),
        0.0,
        "gauge down"
    );
    assert_eq!(admin.get("/status").await.json()["open_inconsistencies"], 0);
    admin.stop().await;

    // auto_fix + /full/start on a fresh destination
    let pair = Pair::start().await;
    shop(&pair).await;
    let dir = tempfile::tempdir().unwrap();
    let admin =
        Admin::start_with_validation(&cfg(&pair, dir.path(), "[validation]\nauto_fix = true"))
            .await;
    let s = full_run(&admin, "").await;
    assert_eq!(s["validation_detail"]["last_full"]["outcome"], "completed");
    assert_eq!(s["validation"]["last_full"]["discrepancies"], 0);
    assert_sides_equal(&pair).await;
    admin.stop().await;
}

#[tokio::test]
async fn backfill_with_foreign_keys_through_the_cli() {
    let pair = Pair::start().await;
    shop(&pair).await;
    let dir = tempfile::tempdir().unwrap();
    let toml = write_toml(&pair, dir.path(), "");
    cutover::control::StateStore::save(
        &cutover::control::FileStateStore::new(dir.path().join("state.json")),
        &cutover::control::PersistedState::fresh(cutover::control::State::SrcFirst),
    )
    .unwrap();
    let (code, out, err) = cli(&toml, &["--fix"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("(base SRC)"), "{out}");
    assert_sides_equal(&pair).await;
    let (code, out, _) = cli(&toml, &[]).await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test]
async fn a_capped_run_still_converges_and_a_resume_says_what_it_does() {
    let pair = Pair::start().await;
    let fill = "CREATE TABLE a (id INT PRIMARY KEY, v INT); INSERT INTO a SELECT seq, seq FROM seq_1_to_3000; \
                CREATE TABLE b (id INT PRIMARY KEY, v INT); INSERT INTO b SELECT seq, seq FROM seq_1_to_100;";
    tokio::join!(pair.source.exec(fill), pair.destination.exec(fill));
    // 40 differences, 5 events allowed per run
    pair.destination
        .exec("UPDATE a SET v = 0 WHERE id % 75 = 0")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[validation]\nmax_events_per_run = 5\nrecheck_delay_ms = 0";
    let admin = Admin::start_with_validation(&cfg(&pair, dir.path(), extra)).await;
    let s = full_run(&admin, "").await;
    let last = &s["validation_detail"]["last_full"];
    assert_eq!(
        (last["found"].as_u64(), last["events_recorded"].as_u64()),
        (Some(40), Some(5))
    );
    let fix = post_ok(&admin, "/fix", "").await;
    assert_eq!(fix["fixed"], 5, "{fix:#}");
    assert_eq!(fix["unrecorded_tables"], json!(["a"]), "{fix:#}");
    assert_eq!(fix["rescan"]["fix"], true, "{fix:#}");
    assert_eq!(fix["rescan"]["tables"], json!(["a"]), "{fix:#}");
    wait_recorded(&admin, &s["validation"]["last_full"]).await;
    let s = full_run(&admin, "").await;
    assert_eq!(s["validation_detail"]["last_full"]["found"], 0, "converged");

    // A stopped run over `a`, then a start asking for `b`: it resumes `a` and says so.
    let slow =
        "[validation]\nmax_rows_per_second = 500\nchunk_max_rows = 100\nchunk_min_rows = 100";
    admin.stop().await;
    let admin = Admin::start_with_validation(&cfg(&pair, dir.path(), slow)).await;
    let r = post_ok(&admin, "/full/start", r#"{"tables": ["a"]}"#).await;
    assert_eq!(r["resumed"], false);
    tokio::time::sleep(Duration::from_millis(400)).await;
    post_ok(&admin, "/full/stop", "").await;
    admin
        .wait_status(Duration::from_secs(10), "the run to stop", |s| {
            s["validation"]["full_running"] == false
        })
        .await;
    let r = post_ok(&admin, "/full/start", r#"{"tables": ["b"]}"#).await;
    assert_eq!(r["resumed"], true, "{r:#}");
    assert_eq!(r["tables"], json!(["a"]), "{r:#}");
    let note = r["note"].as_str().unwrap();
    assert!(
        note.contains("the tables asked for (b)") && note.contains("restart"),
        "{note}"
    );
    post_ok(&admin, "/full/stop", "").await;
    admin
        .wait_status(Duration::from_secs(10), "the run to stop", |s| {
            s["validation"]["full_running"] == false
        })
        .await;
    let r = post_ok(
        &admin,
        "/full/start",
        r#"{"tables": ["b"], "restart": true}"#,
    )
    .await;
    assert_eq!(
        (r["resumed"].clone(), r["tables"].clone()),
        (json!(false), json!(["b"]))
    );
    assert!(r["note"].is_null());
    admin.stop().await;
}

// ---- 5 + 6 + 7: the authority-move guard, idempotent moves, counts

#[tokio::test]
async fn authority_moves_are_guarded_until_a_clean_validation() {
    let pair = Pair::start().await;
    shop(&pair).await;
    // a trigger on the destination makes one mirrored write fail (a real mirror failure)
    pair.destination
        .exec(
            "CREATE TRIGGER boom BEFORE INSERT ON customers FOR EACH ROW \
             IF NEW.name = 'boom' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'; END IF",
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = cfg(&pair, dir.path(), "");
    let admin = Admin::start_with_validation(&cfg).await;
    let mut proxy_cfg = cfg.clone();
    proxy_cfg.listen = "127.0.0.1:0".into();
    let proxy = TestProxy::attach(proxy_cfg, admin.pattern.clone(), admin.stats.clone()).await;

    post_ok(&admin, "/src_only", "").await;
    let s = post_ok(&admin, "/src_first", "").await;
    assert_eq!(s["changed"], true);
    // 6: the same move again is a 200 no-op
    let s = post_ok(&admin, "/src_first", "").await;
    assert_eq!(s["changed"], false);
    assert_eq!(s["history"].as_array().unwrap().len(), 2);

    // 5: no backfill, no validation: refused, naming what is missing
    let r = admin.post("/dst_first", "").await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.error().contains("full validation started in src_first"),
        "{}",
        r.body
    );
    let s = admin.get("/status").await.json();
    let next = |s: &Value, to: &str| {
        s["next_moves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["to"] == to)
            .cloned()
            .unwrap_or_else(|| panic!("no next move to {to}: {s:#}"))
    };
    let m = next(&s, "dst_first");
    assert_eq!(
        (m["allowed"].clone(), m["forced_only"].clone()),
        (json!(false), json!(true))
    );
    assert!(!m["blockers"].as_array().unwrap().is_empty());
    assert_eq!(next(&s, "src_only")["allowed"], true);
    assert_eq!(s["current_pattern"], "src_first");

    // backfill + a clean validation: allowed
    full_run(&admin, r#"{"fix": true}"#).await;
    full_run(&admin, "").await;
    assert_eq!(
        next(&admin.get("/status").await.json(), "dst_first")["allowed"],
        true
    );

    // a mirror failure after the validation started blocks again
    let mut c = proxy.conn().await;
    use mysql_async::prelude::Queryable;
    c.query_drop(
        "INSERT INTO customers (id, email, name, city, utime) VALUES (9001, 'b@x', 'boom', 'X', 1)",
    )
    .await
    .unwrap();
    drop(c);
    assert!(proxy.stats().double_write_failure >= 1);
    let r = admin.post("/dst_first", "").await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.error().contains("mirror failures"), "{}", r.body);
    assert!(!r.json()["blockers"].as_array().unwrap().is_empty());

    // the operator removes the cause and repairs; then the move is allowed
    pair.destination.exec("DROP TRIGGER boom").await;
    full_run(&admin, r#"{"fix": true}"#).await;
    let s = post_ok(&admin, "/dst_first", "").await;
    assert_eq!(s["current_state"], "dst_first");
    let h = s["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(h["forced"], false, "{h}");
    assert!(h.get("overridden").is_none(), "{h}");
    assert_sides_equal(&pair).await;

    // dst_first -> dst_only stops mirroring to the source: guarded; force overrides and is recorded
    let r = admin.post("/dst_only", "").await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.error().contains("full validation started in dst_first"),
        "{}",
        r.body
    );
    let s = post_ok(&admin, "/dst_only?force=true", "").await;
    let h = s["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(h["forced"], true, "{h}");
    assert!(
        h["overridden"][0]
            .as_str()
            .unwrap()
            .contains("full validation started in dst_first"),
        "{h}"
    );
    proxy.stop().await;
    admin.stop().await;
}

// ---- 4 + 7: incremental with fix over HTTP; a failed run has no discrepancy count

#[tokio::test]
async fn incremental_fix_over_http_and_a_failed_run_reports_no_count() {
    let mut pair = Pair::start().await;
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10), utime BIGINT NOT NULL); \
               INSERT INTO t VALUES (1, 'a', 100), (2, 'b', 100);";
    tokio::join!(pair.source.exec(ddl), pair.destination.exec(ddl));
    pair.destination
        .exec("UPDATE t SET v = 'x' WHERE id = 2")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::start_with_validation(&cfg(
        &pair,
        dir.path(),
        "[validation]\nrecheck_delay_ms = 0",
    ))
    .await;
    let r = admin
        .post(
            "/incr/start",
            r#"{"utime": 0, "interval": 100, "fix": true}"#,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.json()["run_id"].is_u64(), "{}", r.body);
    let mut dst: Vec<(i32, String)> = Vec::new();
    for _ in 0..100 {
        dst = pair
            .destination
            .query("SELECT id, v FROM t ORDER BY id")
            .await;
        if dst[1].1 == "b" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        dst,
        vec![(1, "a".into()), (2, "b".into())],
        "repaired by the incremental run"
    );
    post_ok(&admin, "/incr/stop", "").await;
    assert_eq!(admin.get("/stats").await.json()["incr_validation_runs"], 1);

    let s = full_run(&admin, "").await;
    assert_eq!(s["migration_stats"]["data_discrepancies"], 0);
    // A run that fails (the destination is down) says so; its count is unknown, not 0,
    // and the last completed run's number stands.
    pair.destination
        .exec("UPDATE t SET v = 'y' WHERE id = 1")
        .await;
    pair.destination.kill();
    let s = full_run(&admin, "").await;
    let last = &s["validation"]["last_full"];
    assert_eq!(last["outcome"], "failed", "{last:#}");
    assert!(last["discrepancies"].is_null(), "{last:#}");
    assert!(last["error"].is_string(), "{last:#}");
    assert_eq!(s["migration_stats"]["full_validation_runs"], 1);
    pair.destination.restart().await;
    admin.stop().await;
}
