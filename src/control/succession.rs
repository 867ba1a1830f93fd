//! What the scheduler does as one member of a fleet (docs/FLEET.md): adopt a
//! state committed elsewhere, take over background work when this member is
//! elected leader (resuming an interrupted full validation from its
//! checkpoint), give it up when it is not, and publish what only the leader
//! knows so that every member's `/status` shows it. Outside a fleet the
//! coordinator never calls these, and the records it is handed go nowhere.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::coordinator::{FullRecord, RunningFull};
use super::guard::FinishedRun;
use super::metrics;
use super::scheduler::Scheduler;
use super::status::NextMove;
use super::store::PersistedState;
use super::validation::{FullOutcome, FullRequest, FullStarted};

/// Milliseconds since the Unix epoch (wall clock: records other processes read).
pub(super) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `Instant::now()` minus the wall-clock age of `at_ms` (never in the future).
fn instant_of(at_ms: u64) -> Instant {
    let age = Duration::from_millis(wall_ms().saturating_sub(at_ms));
    Instant::now().checked_sub(age).unwrap_or_else(Instant::now)
}

impl Scheduler {
    /// A state the fleet committed (seen by a member that did not make the
    /// move, or by a new leader).
    pub async fn adopt_state(&self, persisted: PersistedState) {
        let mut inner = self.inner.lock().await;
        if inner.persisted == persisted {
            return;
        }
        if inner.persisted.state != persisted.state {
            inner.entered_state_at = Instant::now();
            metrics::set_state(persisted.state);
        }
        inner.persisted = persisted;
    }

    /// This member was elected leader: take over the previous leader's
    /// record (the last full validation, for the guard) and resume a full
    /// validation it left running (from its checkpoint).
    pub async fn lead(self: &Arc<Self>) {
        let Some(record) = self.coord.load_leader_record().await else {
            return;
        };
        let resume = {
            let mut inner = self.inner.lock().await;
            if let Some(rec) = &record.last_full {
                let started =
                    if rec.epoch == self.coord.epoch() && rec.state == inner.persisted.state {
                        // Started in the state in force: as good as after the move to it.
                        inner.entered_state_at
                    } else {
                        inner
                            .entered_state_at
                            .checked_sub(Duration::from_millis(1))
                            .unwrap_or(inner.entered_state_at)
                    };
                inner.last_full = Some(FinishedRun {
                    started,
                    finished: instant_of(rec.finished_ms),
                    state: rec.state,
                    outcome: outcome_of(rec),
                    mirror_at_start: rec.mirror_at_start,
                });
            }
            inner.leader_record = record.clone();
            record.running_full
        };
        if let Some(run) = resume {
            tracing::info!(tables = ?run.tables, fix = run.fix, "resuming the full validation the previous leader left running");
            let req = FullRequest {
                tables: run.tables,
                fix: run.fix,
                restart: false,
            };
            if let Err(e) = self.start_full(req).await {
                self.set_last_error(format!(
                    "resuming the previous leader's full validation: {e}"
                ))
                .await;
            }
        }
    }

    /// This member is no longer the leader: stop background work at once
    /// (the new leader resumes it); records are left for it untouched.
    pub async fn step_down(&self) {
        let inner = self.inner.lock().await;
        if let Some(c) = &inner.full_running {
            c.cancel();
        }
        if let Some(c) = &inner.auto_migrate_cancel {
            c.cancel();
        }
    }

    /// Keep (for the next leader) that a full run is going: `Some` when it
    /// started, `None` when it ended.
    pub(super) async fn note_running_full(&self, started: Option<&FullStarted>) {
        let record = {
            let mut inner = self.inner.lock().await;
            inner.leader_record.running_full = started.map(|s| RunningFull {
                tables: s.tables.clone(),
                fix: s.fix,
            });
            inner.leader_record.clone()
        };
        self.coord.save_leader_record(record).await;
    }

