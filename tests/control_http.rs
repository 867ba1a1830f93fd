//! The admin API over real TCP, against real MariaDB backends: every route,
//! every status code, every (from, to) move, and 100 concurrent moves.

mod support;

use cutover::control::admin::ROUTES;
use cutover::control::State;
use cutover::pattern::Pattern;
use support::control::{closed_port_url, config, Admin};
use support::Pair;

async fn admin_for(pair: &Pair, dir: &tempfile::TempDir, extra: &str) -> Admin {
    let cfg = config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.path().join("state.json"),
        extra,
    );
    Admin::start(&cfg).await
}

fn assert_agrees(admin: &Admin, status: &serde_json::Value) {
    let state: State = status["current_state"].as_str().unwrap().parse().unwrap();
    let pattern: Pattern = status["current_pattern"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        state.pattern(),
        pattern,
        "state and pattern disagree: {status:#}"
    );
    assert_eq!(
        admin.pattern.load(),
        pattern,
        "data path handle disagrees with /status"
    );
}

#[tokio::test]
async fn status_stats_health_and_moves_with_both_backends_up() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = admin_for(&pair, &dir, "").await;

    let r = admin.get("/status").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let s = r.json();
    assert_eq!(s["current_state"], "initial");
    assert_eq!(s["current_pattern"], "src_only");
    for side in ["source", "destination"] {
        let h = &s["pool_health"][side];
        assert_eq!(h["ok"], true, "{side}: {h}");
        assert!(h["latency_ms"].as_f64().unwrap() >= 0.0);
        assert!(h["error"].is_null());
    }
    for key in [
        "double_write_success",
        "double_write_failure",
        "client_connections",
    ] {
        assert!(
            s["pool_metrics"][key].is_number(),
            "pool_metrics.{key}: {s:#}"
        );
    }
    for key in [
        "start_time",
        "current_state",
        "full_validation_runs",
        "incr_validation_runs",
        "data_discrepancies",
        "last_error",
    ] {
        assert!(
            s["migration_stats"].get(key).is_some(),
            "migration_stats.{key}"
        );
    }
    assert!(s["uptime_seconds"].is_u64());
    assert_eq!(s["history"], serde_json::json!([]));
    assert_eq!(s["validation"]["available"], false);

    let stats = admin.get("/stats").await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json(), s["migration_stats"]);

    let health = admin.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    assert_eq!(health.json()["ok"], true);

    // A legal move answers 200 with the new status and moves the data path.
    let r = admin.post("/src_only", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    assert_eq!(s["current_state"], "src_only");
    assert_agrees(&admin, &s);
    let h = &s["history"][0];
    assert_eq!(
        (&h["from"], &h["to"], &h["trigger"], &h["forced"]),
        (
            &"initial".into(),
            &"src_only".into(),
            &"api".into(),
            &false.into()
        )
    );
    assert!(s["migration_stats"]["start_time"].is_string());

    // An illegal move is 409, explains itself, and changes nothing.
    let r = admin.post("/dst_only", "").await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.error()
            .contains("from src_only the legal moves are to src_first"),
        "{}",
        r.body
    );
    assert_eq!(admin.pattern.load(), Pattern::SrcOnly);

    // ...unless forced, which is recorded.
    let r = admin.post("/dst_only?force=true", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = r.json();
    assert_eq!(s["current_state"], "dst_only");
    assert_eq!(s["history"][1]["forced"], true);
    assert_agrees(&admin, &s);

    // Moving to where we are is a 200 no-op (forced or not), so scripts can retry.
    for path in ["/dst_only?force=true", "/dst_only"] {
        let r = admin.post(path, "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let s = r.json();
        assert_eq!(s["changed"], false, "{path}");
        assert_eq!(s["current_state"], "dst_only");
        assert_eq!(
            s["history"].as_array().unwrap().len(),
            2,
            "no history entry"
        );
    }

    let r = admin.post("/complete", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["current_state"], "completed");
    assert_eq!(admin.pattern.load(), Pattern::DstOnly);
    admin.stop().await;
}

#[tokio::test]
async fn every_from_to_pair_over_http() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = admin_for(&pair, &dir, "").await;
    let route = |s: State| match s {
        State::Completed => "/complete".to_string(),
        other => format!("/{other}"),
    };
    let targets = [
        State::SrcOnly,
        State::SrcFirst,
        State::DstFirst,
        State::DstOnly,
        State::Completed,
    ];
    // From `initial` (only a fresh install is there): only src_only is legal.
    for to in targets.into_iter().rev() {
        let r = admin.post(&route(to), "").await;
        let want = if to == State::SrcOnly { 200 } else { 409 };
        assert_eq!(r.status, want, "initial -> {to}: {}", r.body);
    }
    let mut checked = targets.len();
    for from in targets {
        for to in targets {
            let current = admin.get("/status").await.json()["current_state"].clone();
            if current != from.as_str() {
                let r = admin.post(&format!("{}?force=true", route(from)), "").await;
                assert_eq!(r.status, 200, "forcing to {from}: {}", r.body);
            }
            let r = admin.post(&route(to), "").await;
            let legal =
                from != to && cutover::control::state_machine::LEGAL_MOVES.contains(&(from, to));
            // No validator here: every guarded move is refused with its blockers.
            let guarded = cutover::control::guard::is_guarded(from.pattern(), to.pattern());
            let moves = legal && !guarded;
            let want_state = if moves { to } else { from };
            let want = if moves || from == to { 200 } else { 409 };
            assert_eq!(r.status, want, "{from} -> {to}: {}", r.body);
            if from == to {
                assert_eq!(r.json()["changed"], false, "{from} -> {to}");
            } else if legal && guarded {
                assert!(
                    r.error().contains("no validator is available"),
                    "{from} -> {to}: {}",
                    r.body
                );
                assert!(r.json()["blockers"].is_array(), "{}", r.body);
            }
            assert_eq!(admin.pattern.load(), want_state.pattern(), "{from} -> {to}");
            checked += 1;
        }
    }
    assert_eq!(
        checked, 30,
        "5 moves from initial + 25 between the other states"
    );
    admin.stop().await;
}

