//! Prometheus metrics: the process-wide recorder and the control plane's own series.
//!
//! The recorder is installed once per process ([`install`]); the data path
//! records through the `metrics` macros and the control plane renders.
//! Counters the data path keeps only as atomics ([`DataPathStats`]) are
//! published at scrape time so nothing is added to the hot path.
//! `cutover_backend_up` is set both by the data path (on backend connects)
//! and by the control plane's probes: it is the last observation.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::state_machine::State;
use crate::metric_catalog::{self, MetricDef, MetricKind, CATALOG};
use crate::pattern::{Pattern, Side};
use crate::stats::DataPathStats;
use crate::validate::progress::{Outcome, RunReport, ValidationStatus};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the Prometheus recorder as the global `metrics` recorder, once,
/// and register every [`CATALOG`] metric: descriptions, histogram buckets,
/// the start-up series at 0 and `cutover_build_info`.
///
/// Safe to call many times (each `ControlPlane` does). If another recorder
/// was installed first, the handle still renders but sees nothing from the
/// macros; that is logged.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for def in CATALOG.iter().filter(|d| d.kind == MetricKind::Histogram) {
            builder = match builder
                .set_buckets_for_metric(Matcher::Full(def.name.to_string()), def.buckets)
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(metric = def.name, error = %e, "histogram buckets rejected");
                    PrometheusBuilder::new()
                }
            };
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::error!(error = %e, "a metrics recorder was already installed; /metrics will miss macro-recorded series");
        }
        for def in CATALOG {
            register(def);
        }
        gauge!(
            "cutover_build_info",
            "version" => env!("CARGO_PKG_VERSION"),
            "git_hash" => crate::build_info::GIT_HASH
        )
        .set(1.0);
        handle
    })
}

