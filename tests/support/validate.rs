//! Helpers shared by the tests/validate_*.rs files: a Validator wired to a
//! real MariaDB pair, and waiting for background runs.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cutover::config::Config;
use cutover::pattern::{Pattern, PatternHandle};
use cutover::validate::{EventStatus, Inconsistency, Kind, RunReport, Validator};
use serde_json::Value;

use crate::support::Pair;

/// TOML for the pair, with `data_dir` and a `[validation]` table body.
pub fn config_text(pair: &Pair, pattern: Pattern, data_dir: &Path, validation: &str) -> String {
    format!(
        "initial_pattern = \"{pattern}\"\ndata_dir = \"{}\"\n\
         [source]\nurl = \"{}\"\n[destination]\nurl = \"{}\"\n[validation]\n{validation}\n",
        data_dir.display(),
        pair.source.url("shop"),
        pair.destination.url("shop"),
    )
}

pub fn validator(pair: &Pair, pattern: Pattern, data_dir: &Path, validation: &str) -> Validator {
    let cfg = Config::parse(&config_text(pair, pattern, data_dir, validation)).expect("config");
    Validator::new(Arc::new(cfg), PatternHandle::new(pattern)).expect("validator")
}

/// Wait for the background full run to end; its report.
pub async fn wait_full(v: &Validator) -> RunReport {
    for _ in 0..6000 {
        let s = v.status();
        if s.full.is_none() {
            if let Some(r) = s.last_full {
                return r;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("full run did not end in 120 s");
}

/// (table, pk, kind) of events with `status`, sorted.
pub fn events(v: &Validator, status: EventStatus) -> Vec<(String, Value, Kind)> {
    let mut e: Vec<(String, Value, Kind)> = v
        .inconsistencies(Some(status), usize::MAX, None)
        .into_iter()
        .map(|i: Inconsistency| (i.table, i.pk, i.kind))
        .collect();
    e.sort_by_key(|(t, pk, k)| (t.clone(), pk.to_string(), k.as_str()));
    e
}

pub fn ev(table: &str, pk: Value, kind: Kind) -> (String, Value, Kind) {
    (table.to_string(), pk, kind)
}

pub fn sorted(mut v: Vec<(String, Value, Kind)>) -> Vec<(String, Value, Kind)> {
    v.sort_by_key(|(t, pk, k)| (t.clone(), pk.to_string(), k.as_str()));
    v
}

/// `CHECKSUM TABLE` on both sides (a second, independent opinion).
pub async fn same_checksum(pair: &Pair, table: &str) -> bool {
    let sql = format!("CHECKSUM TABLE {table}");
    let a: Vec<(String, Option<i64>)> = pair.source.query(&sql).await;
    let b: Vec<(String, Option<i64>)> = pair.destination.query(&sql).await;
    a[0].1 == b[0].1
}

/// Like [`validator`], also returning the pattern handle (to move authority).
pub fn validator_with_handle(
    pair: &Pair,
    pattern: Pattern,
    data_dir: &Path,
    validation: &str,
) -> (Validator, PatternHandle) {
    let cfg = Config::parse(&config_text(pair, pattern, data_dir, validation)).expect("config");
    let handle = PatternHandle::new(pattern);
    let v = Validator::new(Arc::new(cfg), handle.clone()).expect("validator");
    (v, handle)
}

/// Poll `check` every 100 ms until it returns `Some`, for at most `secs`
/// seconds (a liveness bound, not a timing assertion).
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("not within {secs} s: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Show the validator's log lines (info) in a failing test's output.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("cutover=info")
        .with_test_writer()
        .try_init();
}