#[tokio::test]
async fn hundred_concurrent_moves_leave_state_and_pattern_agreeing() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = admin_for(&pair, &dir, "").await;
    let paths = ["/src_only", "/src_first", "/dst_first", "/dst_only"];
    let mut tasks = Vec::new();
    for i in 0..100 {
        // Half forced (always legal unless already there), half not.
        let path = format!(
            "{}{}",
            paths[(i * 7) % paths.len()],
            if i % 2 == 0 { "?force=true" } else { "" }
        );
        let addr = admin.addr;
        tasks.push(tokio::spawn(async move {
            support::control::request(addr, "POST", &path, "", None).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert!(
            r.status == 200 || r.status == 409,
            "{}: {}",
            r.status,
            r.body
        );
        if r.status == 200 {
            let s = r.json();
            if s["changed"] == true {
                ok += 1;
            }
            let state: State = s["current_state"].as_str().unwrap().parse().unwrap();
            assert_eq!(s["current_pattern"], state.pattern().as_str(), "{s:#}");
        }
    }
    assert!(ok > 0, "no move succeeded");
    // (a 200 with `changed: false` is a no-op: already there)
    let s = admin.get("/status").await.json();
    assert_agrees(&admin, &s);
    assert_eq!(
        s["history"].as_array().unwrap().len(),
        ok,
        "one history entry per 200"
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap())
            .unwrap();
    assert_eq!(file["state"], s["current_state"], "state file disagrees");
    admin.stop().await;
}

#[tokio::test]
async fn unreachable_backend_refuses_the_move_with_503() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The destination URL points at a closed port.
    let cfg = config(
        &pair.source.url("shop"),
        &closed_port_url(),
        &dir.path().join("state.json"),
        "",
    );
    let admin = Admin::start(&cfg).await;
    // src_only needs only the source.
    assert_eq!(admin.post("/src_only", "").await.status, 200);
    let r = admin.post("/src_first", "").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.error().contains("destination unreachable"), "{}", r.body);
    let s = admin.get("/status").await.json();
    assert_eq!(s["current_state"], "src_only", "the move must not be made");
    assert_agrees(&admin, &s);
    assert_eq!(s["pool_health"]["destination"]["ok"], false);
    assert!(s["pool_health"]["destination"]["error"].is_string());
    // force does not skip the health check.
    assert_eq!(admin.post("/dst_first?force=true", "").await.status, 503);
    // /health: the current pattern (src_only) needs only the source, which answers.
    assert_eq!(admin.get("/health").await.status, 200);
    admin.stop().await;

    // With the source down, /health is 503 and names it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &closed_port_url(),
        &pair.destination.url("shop"),
        &dir.path().join("state.json"),
        "",
    );
    let admin = Admin::start(&cfg).await;
    let r = admin.get("/health").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.error().contains("source unreachable"), "{}", r.body);
    admin.stop().await;
}

