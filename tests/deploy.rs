//! The shipping artefacts under `deploy/`, checked against the code so they
//! cannot rot: the Grafana dashboard and the alert rules against a running
//! cutover's `/metrics`, the rules with promtool, the container image, the
//! Kubernetes manifests, the systemd unit (see the modules), and the binary's
//! `--version`, log format and health check.
//!
//! Tools come from `scripts/test`: promtool (apt `prometheus`), hadolint and
//! kubernetes-validate (pip, `tests/deploy/requirements.txt` in `.venv`),
//! systemd-analyze (systemd), curl.

mod support;

#[path = "deploy/docker.rs"]
mod docker;
#[path = "deploy/kubernetes.rs"]
mod kubernetes;
#[path = "deploy/promql.rs"]
mod promql;
#[path = "deploy/systemd.rs"]
mod systemd;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cutover::metric_catalog::{MetricKind, CATALOG};
use support::binary::{free_port, repo_path, Cutover};
use support::Pair;

/// Names Prometheus itself attaches to a scrape (not exported by cutover).
const PROMETHEUS_OWN: &[&str] = &["up"];

/// A tool the test needs: `.venv/bin/NAME` (pip-installed by scripts/test) or on PATH.
pub fn tool(name: &str) -> PathBuf {
    let venv = repo_path(".venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    });
    found.unwrap_or_else(|| panic!("{name} not found: run scripts/test (it installs it)"))
}

/// Run a command, returning its output (panics if it cannot start).
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every environment variable the binary reads: `cutover serve --help`
/// (clap's `[env: …]`) plus the logging variables.
pub fn env_vars_read() -> BTreeSet<String> {
    let out = run(Command::new(env!("CARGO_BIN_EXE_cutover")).args(["serve", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut vars: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap().to_string())
        .collect();
    assert!(vars.contains("CUTOVER_SOURCE"), "{help}");
    vars.insert(cutover::logging::LOG_FILTER_ENV.into());
    vars.insert(cutover::logging::LOG_FORMAT_ENV.into());
    vars
}

/// The sample names a scrape exports (`_bucket`, `_sum`, `_count` included).
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/cutover.json")).expect("dashboard is JSON")
}

fn alert_rules() -> Vec<yaml_serde::Value> {
    let doc: yaml_serde::Value =
        yaml_serde::from_str(&read("deploy/prometheus/alerts.yml")).expect("alerts.yml parses");
    doc["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .collect()
}

/// Every PromQL expression of the dashboard: panel targets, annotations, variables.
fn dashboard_queries(d: &serde_json::Value) -> Vec<(String, BTreeSet<String>)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            out.push((expr.to_string(), promql::metric_names(expr)));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        let expr = a["expr"].as_str().unwrap();
        out.push((expr.to_string(), promql::metric_names(expr)));
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().unwrap();
            out.push((
                q.to_string(),
                BTreeSet::from([promql::label_values_metric(q)]),
            ));
        }
    }
    out
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_query_is_exported_at_start_up() {
    let pair = Pair::start().await;
    // A fresh process, no traffic, no validation: what a new scrape target exports.
    let cutover = Cutover::start(&pair, "", &[]).await;
    let r = cutover.get("/metrics").await;
    assert_eq!(r.status, 200);
    let exported = exported_names(&r.body);

    // Every catalogued metric is there from the start (histograms with their buckets) …
    for def in CATALOG {
        let want = match def.kind {
            MetricKind::Histogram => format!("{}_bucket", def.name),
            _ => def.name.to_string(),
        };
        assert!(exported.contains(&want), "{want} not exported at start-up");
    }
    // … and nothing is exported that the catalog (and so docs/ADMIN.md) does not know.
    let admin_md = read("docs/ADMIN.md");
    for name in &exported {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| cutover::metric_catalog::find(b).is_some())
            .unwrap_or(name);
        assert!(
            cutover::metric_catalog::find(base).is_some(),
            "{name} is exported but not in src/metric_catalog.rs"
        );
        assert!(
            admin_md.contains(&format!("`{base}`")),
            "{base} is not documented in docs/ADMIN.md"
        );
    }

    // Every name a dashboard panel, annotation or variable, or an alert rule, queries.
    let mut queried = dashboard_queries(&dashboard());
    for rule in alert_rules() {
        let expr = rule["expr"].as_str().unwrap().to_string();
        let names = promql::metric_names(&expr);
        queried.push((expr, names));
    }
    assert!(queried.len() > 30, "only {} queries found", queried.len());
    for (expr, names) in &queried {
        for n in names {
            assert!(
                exported.contains(n) || PROMETHEUS_OWN.contains(&n.as_str()),
                "{n} (queried by {expr:?}) is not exported by cutover"
            );
        }
    }
    assert_eq!(cutover.stop().await, Some(0));
}