    /// Keep a finished run for the next leader (not when this member lost
    /// the leadership meanwhile: the run was stopped for the next leader to
    /// resume, which the record must still say).
    pub(super) async fn keep_full_record(&self, run: &FinishedRun, epoch: u64, started_ms: u64) {
        if !self.coord.is_leader() {
            return;
        }
        let o = &run.outcome;
        let rec = FullRecord {
            state: run.state,
            epoch,
            started_ms,
            finished_ms: wall_ms(),
            completed: o.completed,
            error: o.error.clone(),
            all_tables: o.all_tables,
            tables_checked: o.tables_checked,
            rows_checked: o.rows_checked,
            found: o.found,
            repaired: o.repaired,
            skipped: o.skipped.clone(),
            mirror_at_start: run.mirror_at_start,
        };
        let record = {
            let mut inner = self.inner.lock().await;
            inner.leader_record.last_full = Some(rec);
            inner.leader_record.running_full = None;
            inner.leader_record.clone()
        };
        self.coord.save_leader_record(record).await;
    }

    /// What only the leader knows, for the other members' `/status`:
    /// next moves (guard blockers), validation, automation, open events.
    pub async fn leader_report(&self) -> serde_json::Value {
        let inner = self.inner.lock().await;
        let state = inner.persisted.state;
        let next_moves: Vec<NextMove> = state
            .legal_targets()
            .into_iter()
            .map(|to| {
                let blockers = self.blockers(&inner, state, to);
                NextMove {
                    to,
                    allowed: blockers.is_empty(),
                    forced_only: !blockers.is_empty(),
                    blockers,
                }
            })
            .collect();
        let status = json!({
            "next_moves": next_moves,
            "open_inconsistencies": self.open_inconsistencies(),
            "auto_migrate": inner.auto_migrate,
            "auto_promotion": {
                "enabled": self.settings.auto_promotion,
                "quiet_period_ms": self.settings.quiet_period.as_millis() as u64,
                "waiting_for": inner.promotion_waiting_for,
            },
            "validation": {
                "available": self.validation.is_some(),
                "full_running": inner.full_running.is_some(),
                "last_full": inner.last_full.as_ref().map(super::runs::public),
            },
            "mirror_health": self.mirror_now(),
        });
        drop(inner);
        let mut status = status;
        if let Some(detail) = self.validation_detail() {
            status["validation_detail"] = serde_json::to_value(detail).unwrap_or_default();
        }
        status
    }

    /// `/status` as JSON: this member's view, with what only the leader
    /// knows taken from its last report on the other members.
    pub async fn status_json(&self) -> serde_json::Value {
        let mut status = serde_json::to_value(self.status().await).unwrap_or_default();
        if let Some(detail) = self.validation_detail() {
            status["validation_detail"] = serde_json::to_value(detail).unwrap_or_default();
        }
        if let Some(fleet) = self.coord.fleet_status() {
            status["fleet"] = fleet;
        }
        if let Some(report) = self.coord.leader_report() {
            for key in [
                "open_inconsistencies",
                "auto_migrate",
                "auto_promotion",
                "validation",
                "validation_detail",
                "mirror_health",
            ] {
                status[key] = report[key].clone();
            }
            // The leader's guard; this member's own backend reachability on top.
            if let Some(moves) = report["next_moves"].as_array() {
                status["next_moves"] = merge_moves(moves, &status["next_moves"]);
            }
        }
        status
    }
}

/// The leader's next moves with this member's unreachable-backend blockers added.
fn merge_moves(leader: &[serde_json::Value], mine: &serde_json::Value) -> serde_json::Value {
    let mut out = Vec::new();
    for m in leader {
        let mut m = m.clone();
        let guard = m["blockers"].as_array().cloned().unwrap_or_default();
        let mut blockers = guard.clone();
        let local = mine
            .as_array()
            .and_then(|all| all.iter().find(|x| x["to"] == m["to"]))
            .and_then(|x| x["blockers"].as_array().cloned())
            .unwrap_or_default();
        blockers.extend(
            local
                .into_iter()
                .filter(|b| b.as_str().is_some_and(|s| s.contains(" reachable ("))),
        );
        m["allowed"] = json!(blockers.is_empty());
        m["forced_only"] = json!(!guard.is_empty() && guard.len() == blockers.len());
        m["blockers"] = json!(blockers);
        out.push(m);
    }
    json!(out)
}

fn outcome_of(rec: &FullRecord) -> FullOutcome {
    FullOutcome {
        completed: rec.completed,
        error: rec.error.clone(),
        all_tables: rec.all_tables,
        tables_checked: rec.tables_checked,
        rows_checked: rec.rows_checked,
        found: rec.found,
        repaired: rec.repaired,
        skipped: rec.skipped.clone(),
    }
}
