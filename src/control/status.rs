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
    /// `force=true` made the move possible: it was not in the state
    /// machine, or the authority-move guard had blockers (in `overridden`).
    pub forced: bool,
    /// The guard's blockers that `force` overrode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<String>,
}

/// The `migration_stats` object (also `GET /stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationStats {
    /// When the migration first left `initial` (RFC 3339), if it has.
    pub start_time: Option<String>,
    pub current_state: Option<State>,
    /// Full validations that completed (all time, persisted).
    pub full_validation_runs: u64,
    /// Incremental validations started (all time, persisted).
    pub incr_validation_runs: u64,
    /// What the last *completed* full validation left different
    /// (`found − repaired`); a failed or cancelled run does not change it.
    pub data_discrepancies: u64,
    /// The last thing that went wrong (a refused automatic move, a failed step).
    pub last_error: Option<String>,
}

/// Whether one backend answered the control plane's probe (the data path's
/// own back-off state is `crate::proxy`'s business).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendReachability {
    pub ok: bool,
    pub error: Option<String>,
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolHealth {
    pub source: BackendReachability,
    pub destination: BackendReachability,
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

/// Full validations as the scheduler sees them (`/status` → `validation`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationSummary {
    /// A validator is plugged in; without one the validation routes answer 501.
    pub available: bool,
    pub full_running: bool,
    pub last_full: Option<LastValidation>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastValidation {
    pub finished_at: String,
    /// The state the run started in.
    pub state: State,
    /// `completed`, `failed` or `cancelled`.
    pub outcome: &'static str,
    /// What the run left different (`found − repaired`); `null` when it
    /// did not complete (the number is unknown then).
    pub discrepancies: Option<u64>,
    /// Rows found different (each row once per run).
    pub found: u64,
    /// Rows the run made equal (fix enabled).
    pub repaired: u64,
    pub tables_checked: u64,
    pub rows_checked: u64,
    /// The run covered every table (no `tables` filter).
    pub all_tables: bool,
    /// Set when the run did not complete (error or cancel).
    pub error: Option<String>,
}

/// One move the state machine allows from the current state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NextMove {
    pub to: State,
    /// The move would be made now without `force`.
    pub allowed: bool,
    /// What stands in the way, in words (guard blockers, unreachable backends).
    pub blockers: Vec<String>,
    /// Only `?force=true` makes it possible (every blocker is one the guard
    /// raised; `force` never skips an unreachable backend).
    pub forced_only: bool,
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
    /// The moves the state machine allows from here, and whether each may be made.
    pub next_moves: Vec<NextMove>,
    /// Mirror health counters the guard reads (see `control::guard`).
    pub mirror_health: super::guard::MirrorHealth,
    /// Inconsistency events now open (`cutover_inconsistencies_open`).
    pub open_inconsistencies: u64,
    /// The last server drift check (issue #19); `null` without a monitor.
    pub drift: Option<super::drift::DriftReport>,
    pub auto_promotion: AutoPromotionStatus,
    pub auto_migrate: Option<AutoMigrateStatus>,
    pub validation: ValidationSummary,
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}