#[test]
fn alert_rules_pass_promtool_and_carry_runbooks() {
    let promtool = tool("promtool");
    let out = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(repo_path("deploy/prometheus/alerts.yml")));
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let rules = alert_rules();
    assert!(rules.len() >= 9, "{} rules", rules.len());
    for r in &rules {
        let name = r["alert"].as_str().expect("every rule is an alert");
        let severity = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook"] {
            let text = r["annotations"][key].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{name}: annotation {key} missing or empty");
        }
    }
    // promtool compares annotations verbatim: test the expressions on a copy without them.
    let dir = tempfile::tempdir().unwrap();
    let mut doc: yaml_serde::Value =
        yaml_serde::from_str(&read("deploy/prometheus/alerts.yml")).unwrap();
    for g in doc["groups"].as_sequence_mut().unwrap() {
        for r in g["rules"].as_sequence_mut().unwrap() {
            r.as_mapping_mut().unwrap().remove("annotations");
        }
    }
    std::fs::write(
        dir.path().join("alerts.yml"),
        yaml_serde::to_string(&doc).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        repo_path("deploy/prometheus/alerts.test.yml"),
        dir.path().join("alerts.test.yml"),
    )
    .unwrap();
    let out = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(dir.path()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("SUCCESS"),
        "promtool test rules:\n{text}"
    );
    // Every alert has a firing scenario in the unit tests.
    let tests = read("deploy/prometheus/alerts.test.yml");
    for r in &rules {
        let name = r["alert"].as_str().unwrap();
        let firing = tests.split("alertname: ").skip(1).any(|rest| {
            rest.starts_with(name) && rest[name.len()..].trim_start().starts_with("exp_alerts:\n")
        });
        assert!(firing, "{name} has no firing scenario in alerts.test.yml");
    }
}

#[test]
fn dashboard_is_a_well_formed_grafana_dashboard() {
    let d = dashboard();
    assert_eq!(d["uid"], "cutover-migration");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id {}",
            p["id"]
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {} overflows the grid", p["title"]);
        titles.insert(p["title"].as_str().unwrap().to_string());
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            for t in p["targets"].as_array().unwrap() {
                assert!(
                    t["refId"].is_string() && t["expr"].is_string(),
                    "{}",
                    p["title"]
                );
                assert!(
                    t["expr"].as_str().unwrap().contains("$instance"),
                    "{}: not filtered by $instance",
                    p["title"]
                );
            }
        }
    }
    // What the issue asks the dashboard to show.
    for want in [
        "State timeline",
        "Pattern timeline",
        "Statements/s by class",
        "Mirrored writes/s",
        "Mirror result mismatches by kind",
        "Unsafe statements by reason",
        "Full validation progress",
        "Validation ETA",
        "Open inconsistencies",
        "Backend up",
        "Backend probe latency",
        "Client connections",
        "Switch pauses",
    ] {
        assert!(titles.contains(want), "no panel {want:?}");
    }
}

#[test]
fn version_names_the_git_commit() {
    let out = run(Command::new(env!("CARGO_BIN_EXE_cutover")).arg("--version"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let git = run(Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR")));
    let hash = if git.status.success() {
        String::from_utf8_lossy(&git.stdout).trim().to_string()
    } else {
        "unknown".into()
    };
    assert_eq!(
        text,
        format!("cutover {} ({hash})", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(cutover::build_info::GIT_HASH, hash);
}

/// `cutover serve` against closed ports: it starts, logs, and stops on SIGTERM.
/// Returns (exit code, stderr).
fn serve_and_stop(env: &[(&str, &str)], via_terminal: bool) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let closed = support::control::closed_port_url();
    let config = format!(
        "listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\nstate_file = \"{}\"\nconnect_timeout_ms = 200\n\
         [source]\nurl = \"{closed}\"\n[destination]\nurl = \"{closed}\"\n",
        free_port(),
        free_port(),
        dir.path().join("state.json").display()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("stderr");
    let bin = env!("CARGO_BIN_EXE_cutover");
    let mut cmd = if via_terminal {
        // util-linux `script` gives the process a pseudo-terminal as stdout/stderr.
        let mut c = Command::new("script");
        c.args(["-qefc", &format!("{bin} serve --config {}", path.display())])
            .arg(&log);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(["serve", "--config"]).arg(&path);
        c.stderr(std::fs::File::create(&log).unwrap());
        c
    };
    let mut child = cmd
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s.code(), std::fs::read_to_string(&log).unwrap_or_default());
        }
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("admin API listening")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no start-up log line");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM the server (under `script`, a descendant).
    let target = find_cutover(child.id()).expect("the cutover process");
    assert!(
        run(Command::new("kill").args(["-TERM", &target.to_string()]))
            .status
            .success()
    );
    let status = child.wait().unwrap();
    (status.code(), std::fs::read_to_string(&log).unwrap())
}

/// `pid` or the first descendant of it that runs the cutover binary.
fn find_cutover(pid: u32) -> Option<u32> {
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if comm.trim() == "cutover" {
            return Some(p);
        }
        let out = run(Command::new("pgrep").args(["-P", &p.to_string()]));
        queue.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|s| s.parse::<u32>().ok()),
        );
    }
    None
}

