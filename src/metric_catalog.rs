//! Every operator-facing Prometheus metric cutover exports, written once.
//!
//! The Grafana dashboard (`deploy/grafana/cutover.json`) and the alert rules
//! (`deploy/prometheus/alerts.yml`) query these names; `tests/deploy.rs`
//! scrapes a freshly started `cutover serve` and fails when a name queried
//! there, or listed here, is not exported. So a metric must exist from
//! start-up, not from its first event: the control plane registers every
//! [`Startup::Zero`] series at 0 when it loads (an honest value for a counter
//! nothing has incremented yet, for a gauge of open connections, for an
//! empty histogram), and [`Startup::Live`] series are set at start-up or at
//! every scrape by their owner.
//!
//! To add a metric: add a [`MetricDef`] here (name, type, labels, the series
//! that exist at start), record it where it happens, and list it in
//! `docs/ADMIN.md`. Part of the narrow shared vocabulary between the data
//! path and the control plane, like `stats.rs`: both may read it.

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Which series of a metric exist before anything happened.
#[derive(Debug, Clone, Copy)]
pub enum Startup {
    /// Registered at 0 for the cartesian product of these label values
    /// (one list per label, in [`MetricDef::labels`] order; no lists for an
    /// unlabelled metric).
    Zero(&'static [&'static [&'static str]]),
    /// Registered at 0 for exactly these label-value tuples.
    ZeroTuples(&'static [&'static [&'static str]]),
    /// Set by its owner at start-up or at each scrape (a state, a probe
    /// result, a number read from the data path's atomics or the validator).
    Live,
}

/// One metric.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    /// Label names.
    pub labels: &'static [&'static str],
    pub startup: Startup,
    /// Histogram bucket upper bounds (seconds); empty for other kinds.
    pub buckets: &'static [f64],
}

/// Buckets for statement latency (seconds).
pub const STATEMENT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for the drain-then-swap pause (seconds; `switch_drain_timeout_ms` defaults to 2 s).
pub const SWITCH_PAUSE_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
];
/// Buckets for one validation chunk (seconds; `chunk_target_ms` defaults to 0.5 s).
pub const CHUNK_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

/// `backend` / `target` label values (`Side::as_str`).
pub const SIDES: &[&str] = &["source", "destination"];
/// `class` label of `cutover_statements_total` (`classify::Class`).
pub const STATEMENT_CLASSES: &[&str] = &["read", "write", "ddl", "transaction", "session"];
/// `outcome` label of `cutover_statements_total`.
pub const STATEMENT_OUTCOMES: &[&str] = &["ok", "error"];
/// `kind` label of `cutover_mirror_mismatches_total` (`session/mirror_txn.rs`).
pub const MIRROR_MISMATCH_KINDS: &[&str] = &["affected_rows", "insert_id"];
/// `reason` label of `cutover_mirror_failures_total`
/// (`session::ledger::FailureReason`).
pub const MIRROR_FAILURE_REASONS: &[&str] = &[
    "lock_conflict",
    "constraint",
    "schema",
    "data",
    "unavailable",
    "infile_truncated",
    "other",
];
/// `outcome` label of `cutover_mirror_retries_total`.
pub const MIRROR_RETRY_OUTCOMES: &[&str] = &["succeeded", "failed"];
/// `reason` label of `cutover_unsafe_statements_total` (`determinism.rs`,
/// `session/mirror.rs`).
pub const UNSAFE_REASONS: &[&str] = &[
    "uuid_per_row",
    "limit_without_order_by",
    "insert_select_without_order_by",
    "unpinnable_function",
    "nondeterministic_function_in_prepared_statement",
    "session_diagnostics",
    "rand_after_client_seed",
    "trigger",
    "function",
    "temporary_table_not_copied",
];
/// `kind` label of `cutover_inconsistencies_total` (`validate::events::Kind`).
pub const INCONSISTENCY_KINDS: &[&str] = &["target_missing", "base_missing", "neq"];
/// `direction` label of `cutover_validation_rows_checked_total`
/// (`validate::events::Direction`).
pub const VALIDATION_DIRECTIONS: &[&str] = &["SRC", "DST"];
/// `mode` label of `cutover_validation_running`.
pub const VALIDATION_MODES: &[&str] = &["full", "incremental"];
/// The legal moves (`control::state_machine::LEGAL_MOVES`), as `from`/`to` labels.
pub const LEGAL_MOVE_LABELS: &[&[&str]] = &[
    &["initial", "src_only"],
    &["src_only", "src_first"],
    &["src_first", "src_only"],
    &["src_first", "dst_first"],
    &["dst_first", "src_first"],
    &["dst_first", "dst_only"],
    &["dst_only", "dst_first"],
    &["dst_only", "completed"],
];

/// `phase` label of `cutover_switch_phase_seconds` (`control::fleet::switch`).
pub const SWITCH_PHASES: &[&str] = &["prepare", "commit"];
/// `outcome` label of `cutover_fleet_switches_total`.
pub const FLEET_SWITCH_OUTCOMES: &[&str] = &["committed", "aborted"];
/// Buckets for the phases of a fleet switch (seconds; `switch_timeout_ms` defaults to 10 s).
pub const SWITCH_PHASE_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// The catalog.
pub const CATALOG: &[MetricDef] = &[
    MetricDef {
        name: "cutover_build_info",
        kind: MetricKind::Gauge,
        help: "Always 1; labels carry the version and git commit of the running binary",
        labels: &["version", "git_hash"],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_state",
        kind: MetricKind::Gauge,
        help: "1 for the migration state cutover is in, 0 for the others",
        labels: &["state"],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_pattern",
        kind: MetricKind::Gauge,
        help: "1 for the routing pattern in force, 0 for the others",
        labels: &["pattern"],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_pattern_switches_total",
        kind: MetricKind::Counter,
        help: "State changes made by the control plane, by from/to state",
        labels: &["from", "to"],
        startup: Startup::ZeroTuples(LEGAL_MOVE_LABELS),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_switch_pause_seconds",
        kind: MetricKind::Histogram,
        help: "How long new work waited at the drain gate while the authoritative side changed",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: SWITCH_PAUSE_BUCKETS,
    },
    MetricDef {
        name: "cutover_backend_up",
        kind: MetricKind::Gauge,
        help: "1 when the backend answered its last probe or data-path connect, else 0",
        labels: &["backend"],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_backend_probe_latency_seconds",
        kind: MetricKind::Gauge,
        help: "Round trip of the last successful backend probe (login + COM_PING)",
        labels: &["backend"],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_client_connections",
        kind: MetricKind::Gauge,
        help: "Client connections currently open",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_client_connections_accepted_total",
        kind: MetricKind::Counter,
        help: "Client connections accepted since start",
        labels: &[],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_client_connections_refused_total",
        kind: MetricKind::Counter,
        help: "Client connections refused with ER_CON_COUNT_ERROR (1040) at max_connections or max_unauthenticated_connections",
        labels: &[],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_handshake_timeouts_total",
        kind: MetricKind::Counter,
        help: "Client connections closed for not authenticating within handshake_timeout_ms",
        labels: &[],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_login_failures_total",
        kind: MetricKind::Counter,
        help: "Logins refused with ER_ACCESS_DENIED_ERROR (1045)",
        labels: &[],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_login_delays_total",
        kind: MetricKind::Counter,
        help: "Failed logins answered late by login throttling (failed_login_threshold)",
        labels: &[],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_abandoned_statements_total",
        kind: MetricKind::Counter,
        help: "Statements whose client disconnected while they ran (backend query killed unless a mirror write had to complete)",
        labels: &[],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_tls_reloads_total",
        kind: MetricKind::Counter,
        help: "[tls] certificate reloads on SIGHUP, by outcome (failure keeps the current certificate)",
        labels: &["outcome"],
        startup: Startup::Zero(&[&["success", "failure"]]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_statements_total",
        kind: MetricKind::Counter,
        help: "Statements relayed, by class, target and outcome",
        labels: &["class", "target", "outcome"],
        startup: Startup::Zero(&[STATEMENT_CLASSES, SIDES, STATEMENT_OUTCOMES]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_statement_duration_seconds",
        kind: MetricKind::Histogram,
        help: "Statement latency on the authoritative side, by target",
        labels: &["target"],
        startup: Startup::Zero(&[SIDES]),
        buckets: STATEMENT_BUCKETS,
    },
    MetricDef {
        name: "cutover_double_writes_total",
        kind: MetricKind::Counter,
        help: "Statements mirrored to the non-authoritative backend, by what became of them: success (applied on both), rolled_back (in a transaction the authoritative side rolled back; consistent), failure (applied by the authoritative side only: divergence)",
        labels: &["outcome"],
        startup: Startup::Live,
        buckets: &[],
    },
    MetricDef {
        name: "cutover_mirror_failures_total",
        kind: MetricKind::Counter,
        help: "Writes the authoritative side applied (committed) that the mirror did not, by mirror backend and error class: the divergence signal; each one is queued for a targeted re-check",
        labels: &["backend", "reason"],
        startup: Startup::Zero(&[SIDES, MIRROR_FAILURE_REASONS]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_mirror_retries_total",
        kind: MetricKind::Counter,
        help: "Mirror-only deadlocks / lock wait timeouts retried by replaying the statement or the transaction's share, by outcome",
        labels: &["outcome"],
        startup: Startup::Zero(&[MIRROR_RETRY_OUTCOMES]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_secondary_errors_total",
        kind: MetricKind::Counter,
        help: "Errors on the non-authoritative backend (ERR answers, lost or refused connections), by backend; a diagnostic, not by itself divergence (see cutover_mirror_failures_total)",
        labels: &["backend"],
        startup: Startup::Zero(&[SIDES]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_mirror_mismatches_total",
        kind: MetricKind::Counter,
        help: "Mirrored statements applied on both sides with a different outcome (affected rows, generated id), by kind",
        labels: &["kind"],
        startup: Startup::Zero(&[MIRROR_MISMATCH_KINDS]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_unsafe_statements_total",
        kind: MetricKind::Counter,
        help: "Mirrored statements that could not be made deterministic, by reason",
        labels: &["reason"],
        startup: Startup::Zero(&[UNSAFE_REASONS]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_validation_runs_total",
        kind: MetricKind::Counter,
        help: "Full validation runs finished",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_validation_running",
        kind: MetricKind::Gauge,
        help: "1 while a validation run of this mode is going",
        labels: &["mode"],
        startup: Startup::Zero(&[VALIDATION_MODES]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_validation_progress_ratio",
        kind: MetricKind::Gauge,
        help: "Rows checked / estimated rows of the running (else the last) full validation, 0..1",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_validation_eta_seconds",
        kind: MetricKind::Gauge,
        help: "Estimated seconds left in the running full validation (0 when none runs, NaN before a rate is known)",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_validation_rows_checked_total",
        kind: MetricKind::Counter,
        help: "Rows compared by the validator, by direction (SRC: source is the base)",
        labels: &["direction"],
        startup: Startup::Zero(&[VALIDATION_DIRECTIONS]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_validation_chunk_seconds",
        kind: MetricKind::Histogram,
        help: "Time to checksum one validation chunk on both sides",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: CHUNK_BUCKETS,
    },
    MetricDef {
        name: "cutover_inconsistencies_total",
        kind: MetricKind::Counter,
        help: "Differences found by the validator, by kind",
        labels: &["kind"],
        startup: Startup::Zero(&[INCONSISTENCY_KINDS]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_inconsistencies_open",
        kind: MetricKind::Gauge,
        help: "Inconsistency events recorded and not yet fixed or obsolete",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_epoch",
        kind: MetricKind::Gauge,
        help: "The fleet epoch whose pattern this member runs (0 outside a fleet); members disagreeing is pattern skew",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_fleet_members",
        kind: MetricKind::Gauge,
        help: "Fleet members with a live lease, as this member sees them (1 outside a fleet)",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_fenced",
        kind: MetricKind::Gauge,
        help: "1 while this member holds statements back because it cannot vouch for its lease (writes fenced or state being re-read)",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_leader",
        kind: MetricKind::Gauge,
        help: "1 when this process runs the background work (the fleet's elected leader; always 1 outside a fleet)",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_switch_phase_seconds",
        kind: MetricKind::Histogram,
        help: "Duration of the phases of a fleet switch, on the leader: prepare (until every member drained and acknowledged) and commit",
        labels: &["phase"],
        startup: Startup::Zero(&[SWITCH_PHASES]),
        buckets: SWITCH_PHASE_BUCKETS,
    },
    MetricDef {
        name: "cutover_fleet_switches_total",
        kind: MetricKind::Counter,
        help: "Fleet switches run by this member as leader, by outcome",
        labels: &["outcome"],
        startup: Startup::Zero(&[FLEET_SWITCH_OUTCOMES]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_capture_lag_seconds",
        kind: MetricKind::Gauge,
        help: "Change capture: now minus the commit time of the last binlog event read (0 when caught up), seconds",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_capture_lag_events",
        kind: MetricKind::Gauge,
        help: "Change capture: transactions written by the server and not read yet (MariaDB GTIDs)",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_capture_lag_bytes",
        kind: MetricKind::Gauge,
        help: "Change capture: binlog bytes written by the server and not read yet",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_capture_queue_depth",
        kind: MetricKind::Gauge,
        help: "Re-verification queue: keys waiting for or in a re-check",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_capture_keys_reverified_total",
        kind: MetricKind::Counter,
        help: "Re-verification queue: keys compared on both sides",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_capture_changes_total",
        kind: MetricKind::Counter,
        help: "Change capture: row changes read from the binlog",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_session_align_failures_total",
        kind: MetricKind::Counter,
        help: "Session alignment: reference values a backend refused to read or set (issue #19)",
        labels: &["backend"],
        startup: Startup::Zero(&[SIDES]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_drift",
        kind: MetricKind::Gauge,
        help: "Server drift found by the last preflight/health check: differing items by kind",
        labels: &["kind"],
        startup: Startup::Zero(&[DRIFT_KINDS]),
        buckets: &[],
    },
    MetricDef {
        name: "cutover_drift_blocking",
        kind: MetricKind::Gauge,
        help: "Server drift items not declared intended in [mirror] intended_drift (they block authority moves)",
        labels: &[],
        startup: Startup::Zero(&[]),
        buckets: &[],
    },
];

/// `kind` values of `cutover_drift`: a global variable, a table definition.
pub const DRIFT_KINDS: &[&str] = &["variable", "table"];

/// The series to register at 0 for `def`, as label-value tuples (empty when
/// the metric is [`Startup::Live`]; one empty tuple for an unlabelled metric).
pub fn zero_series(def: &MetricDef) -> Vec<Vec<&'static str>> {
    match def.startup {
        Startup::Live => Vec::new(),
        Startup::ZeroTuples(t) => t.iter().map(|v| v.to_vec()).collect(),
        Startup::Zero(lists) => lists.iter().fold(vec![Vec::new()], |acc, values| {
            acc.iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut t = prefix.clone();
                        t.push(*v);
                        t
                    })
                })
                .collect()
        }),
    }
}

/// Look a metric up by name.
pub fn find(name: &str) -> Option<&'static MetricDef> {
    CATALOG.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prometheus_names_with_the_prefix() {
        let mut seen = std::collections::HashSet::new();
        for d in CATALOG {
            assert!(seen.insert(d.name), "{} listed twice", d.name);
            assert!(d.name.starts_with("cutover_"), "{}", d.name);
            assert!(
                d.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                d.name
            );
            if d.kind == MetricKind::Counter {
                assert!(d.name.ends_with("_total"), "counter {}", d.name);
            }
            assert_eq!(
                d.kind == MetricKind::Histogram,
                !d.buckets.is_empty(),
                "{}: histograms and only histograms have buckets",
                d.name
            );
            assert!(d.buckets.windows(2).all(|w| w[0] < w[1]), "{}", d.name);
        }
    }

    /// The label values listed here are the ones the code uses.
    #[test]
    fn label_values_match_their_sources() {
        use crate::control::state_machine::LEGAL_MOVES;
        use crate::validate::events::{Direction, Kind};
        let legal: Vec<Vec<&str>> = LEGAL_MOVES
            .iter()
            .map(|(a, b)| vec![a.as_str(), b.as_str()])
            .collect();
        let listed: Vec<Vec<&str>> = LEGAL_MOVE_LABELS.iter().map(|t| t.to_vec()).collect();
        assert_eq!(listed, legal);
        for k in [Kind::TargetMissing, Kind::BaseMissing, Kind::Neq] {
            assert!(INCONSISTENCY_KINDS.contains(&k.as_str()), "{}", k.as_str());
        }
        for d in [Direction::Src, Direction::Dst] {
            assert!(
                VALIDATION_DIRECTIONS.contains(&d.as_str()),
                "{}",
                d.as_str()
            );
        }
        for side in [
            crate::pattern::Side::Source,
            crate::pattern::Side::Destination,
        ] {
            assert!(SIDES.contains(&side.as_str()));
        }
        // Every unsafe reason literal the data path can set, and no other.
        let mut found = std::collections::BTreeSet::new();
        for src in [
            include_str!("determinism/mod.rs"),
            include_str!("session/secondary.rs"),
            include_str!("session/mirror_txn.rs"),
            include_str!("session/prepared.rs"),
        ] {
            for part in src.split("unsafe_reason").skip(1) {
                let Some(open) = part.find("(\"") else {
                    continue;
                };
                let before = &part[..open];
                // only `= Some("…")` and `.get_or_insert("…")` right after the field
                if before.contains([';', ')'])
                    || !(before.ends_with("Some") || before.ends_with("get_or_insert"))
                {
                    continue;
                }
                let reason = part[open + 2..].split('"').next().unwrap();
                assert!(
                    UNSAFE_REASONS.contains(&reason),
                    "unsafe reason {reason:?} is not in UNSAFE_REASONS"
                );
                found.insert(reason);
            }
        }
        // … and the reasons counted directly (`count_unsafe("…", …)`).
        for src in [include_str!("session/temptables.rs")] {
            for part in src.split("count_unsafe(\"").skip(1) {
                let reason = part.split('"').next().unwrap();
                assert!(
                    UNSAFE_REASONS.contains(&reason),
                    "unsafe reason {reason:?} is not in UNSAFE_REASONS"
                );
                found.insert(reason);
            }
        }
        let listed: std::collections::BTreeSet<&str> = UNSAFE_REASONS.iter().copied().collect();
        assert_eq!(
            found, listed,
            "UNSAFE_REASONS lists a reason the code never sets"
        );
    }

    #[test]
    fn zero_series_match_the_label_names() {
        for d in CATALOG {
            for t in zero_series(d) {
                assert_eq!(t.len(), d.labels.len(), "{}: {t:?}", d.name);
            }
        }
        let statements = zero_series(find("cutover_statements_total").unwrap());
        assert_eq!(statements.len(), 5 * 2 * 2);
        assert!(statements.contains(&vec!["ddl", "destination", "error"]));
        assert_eq!(
            zero_series(find("cutover_client_connections").unwrap()),
            vec![Vec::<&str>::new()]
        );
        assert!(zero_series(find("cutover_state").unwrap()).is_empty());
    }
}