/// Describe `def` and create its start-up series at 0 (without touching a
/// value something already recorded).
fn register(def: &MetricDef) {
    let name = def.name;
    match def.kind {
        MetricKind::Counter => metrics::describe_counter!(name, def.help),
        MetricKind::Gauge => metrics::describe_gauge!(name, def.help),
        MetricKind::Histogram => {
            metrics::describe_histogram!(name, metrics::Unit::Seconds, def.help)
        }
    }
    for values in metric_catalog::zero_series(def) {
        let labels: Vec<Label> = def
            .labels
            .iter()
            .zip(values)
            .map(|(k, v)| Label::new(*k, v))
            .collect();
        match def.kind {
            MetricKind::Counter => counter!(name, labels).increment(0),
            MetricKind::Gauge => gauge!(name, labels).increment(0.0),
            // A registered histogram is rendered (count 0) from the next scrape on.
            MetricKind::Histogram => drop(histogram!(name, labels)),
        }
    }
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

/// Record a backend probe: up/down and, when it answered, its round trip.
pub fn set_backend_probe(side: Side, up: bool, latency: Option<std::time::Duration>) {
    gauge!("cutover_backend_up", "backend" => side.as_str()).set(f64::from(u8::from(up)));
    if let Some(rtt) = latency {
        gauge!("cutover_backend_probe_latency_seconds", "backend" => side.as_str())
            .set(rtt.as_secs_f64());
    }
}

/// The fleet as this member sees it: the epoch it applied, live members,
/// whether it leads (outside a fleet: epoch 0, one member, leading).
pub fn set_fleet(epoch: u64, members: usize, leader: bool) {
    gauge!("cutover_epoch").set(epoch as f64);
    gauge!("cutover_fleet_members").set(members as f64);
    gauge!("cutover_leader").set(f64::from(u8::from(leader)));
}

/// Whether the fence holds statements back (`crate::fence`).
pub fn set_fenced(fenced: bool) {
    gauge!("cutover_fenced").set(f64::from(u8::from(fenced)));
}

/// One phase (`prepare`, `commit`) of a fleet switch.
pub fn record_switch_phase(phase: &'static str, took: std::time::Duration) {
    histogram!("cutover_switch_phase_seconds", "phase" => phase).record(took.as_secs_f64());
}

/// A fleet switch ended (`committed`, `aborted`).
pub fn record_fleet_switch(outcome: &'static str) {
    counter!("cutover_fleet_switches_total", "outcome" => outcome).increment(1);
}

pub fn record_validation_run() {
    counter!("cutover_validation_runs_total").increment(1);
}

/// Render the exposition text, publishing the data path's atomics and the
/// number of open inconsistency events first.
pub fn render(stats: &DataPathStats, open_inconsistencies: u64) -> String {
    let handle = install();
    // The data path records cutover_client_connections,
    // cutover_secondary_errors_total, cutover_mirror_failures_total,
    // cutover_mirror_retries_total, cutover_statements_total and the
    // duration histogram itself; only what it keeps solely as atomics is
    // published here.
    let s = stats.snapshot();
    counter!("cutover_double_writes_total", "outcome" => "success")
        .absolute(s.double_write_success);
    counter!("cutover_double_writes_total", "outcome" => "failure")
        .absolute(s.double_write_failure);
    counter!("cutover_double_writes_total", "outcome" => "rolled_back")
        .absolute(s.double_write_rolled_back);
    counter!("cutover_client_connections_accepted_total").absolute(s.connections_accepted);
    counter!("cutover_client_connections_refused_total").absolute(s.connections_refused);
    counter!("cutover_handshake_timeouts_total").absolute(s.handshake_timeouts);
    counter!("cutover_login_failures_total").absolute(s.login_failures);
    counter!("cutover_login_delays_total").absolute(s.login_delays);
    counter!("cutover_abandoned_statements_total").absolute(s.abandoned_statements);
    gauge!("cutover_inconsistencies_open").set(open_inconsistencies as f64);
    handle.render()
}

/// Publish the validator's view (running runs, progress and ETA of the
/// full run) before a scrape; open inconsistencies are published by [`render`].
pub fn publish_validation(v: &ValidationStatus) {
    for (mode, run) in [("full", &v.full), ("incremental", &v.incremental)] {
        let running = run.as_ref().is_some_and(|r| r.outcome == Outcome::Running);
        gauge!("cutover_validation_running", "mode" => mode).set(f64::from(u8::from(running)));
    }
    let (ratio, eta) = match (&v.full, &v.last_full) {
        (Some(run), _) if run.outcome == Outcome::Running => {
            (progress_ratio(run), eta_seconds(run).unwrap_or(f64::NAN))
        }
        (_, Some(last)) => (progress_ratio(last), 0.0),
        _ => (0.0, 0.0),
    };
    gauge!("cutover_validation_progress_ratio").set(ratio);
    gauge!("cutover_validation_eta_seconds").set(eta);
}

/// Rows checked / rows estimated over all tables of `run` (1 when it completed).
fn progress_ratio(run: &RunReport) -> f64 {
    if run.outcome == Outcome::Completed {
        return 1.0;
    }
    let checked: u64 = run.tables.iter().map(|t| t.tally.rows_checked).sum();
    let total: u64 = run
        .tables
        .iter()
        .map(|t| t.estimated_total.max(t.tally.rows_checked))
        .sum();
    if total == 0 {
        0.0
    } else {
        (checked as f64 / total as f64).min(1.0)
    }
}

/// Rows left / the run's rate so far (rows checked by this process over the
/// time its tables have been worked on); `None` before any rate is known.
fn eta_seconds(run: &RunReport) -> Option<f64> {
    let mut fresh = 0u64;
    let mut secs = 0f64;
    let mut left = 0u64;
    for t in &run.tables {
        if let Some(started) = t.started {
            fresh += t.tally.rows_checked.saturating_sub(t.resumed_rows);
            secs += started.elapsed().as_secs_f64();
        }
        if !t.done {
            left += t.estimated_total.saturating_sub(t.tally.rows_checked);
        }
    }
    (fresh > 0 && secs > 0.0).then(|| left as f64 / (fresh as f64 / secs))
}

/// Drain histogram samples; called periodically by the admin server.
pub fn upkeep() {
    install().run_upkeep();
}
