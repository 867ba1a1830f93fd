//! Prometheus metrics: the process-wide recorder and the control plane's own series.
//!
//! The recorder is installed once per process ([`install`]); the data path
//! records through the `metrics` macros and the control plane renders.
//! Counters the data path keeps only as atomics ([`DataPathStats`]) are
//! published at scrape time so nothing is added to the hot path.
//! `cutover_backend_up` is set both by the data path (on backend connects)
//! and by the control plane's probes: it is the last observation.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::state_machine::State;
use crate::pattern::{Pattern, Side};
use crate::stats::DataPathStats;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Buckets for `cutover_statement_duration_seconds` (seconds).
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Install the Prometheus recorder as the global `metrics` recorder, once.
///
/// Safe to call many times (each `ControlPlane` does). If another recorder
/// was installed first, the handle still renders but sees nothing from the
/// macros; that is logged.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = match PrometheusBuilder::new().set_buckets_for_metric(
            Matcher::Full("cutover_statement_duration_seconds".into()),
            DURATION_BUCKETS,
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "histogram buckets rejected; using summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::error!(error = %e, "a metrics recorder was already installed; /metrics will miss macro-recorded series");
        }
        describe();
        handle
    })
}

fn describe() {
    describe_gauge!(
        "cutover_state",
        "1 for the migration state cutover is in, 0 for the others"
    );
    describe_gauge!(
        "cutover_pattern",
        "1 for the routing pattern in force, 0 for the others"
    );
    describe_counter!(
        "cutover_pattern_switches_total",
        "Pattern changes made by the control plane, by from/to state"
    );
    describe_gauge!(
        "cutover_backend_up",
        "1 when the backend answered its last probe with a MySQL greeting"
    );
    describe_gauge!(
        "cutover_client_connections",
        "Client connections currently open"
    );
    describe_counter!(
        "cutover_statements_total",
        "Statements relayed, by class, target and outcome (recorded by the data path)"
    );
    describe_histogram!(
        "cutover_statement_duration_seconds",
        Unit::Seconds,
        "Statement latency by target (recorded by the data path)"
    );
    describe_counter!(
        "cutover_secondary_errors_total",
        "Errors on the non-authoritative backend, by backend"
    );
    describe_counter!(
        "cutover_double_writes_total",
        "Writes mirrored to the non-authoritative backend, by outcome"
    );
    describe_counter!(
        "cutover_validation_runs_total",
        "Full validation runs that completed"
    );
    describe_gauge!(
        "cutover_inconsistencies_open",
        "Inconsistency events now open (found, neither fixed nor obsolete); alert on > 0"
    );
}

/// Set the state and pattern gauges: 1 for the current, 0 for the rest.
pub fn set_state(state: State) {
    for s in State::ALL {
        gauge!("cutover_state", "state" => s.as_str()).set(f64::from(u8::from(s == state)));
    }
    let pattern = state.pattern();
    for p in Pattern::ALL {
        gauge!("cutover_pattern", "pattern" => p.as_str()).set(f64::from(u8::from(p == pattern)));
    }
}

pub fn record_switch(from: State, to: State) {
    counter!("cutover_pattern_switches_total", "from" => from.as_str(), "to" => to.as_str())
        .increment(1);
}

pub fn set_backend_up(side: Side, up: bool) {
    gauge!("cutover_backend_up", "backend" => side.as_str()).set(f64::from(u8::from(up)));
}

pub fn record_validation_run() {
    counter!("cutover_validation_runs_total").increment(1);
}

/// Render the exposition text, publishing the data path's atomics and the
/// number of open inconsistency events first.
pub fn render(stats: &DataPathStats, open_inconsistencies: u64) -> String {
    let handle = install();
    // The data path records cutover_client_connections,
    // cutover_secondary_errors_total, cutover_statements_total and the
    // duration histogram itself; only what it keeps solely as atomics is
    // published here.
    let s = stats.snapshot();
    counter!("cutover_double_writes_total", "outcome" => "success")
        .absolute(s.double_write_success);
    counter!("cutover_double_writes_total", "outcome" => "failure")
        .absolute(s.double_write_failure);
    gauge!("cutover_inconsistencies_open").set(open_inconsistencies as f64);
    handle.render()
}

/// Drain histogram samples; called periodically by the admin server.
pub fn upkeep() {
    install().run_upkeep();
}
