//! The validation routes of the admin API with the real validator plugged
//! in (as `cutover serve` does): full run, inconsistencies, fix, incremental.

mod support;

use std::time::Duration;

use support::control::{config, Admin};
use support::Pair;

async fn wait_last_full(admin: &Admin, before: &serde_json::Value) -> serde_json::Value {
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = admin.get("/status").await.json();
        let last = s["validation_detail"]["last_full"].clone();
        if s["validation_detail"]["full"].is_null() && !last.is_null() && &last["run_id"] != before
        {
            return last;
        }
    }
    panic!("full validation did not finish");
}

#[tokio::test]
async fn full_run_lists_inconsistencies_and_fix_repairs_them() {
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10), utime BIGINT NOT NULL DEFAULT 0)";
    pair.source.exec(ddl).await;
    pair.destination.exec(ddl).await;
    pair.source
        .exec("INSERT INTO t VALUES (1,'a',10),(2,'b',10),(3,'c',10)")
        .await;
    pair.destination
        .exec("INSERT INTO t VALUES (1,'a',10),(2,'DIFF',10),(4,'extra',10)")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.path().join("state.json"),
        "[validation]\nrecheck_delay_ms = 10",
    );
    let admin = Admin::start_with_validation(&cfg).await;
    assert_eq!(admin.post("/src_only", "").await.status, 200);

    let r = admin.post("/full/start", r#"{"tables": ["t"]}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let last = wait_last_full(&admin, &serde_json::Value::Null).await;
    assert_eq!(last["outcome"], "completed", "{last}");
    assert_eq!(last["totals"]["neq"], 1);
    assert_eq!(last["totals"]["target_missing"], 1);
    assert_eq!(last["totals"]["base_missing"], 1);
    let stats = admin.get("/stats").await.json();
    assert_eq!(stats["full_validation_runs"], 1, "{stats}");

    let open = admin.get("/inconsistencies?status=open").await;
    assert_eq!(open.status, 200);
    let events = open.json();
    let mut kinds: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["base_missing", "neq", "target_missing"]);
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["table"] == "t" && e["direction"] == "SRC"));
    let page = admin.get("/inconsistencies?limit=1").await.json();
    assert_eq!(page.as_array().unwrap().len(), 1);
    let first_id = page[0]["id"].as_u64().unwrap();
    let after = admin
        .get(&format!("/inconsistencies?after={first_id}"))
        .await
        .json();
    assert_eq!(after.as_array().unwrap().len(), 2);
    assert_eq!(admin.get("/inconsistencies?status=nope").await.status, 400);
    assert_eq!(admin.get("/inconsistencies?limit=0").await.status, 400);
    assert_eq!(admin.get("/inconsistencies?bogus=1").await.status, 400);

    let fix = admin.post("/fix", "").await;
    assert_eq!(fix.status, 200, "{}", fix.body);
    let dst: Vec<(i32, String)> = pair
        .destination
        .query("SELECT id, v FROM t ORDER BY id")
        .await;
    assert_eq!(dst, vec![(1, "a".into()), (2, "b".into()), (3, "c".into())]);
    let open = admin.get("/inconsistencies?status=open").await.json();
    assert_eq!(open.as_array().unwrap().len(), 0, "{open}");
    let fixed = admin.get("/inconsistencies?status=fixed").await.json();
    assert_eq!(fixed.as_array().unwrap().len(), 3, "{fixed}");

    // incremental: start tailing, then stop
    let r = admin
        .post("/incr/start", r#"{"utime": 0, "interval": 200}"#)
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = admin.post("/incr/stop", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = admin.get("/status").await.json();
    // run counters have one home: migration_stats (persisted), see docs/ADMIN.md
    assert!(
        s["migration_stats"]["incr_validation_runs"]
            .as_u64()
            .unwrap()
            >= 1,
        "{s}"
    );
    admin.stop().await;
}

#[tokio::test]
async fn auto_promotion_moves_on_after_a_real_clean_validation() {
    let pair = Pair::start().await;
    let ddl = "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))";
    for db in [&pair.source, &pair.destination] {
        db.exec(ddl).await;
        db.exec("INSERT INTO t VALUES (1,'a'),(2,'b')").await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.path().join("state.json"),
        "enable_auto_promotion = true\npromotion_quiet_period_ms = 300",
    );
    let admin = Admin::start_with_validation(&cfg).await;
    for step in ["/src_only", "/src_first"] {
        assert_eq!(admin.post(step, "").await.status, 200);
    }
    // no validation yet: it must not promote
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        admin.get("/status").await.json()["current_state"],
        "src_first"
    );
    let r = admin.post("/full/start", "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    let mut state = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = admin.get("/status").await.json()["current_state"]
            .as_str()
            .unwrap()
            .to_string();
        if state == "dst_first" {
            break;
        }
    }
    assert_eq!(
        state, "dst_first",
        "promoted after a clean validation and the quiet period"
    );
    let history = admin.get("/status").await.json()["history"].clone();
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["trigger"], "auto", "{last}");

    // a difference blocks the next promotion
    pair.source
        .exec("UPDATE t SET v = 'changed' WHERE id = 2")
        .await;
    let r = admin.post("/full/start", "").await;
    assert_eq!(r.status, 202, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        admin.get("/status").await.json()["current_state"],
        "dst_first"
    );
    admin.stop().await;
}