#[tokio::test]
async fn bad_requests_unknown_paths_and_wrong_methods() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = admin_for(&pair, &dir, "").await;

    let r = admin.get("/nope").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("/nope"));

    let r = admin.get("/src_first").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    let r = admin.post("/status", "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));

    let cases = [
        ("/auto-migrate", "{not json", "invalid JSON body"),
        (
            "/auto-migrate",
            r#"{"step_wait": 5}"#,
            "unknown field `step_wait`",
        ),
        (
            "/auto-migrate",
            r#"{"step_wait_ms": "soon"}"#,
            "invalid type",
        ),
        (
            "/auto-migrate",
            r#"{"step_wait_ms": 99999999999}"#,
            "step_wait_ms",
        ),
        ("/incr/start", "", "needs a JSON body"),
        ("/incr/start", r#"{"utime": 1}"#, "missing field `interval`"),
        ("/incr/start", r#"{"utime": 1, "interval": 0}"#, "interval"),
        ("/full/start", r#"{"tables": "orders"}"#, "invalid type"),
        ("/full/start", r#"{"tables": [""]}"#, "tables"),
        ("/src_first", r#"{"force": true}"#, "unknown field `force`"),
        ("/src_first?force=maybe", "", "query parameter `force`"),
        (
            "/src_first?forse=true",
            "",
            "unknown query parameter `forse`",
        ),
    ];
    for (path, body, needle) in cases {
        let r = admin.post(path, body).await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
        assert!(r.error().contains(needle), "{path} {body}: {}", r.body);
    }
    // Nothing above moved anything.
    assert_eq!(
        admin.get("/status").await.json()["current_state"],
        "initial"
    );

    let big = "x".repeat(70 * 1024);
    assert_eq!(admin.post("/auto-migrate", &big).await.status, 413);
    admin.stop().await;
}

#[tokio::test]
async fn validation_routes_answer_501_without_a_validator() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = admin_for(&pair, &dir, "").await;
    for (path, body) in [
        ("/full/start", ""),
        ("/full/start", r#"{"tables": ["orders"]}"#),
        ("/full/stop", ""),
        (
            "/incr/start",
            r#"{"utime": 1700000000000, "interval": 1000}"#,
        ),
        ("/incr/stop", ""),
        ("/fix", ""),
    ] {
        let r = admin.post(path, body).await;
        assert_eq!(r.status, 501, "{path}: {}", r.body);
        assert!(
            r.error().contains("validator not available"),
            "{path}: {}",
            r.body
        );
    }
    admin.stop().await;
}

#[tokio::test]
async fn the_admin_token_is_required_when_set() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = admin_for(&pair, &dir, "admin_token = 'let-me-in'").await;
    for (method, path) in [("GET", "/status"), ("POST", "/src_only"), ("GET", "/nope")] {
        let r = admin.request(method, path, "", None).await;
        assert_eq!(r.status, 401, "{method} {path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = admin.request(method, path, "", Some("guess")).await;
        assert_eq!(r.status, 401, "{method} {path} with a wrong token");
    }
    assert_eq!(
        admin.get("/status").await.json()["current_state"],
        "initial"
    );
    assert_eq!(admin.post("/src_only", "").await.status, 200);
    admin.stop().await;
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = admin_for(&pair, &dir, "").await;
    let r = admin.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let committed: serde_json::Value =
        serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    assert_eq!(
        doc, committed,
        "served document differs from docs/openapi.json"
    );
    for (path, method, _) in ROUTES {
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(op.is_object(), "{method} {path} missing from openapi.json");
        assert!(
            op["responses"].is_object(),
            "{method} {path} has no responses"
        );
    }
    let documented = doc["paths"].as_object().unwrap().len();
    assert_eq!(
        documented,
        ROUTES.len(),
        "openapi.json documents routes that do not exist"
    );
    admin.stop().await;
}
