//! Auto-promotion and auto-migrate against real MariaDB backends.
//!
//! The validator (issue 4) does not exist yet. The first tests run without
//! one, as a real deployment does today: nothing moves past `src_first`.
//! The later tests plug in `ScriptedValidator`, a stand-in that returns a
//! fixed report, to exercise the scheduler's rules (validation, quiet period,
//! inconsistencies, cancel); they say nothing about real data comparison.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cutover::control::{
    BoxFuture, ControlPlane, FullOutcome, FullRequest, FullRun, FullStarted, ValidationError,
    ValidationService,
};
use support::control::{config, Admin};
use support::Pair;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

async fn start(
    pair: &Pair,
    dir: &tempfile::TempDir,
    extra: &str,
    validator: Option<ScriptedValidator>,
) -> Admin {
    let cfg = config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.path().join("state.json"),
        extra,
    );
    let (mut cp, pattern): (ControlPlane, _) = ControlPlane::load(&cfg).unwrap();
    if let Some(v) = validator {
        cp = cp.with_validation(Arc::new(v));
    }
    Admin::serve(cp, pattern, None).await
}

fn outcome_is_not_running(s: &serde_json::Value) -> bool {
    s["auto_migrate"]["outcome"]
        .as_str()
        .is_some_and(|o| o != "running")
}

#[tokio::test]
async fn auto_migrate_without_a_validator_stops_at_the_first_validation() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = start(&pair, &dir, "", None).await;

    let r = admin.post("/auto-migrate", r#"{"step_wait_ms": 10}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["outcome"], "running");
    let s = admin
        .wait_status(WAIT, "auto-migrate to stop", outcome_is_not_running)
        .await;

    let run = &s["auto_migrate"];
    assert_eq!(run["outcome"], "failed", "{s:#}");
    let reason = run["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("full validation in src_first: validator not available"),
        "{reason}"
    );
    assert_eq!(run["current_step"], "full validation in src_first");
    assert_eq!(
        run["completed_steps"],
        serde_json::json!(["move to src_only", "move to src_first"])
    );
    assert!(s["migration_stats"]["last_error"]
        .as_str()
        .unwrap()
        .contains("validator not available"));
    assert_eq!(s["current_state"], "src_first");

    // It never goes further.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = admin.get("/status").await.json();
    assert_eq!(s["current_state"], "src_first");
    assert!(s["history"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["to"] != "dst_first"));
    admin.stop().await;
}

#[tokio::test]
async fn auto_promotion_does_not_fire_without_a_validation() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "enable_auto_promotion = true\npromotion_quiet_period_ms = 20";
    let admin = start(&pair, &dir, extra, None).await;
    for step in ["/src_only", "/src_first"] {
        assert_eq!(admin.post(step, "").await.status, 200);
    }
    // Many times the quiet period.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = admin.get("/status").await.json();
    assert_eq!(s["current_state"], "src_first", "{s:#}");
    assert_eq!(s["auto_promotion"]["enabled"], true);
    let waiting = s["auto_promotion"]["waiting_for"].as_str().unwrap();
    assert!(waiting.contains("no validator is available"), "{waiting}");
    admin.stop().await;
}

#[tokio::test]
async fn auto_migrate_refuses_to_start_past_src_first_and_cancel_needs_a_run() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = start(&pair, &dir, "initial_pattern = 'dst_first'", None).await;
    let r = admin.post("/auto-migrate", "").await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.error()
            .contains("starts from initial, src_only or src_first"),
        "{}",
        r.body
    );
    let r = admin.post("/auto-migrate/cancel", "").await;
    assert_eq!(r.status, 409);
    assert_eq!(r.error(), "auto-migrate is not running");
    admin.stop().await;
}

// ---- with a scripted stand-in validator ----

/// Returns a fixed report, or waits for `stop_full` when `blocks`.
struct ScriptedValidator {
    discrepancies: u64,
    blocks: bool,
    stop: std::sync::Mutex<CancellationToken>,
}

impl ScriptedValidator {
    fn clean() -> Self {
        Self::new(0, false)
    }

    fn new(discrepancies: u64, blocks: bool) -> Self {
        ScriptedValidator {
            discrepancies,
            blocks,
            stop: std::sync::Mutex::new(CancellationToken::new()),
        }
    }
}

impl ValidationService for ScriptedValidator {
    fn start_full(&self, req: FullRequest) -> BoxFuture<'_, Result<FullRun, ValidationError>> {
        let (discrepancies, blocks) = (self.discrepancies, self.blocks);
        let stop = CancellationToken::new();
        *self.stop.lock().unwrap() = stop.clone();
        Box::pin(async move {
            let done: BoxFuture<'static, FullOutcome> = Box::pin(async move {
                if blocks {
                    stop.cancelled().await;
                    return FullOutcome {
                        error: Some("validation cancelled".into()),
                        ..FullOutcome::default()
                    };
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                FullOutcome {
                    completed: true,
                    all_tables: true,
                    tables_checked: 1,
                    rows_checked: 10,
                    found: discrepancies,
                    ..FullOutcome::default()
                }
            });
            Ok(FullRun {
                started: FullStarted {
                    run_id: 1,
                    resumed: false,
                    tables: req.tables,
                    fix: req.fix,
                    note: None,
                },
                done,
            })
        })
    }

    fn stop_full(&self) -> BoxFuture<'_, ()> {
        self.stop.lock().unwrap().cancel();
        Box::pin(async {})
    }
}

