//! The JSON shapes the admin API returns and the state file keeps.
//!
//! Field names are snake_case and are the API: change them only together with
//! `docs/openapi.json`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::state_machine::State;
use crate::pattern::Pattern;
use crate::stats::StatsSnapshot;

/// Who asked for a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// An operator through the admin API.
    Api,
    /// Auto-promotion or auto-migrate.
    Auto,
}

/// One entry of the transition history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// RFC 3339, UTC.
    pub time: String,
    pub from: State,
    pub to: State,
    pub trigger: Trigger,
    /// The move was not in the state machine and was made with `force=true`.
    pub forced: bool,
}

/// The `migration_stats` object (also `GET /stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationStats {
    /// When the migration first left `initial` (RFC 3339), if it has.
    pub start_time: Option<String>,
    pub current_state: Option<State>,
    pub full_validation_runs: u64,
    pub incr_validation_runs: u64,
    /// Discrepancies found by the last completed full validation.
    pub data_discrepancies: u64,
    /// The last thing that went wrong (a refused automatic move, a failed step).
    pub last_error: Option<String>,
}

/// Whether one backend answered a probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendHealth {
    pub ok: bool,
    pub error: Option<String>,
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolHealth {
    pub source: BackendHealth,
    pub destination: BackendHealth,
}

/// How an auto-migrate run is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// Progress of the current (or last) auto-migrate run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoMigrateStatus {
    pub outcome: RunOutcome,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub step_wait_ms: u64,
    /// The step being run (or the one that stopped the run).
    pub current_step: Option<String>,
    /// Steps finished, in order.
    pub completed_steps: Vec<String>,
    /// Why the run stopped, when it did not succeed.
    pub reason: Option<String>,
}

/// What auto-promotion is doing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoPromotionStatus {
    pub enabled: bool,
    pub quiet_period_ms: u64,
    /// Why it has not promoted (yet), in words.
    pub waiting_for: Option<String>,
}

/// The last finished full validation, as the scheduler saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationStatus {
    /// A validator is plugged in (issue 4); without one `/full/*` and `/incr/*` answer 501.
    pub available: bool,
    pub full_running: bool,
    pub last_full: Option<LastValidation>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastValidation {
    pub finished_at: String,
    pub state: State,
    pub discrepancies: u64,
    pub tables_checked: u64,
    pub rows_checked: u64,
    /// Set when the run did not finish (error or cancel).
    pub error: Option<String>,
}

/// `GET /status` (and the body of a successful move).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub current_state: State,
    pub current_pattern: Pattern,
    pub migration_stats: MigrationStats,
    pub pool_health: PoolHealth,
    pub pool_metrics: StatsSnapshot,
    pub uptime_seconds: u64,
    pub history: Vec<Transition>,
    /// The moves an operator may make from here (the status page's buttons).
    pub next_moves: Vec<NextMove>,
    pub auto_promotion: AutoPromotionStatus,
    pub auto_migrate: Option<AutoMigrateStatus>,
    pub validation: ValidationStatus,
}

/// One move from the current state, as `GET /status` lists it.
///
/// Minimal version: the state machine's legal moves, each `allowed` with no
/// blockers. Checks that can hold a move back (backend health, a running
/// validation, open inconsistencies) belong in `blockers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NextMove {
    pub to: State,
    /// The move would be made now (without `force`).
    pub allowed: bool,
    /// Why it would not, in words.
    pub blockers: Vec<String>,
    /// Possible only with `?force=true` (not in `LEGAL_MOVES`).
    pub forced_only: bool,
}

impl NextMove {
    /// The legal moves from `from` ([`super::state_machine::LEGAL_MOVES`]).
    pub fn legal_from(from: State) -> Vec<NextMove> {
        from.legal_targets()
            .into_iter()
            .map(|to| NextMove {
                to,
                allowed: true,
                blockers: Vec::new(),
                forced_only: false,
            })
            .collect()
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}