#[test]
fn logs_are_plain_off_a_terminal_coloured_on_one_and_json_on_request() {
    let (code, text) = serve_and_stop(&[], false);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("admin API listening"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape codes in a log file:\n{text}"
    );

    let (code, text) = serve_and_stop(&[], true);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("\u{1b}["),
        "no colours on a terminal:\n{text}"
    );
    let (_, text) = serve_and_stop(&[("NO_COLOR", "1")], true);
    assert!(!text.contains("\u{1b}["), "NO_COLOR ignored:\n{text}");

    let (code, text) = serve_and_stop(&[("CUTOVER_LOG_FORMAT", "json")], false);
    assert_eq!(code, Some(0), "{text}");
    let mut listening = None;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        if v["message"] == "admin API listening" {
            listening = Some(v);
        }
    }
    let v = listening.expect("the admin API start-up line");
    assert_eq!(v["level"], "INFO");
    assert!(v["addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");

    let out = run(Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["serve", "--config", "/nonexistent.toml"])
        .env("CUTOVER_LOG_FORMAT", "xml"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CUTOVER_LOG_FORMAT") && err.contains("xml"),
        "{err}"
    );
}

/// `deploy/docker/healthcheck.sh` (the image's HEALTHCHECK and the Kubernetes
/// probes) against a real cutover: exit 0 only for a 2xx.
fn healthcheck(cutover: &Cutover, path: &str, token: Option<&str>) -> bool {
    let mut cmd = Command::new("sh");
    cmd.arg(repo_path("deploy/docker/healthcheck.sh"))
        .arg(path)
        .env("CUTOVER_ADMIN_LISTEN", cutover.admin.to_string())
        .env_remove("CUTOVER_ADMIN_TOKEN")
        .stderr(Stdio::null());
    if let Some(t) = token {
        cmd.env("CUTOVER_ADMIN_TOKEN", t);
    }
    let out = run(&mut cmd);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "exit {:?} (Docker reserves 2)",
        out.status
    );
    out.status.success()
}

#[tokio::test]
async fn readiness_follows_the_authoritative_side_not_the_mirror() {
    let mut pair = Pair::start().await;
    let token = "probe-token";
    let cutover = Cutover::start(
        &pair,
        "initial_pattern = \"src_first\"",
        &[("CUTOVER_ADMIN_TOKEN", token)],
    )
    .await;
    // The token came from the environment (CUTOVER_ADMIN_TOKEN), and the probe sends it.
    assert!(healthcheck(&cutover, "/health", Some(token)));
    assert!(
        !healthcheck(&cutover, "/health", None),
        "401 must fail the probe"
    );
    assert!(!healthcheck(&cutover, "/health", Some("wrong")));
    assert!(
        healthcheck(&cutover, "/", None),
        "the liveness path needs no token"
    );

    // The mirror (destination) dies: still ready, and /status says what is down.
    pair.destination.kill();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        healthcheck(&cutover, "/health", Some(token)),
        "a dead mirror made cutover unready"
    );
    let s = cutover.get("/status").await.json();
    assert_eq!(s["current_pattern"], "src_first");
    assert_eq!(s["pool_health"]["destination"]["ok"], false);
    let metrics = cutover.get("/metrics").await.body;
    assert!(
        metrics.contains("cutover_backend_up{backend=\"destination\"} 0"),
        "{metrics}"
    );

    // The authoritative side (source) dies: unready, and /health names it.
    pair.source.kill();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!healthcheck(&cutover, "/health", Some(token)));
    let r = cutover.get("/health").await;
    assert_eq!(r.status, 503);
    assert!(r.error().contains("source unreachable"), "{}", r.body);
    assert!(
        healthcheck(&cutover, "/", None),
        "liveness must not depend on a database"
    );
    pair.source.restart().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !healthcheck(&cutover, "/health", Some(token)) {
        assert!(
            Instant::now() < deadline,
            "not ready again after the source came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(cutover.stop().await, Some(0));
}