fn time(v: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn auto_promotion_waits_for_a_clean_validation_and_the_quiet_period() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "enable_auto_promotion = true\npromotion_quiet_period_ms = 300";
    let admin = start(&pair, &dir, extra, Some(ScriptedValidator::clean())).await;
    for step in ["/src_only", "/src_first"] {
        assert_eq!(admin.post(step, "").await.status, 200);
    }
    let r = admin.post("/full/start", "").await;
    assert_eq!(r.status, 202, "{}", r.body);

    let s = admin
        .wait_status(WAIT, "promotion to dst_first", |s| {
            s["current_state"] == "dst_first"
        })
        .await;
    let promoted = s["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (promoted["trigger"].as_str(), promoted["forced"].as_bool()),
        (Some("auto"), Some(false))
    );
    let validated = time(&s["validation"]["last_full"]["finished_at"]);
    let waited = time(&promoted["time"]).duration_since(validated).unwrap();
    assert!(
        waited >= Duration::from_millis(290),
        "promoted after only {waited:?}"
    );
    assert_eq!(s["migration_stats"]["full_validation_runs"], 1);
    assert_eq!(admin.pattern.load(), cutover::pattern::Pattern::DstFirst);

    // The validation from src_first does not count for dst_first.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let s = admin.get("/status").await.json();
    assert_eq!(s["current_state"], "dst_first");
    let waiting = s["auto_promotion"]["waiting_for"].as_str().unwrap();
    assert!(
        waiting.contains("full validation started in dst_first"),
        "{waiting}"
    );

    assert_eq!(admin.post("/full/start", "").await.status, 202);
    admin
        .wait_status(WAIT, "promotion to dst_only", |s| {
            s["current_state"] == "dst_only"
        })
        .await;
    admin.stop().await;
}

#[tokio::test]
async fn an_inconsistency_after_the_validation_blocks_promotion() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "enable_auto_promotion = true\npromotion_quiet_period_ms = 200";
    let admin = start(&pair, &dir, extra, Some(ScriptedValidator::clean())).await;
    for step in ["/src_only", "/src_first"] {
        assert_eq!(admin.post(step, "").await.status, 200);
    }
    assert_eq!(admin.post("/full/start", "").await.status, 202);
    admin
        .wait_status(WAIT, "validation", |s| {
            !s["validation"]["last_full"].is_null()
        })
        .await;
    // The data path reports a failed mirrored write.
    admin
        .stats
        .double_write_failure
        .fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let s = admin.get("/status").await.json();
    assert_eq!(s["current_state"], "src_first", "{s:#}");
    let waiting = s["auto_promotion"]["waiting_for"].as_str().unwrap();
    assert!(waiting.contains("inconsistency was recorded"), "{waiting}");
    admin.stop().await;
}

#[tokio::test]
async fn auto_migrate_with_clean_validations_reaches_dst_only() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = start(&pair, &dir, "", Some(ScriptedValidator::clean())).await;
    assert_eq!(
        admin
            .post("/auto-migrate", r#"{"step_wait_ms": 10}"#)
            .await
            .status,
        202
    );
    let s = admin
        .wait_status(WAIT, "auto-migrate to finish", outcome_is_not_running)
        .await;
    assert_eq!(s["auto_migrate"]["outcome"], "succeeded", "{s:#}");
    assert_eq!(
        s["auto_migrate"]["completed_steps"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert_eq!(s["current_state"], "dst_only");
    assert_eq!(s["migration_stats"]["full_validation_runs"], 2);
    let triggers: Vec<&str> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers, vec!["auto"; 4]);
    admin.stop().await;
}

#[tokio::test]
async fn auto_migrate_never_proceeds_past_discrepancies() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let v = ScriptedValidator::new(3, false);
    let admin = start(&pair, &dir, "", Some(v)).await;
    assert_eq!(
        admin
            .post("/auto-migrate", r#"{"step_wait_ms": 10}"#)
            .await
            .status,
        202
    );
    let s = admin
        .wait_status(WAIT, "auto-migrate to stop", outcome_is_not_running)
        .await;
    assert_eq!(s["auto_migrate"]["outcome"], "failed");
    let reason = s["auto_migrate"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("found 3 discrepancies; not moving past src_first"),
        "{reason}"
    );
    assert_eq!(s["current_state"], "src_first");
    assert_eq!(s["migration_stats"]["data_discrepancies"], 3);
    admin.stop().await;
}

#[tokio::test]
async fn auto_migrate_can_be_cancelled_mid_validation() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let v = ScriptedValidator::new(0, true);
    let admin = start(&pair, &dir, "", Some(v)).await;
    assert_eq!(
        admin.post("/full/stop", "").await.status,
        409,
        "nothing to stop yet"
    );
    assert_eq!(
        admin
            .post("/auto-migrate", r#"{"step_wait_ms": 10}"#)
            .await
            .status,
        202
    );
    admin
        .wait_status(WAIT, "the validation step", |s| {
            s["auto_migrate"]["current_step"] == "full validation in src_first"
                && s["validation"]["full_running"] == true
        })
        .await;
    let again = admin.post("/auto-migrate", "").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.error(), "auto-migrate is already running");
    assert_eq!(
        admin.post("/full/start", "").await.status,
        409,
        "one full validation at a time"
    );

    let r = admin.post("/auto-migrate/cancel", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let s = admin
        .wait_status(WAIT, "auto-migrate to stop", outcome_is_not_running)
        .await;
    assert_eq!(s["auto_migrate"]["outcome"], "cancelled", "{s:#}");
    assert_eq!(s["current_state"], "src_first");
    assert_eq!(s["validation"]["full_running"], false);
    assert_eq!(admin.post("/auto-migrate/cancel", "").await.status, 409);
    admin.stop().await;
}
