//! `/metrics` read by a real Prometheus text-format parser, with the real
//! proxy serving traffic so the data path's series are there too.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use cutover::listener::Listener;
use mysql_async::prelude::*;
use prometheus_parse::{Sample, Scrape, Value};
use support::control::{config, Admin};
use support::Pair;
use tokio_util::sync::CancellationToken;

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text")
}

/// The value of `name` whose labels include all of `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s: &Sample| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            Value::Histogram(_) | Value::Summary(_) => f64::NAN,
        })
}

#[tokio::test]
async fn metrics_parse_and_follow_the_state() {
    let pair = Pair::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &pair.source.url("shop"),
        &pair.destination.url("shop"),
        &dir.path().join("state.json"),
        "listen = '127.0.0.1:0'",
    );
    let admin = Admin::start(&cfg).await;
    let proxy = Listener::bind(
        Arc::new(cfg.clone()),
        admin.pattern.clone(),
        admin.stats.clone(),
    )
    .await
    .unwrap();
    let proxy_port = proxy.local_addr().port();
    let stop = CancellationToken::new();
    let proxy_task = tokio::spawn(proxy.run(stop.clone()));

    for step in ["/src_only", "/src_first"] {
        assert_eq!(admin.post(step, "").await.status, 200, "{step}");
    }
    // Traffic in src_first: writes are mirrored to the destination.
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(proxy_port)
        .user(Some("app"))
        .pass(Some("app"))
        .db_name(Some("shop"))
        .prefer_socket(false);
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    conn.query_drop("CREATE TABLE m (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO m VALUES (1), (2)")
        .await
        .unwrap();
    let _: Vec<i32> = conn.query("SELECT id FROM m").await.unwrap();

    let r = admin.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let scrape = parse(&r.body);

    for state in [
        "initial",
        "src_only",
        "src_first",
        "dst_first",
        "dst_only",
        "completed",
    ] {
        let want = if state == "src_first" { 1.0 } else { 0.0 };
        assert_eq!(
            value(&scrape, "cutover_state", &[("state", state)]),
            Some(want),
            "{state}"
        );
    }
    for pattern in ["src_only", "src_first", "dst_first", "dst_only"] {
        let want = if pattern == "src_first" { 1.0 } else { 0.0 };
        assert_eq!(
            value(&scrape, "cutover_pattern", &[("pattern", pattern)]),
            Some(want),
            "{pattern}"
        );
    }
    let switches = "cutover_pattern_switches_total";
    assert_eq!(
        value(
            &scrape,
            switches,
            &[("from", "initial"), ("to", "src_only")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            switches,
            &[("from", "src_only"), ("to", "src_first")]
        ),
        Some(1.0)
    );
    for backend in ["source", "destination"] {
        assert_eq!(
            value(&scrape, "cutover_backend_up", &[("backend", backend)]),
            Some(1.0),
            "{backend}"
        );
    }
    assert_eq!(value(&scrape, "cutover_client_connections", &[]), Some(1.0));
    let mirrored = value(
        &scrape,
        "cutover_double_writes_total",
        &[("outcome", "success")],
    );
    assert!(
        mirrored.unwrap_or(0.0) >= 2.0,
        "double writes: {mirrored:?}"
    );
    // Every (class, target, outcome) series exists from start-up at 0, so name the series:
    // the CREATE, the INSERT and the SELECT above, each answered by the source.
    for class in ["ddl", "write", "read"] {
        assert!(
            value(
                &scrape,
                "cutover_statements_total",
                &[("class", class), ("target", "source"), ("outcome", "ok")]
            )
            .unwrap_or(0.0)
                >= 1.0,
            "statements_total{{class={class}}} missing:\n{}",
            r.body
        );
    }
    let durations: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "cutover_statement_duration_seconds")
        .collect();
    assert!(
        durations
            .iter()
            .any(|s| matches!(s.value, Value::Histogram(_))),
        "statement duration is not a histogram:\n{}",
        r.body
    );
    // Every metric has HELP text.
    let docs: HashMap<&String, &String> = scrape.docs.iter().collect();
    for name in [
        "cutover_state",
        "cutover_pattern",
        "cutover_pattern_switches_total",
        "cutover_backend_up",
    ] {
        assert!(docs.contains_key(&name.to_string()), "no HELP for {name}");
    }

    // A move is reflected at once.
    assert_eq!(admin.post("/src_only", "").await.status, 200);
    let scrape = parse(&admin.get("/metrics").await.body);
    assert_eq!(
        value(&scrape, "cutover_state", &[("state", "src_only")]),
        Some(1.0)
    );
    assert_eq!(
        value(&scrape, "cutover_state", &[("state", "src_first")]),
        Some(0.0)
    );
    assert_eq!(
        value(
            &scrape,
            switches,
            &[("from", "src_first"), ("to", "src_only")]
        ),
        Some(1.0)
    );

    conn.disconnect().await.unwrap();
    stop.cancel();
    proxy_task.await.unwrap();
    admin.stop().await;
}
