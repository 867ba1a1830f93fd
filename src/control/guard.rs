//! The authority-move guard: which moves need proof that the two sides hold
//! the same data, and what is missing for it — as a list of named blockers
//! computed in one function, [`move_blockers`].
//!
//! A move is *guarded* when it makes the other side authoritative (e.g.
//! `src_first → dst_first`, and the rollback `dst_first → src_first`), or
//! when it stops mirroring to the source, the side a rollback returns to
//! (`dst_first → dst_only`). A guarded move is refused (HTTP 409 naming the
//! blockers) unless a full validation of every table that started after the
//! previous move completed clean — nothing left different, no table skipped
//! — no mirror failure, mismatch or unsafe statement was counted since it
//! started, and no inconsistency is open. `?force=true` overrides; the
//! history records what was overridden.
//!
//! Blocking server drift (`drift.rs`, issue #19) is a blocker of every
//! guarded move. Later blockers (fleet members) are added here; which data
//! path counter means "the mirror diverged" is decided in one place,
//! [`mirror_health`].

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::state_machine::State;
use super::validation::FullOutcome;
use crate::pattern::{Pattern, Side};
use crate::stats::DataPathStats;

/// Data-path counters that say the mirror side may have diverged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorHealth {
    /// Mirrored writes the authoritative side applied (committed) and the
    /// other side did not (`cutover_mirror_failures_total`): divergence.
    /// Not counted: the mirror's share of a transaction the authoritative
    /// side rolled back, errors a retry fixed, errors of session-state
    /// statements.
    pub failures: u64,
    /// Mirrored statements whose outcome (affected rows, generated id)
    /// differed from the primary's.
    pub mismatches: u64,
    /// Mirrored statements that could not be made deterministic.
    pub unsafe_statements: u64,
}

impl MirrorHealth {
    /// What was counted since `earlier`, or `None` when nothing was.
    pub fn since(self, earlier: MirrorHealth) -> Option<MirrorHealth> {
        let d = MirrorHealth {
            failures: self.failures.saturating_sub(earlier.failures),
            mismatches: self.mismatches.saturating_sub(earlier.mismatches),
            unsafe_statements: self
                .unsafe_statements
                .saturating_sub(earlier.unsafe_statements),
        };
        (d != MirrorHealth::default()).then_some(d)
    }
}

/// The one place that reads mirror health from the data path: only the
/// divergence signals (lost writes, result mismatches, unsafe statements),
/// never the diagnostic `secondary_errors` (issue 20).
pub fn mirror_health(stats: &DataPathStats) -> MirrorHealth {
    let r = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    MirrorHealth {
        failures: r(&stats.double_write_failure),
        mismatches: r(&stats.mirror_mismatches),
        unsafe_statements: r(&stats.unsafe_statements),
    }
}

/// A finished full validation, with what the guard needs to judge it.
#[derive(Debug, Clone)]
pub struct FinishedRun {
    pub started: Instant,
    pub finished: Instant,
    /// The state the run started in.
    pub state: State,
    pub outcome: FullOutcome,
    /// Mirror health when the run started.
    pub mirror_at_start: MirrorHealth,
}

/// Everything [`move_blockers`] reads.
#[derive(Debug, Clone)]
pub struct GuardInput<'a> {
    pub from: State,
    pub to: State,
    /// A validator is plugged in.
    pub validation_available: bool,
    /// When the current state was entered (the previous move).
    pub entered_state_at: Instant,
    pub last_full: Option<&'a FinishedRun>,
    pub mirror_now: MirrorHealth,
    pub open_inconsistencies: u64,
    /// Blocking server drift, in words (`drift::DriftReport::blockers`).
    pub drift: &'a [String],
}

/// Whether moving `from → to` needs the proof (see the module docs).
pub fn is_guarded(from: Pattern, to: Pattern) -> bool {
    if from.primary() != to.primary() {
        return true;
    }
    // Mirroring to the source stops: it can no longer serve a rollback.
    from.uses(Side::Source) && !to.uses(Side::Source)
}

/// What is missing before `from → to` may be made without `force`, in words
/// (empty: nothing; the move is allowed).
pub fn move_blockers(g: &GuardInput<'_>) -> Vec<String> {
    if !is_guarded(g.from.pattern(), g.to.pattern()) {
        return Vec::new();
    }
    let mut b: Vec<String> = g.drift.to_vec();
    if !g.validation_available {
        b.push("a full validation, but no validator is available in this process".into());
        return b;
    }
    match g.last_full {
        None => b.push(format!(
            "a full validation started in {} (none has run since the move to it)",
            g.from
        )),
        Some(run) if run.state != g.from || run.started < g.entered_state_at => b.push(format!(
            "a full validation started in {} (the last one started before the move to it, in {})",
            g.from, run.state
        )),
        Some(run) => run_blockers(run, g, &mut b),
    }
    if g.open_inconsistencies > 0 {
        b.push(format!(
            "no open inconsistencies ({} open: POST /fix, or a full validation with fix)",
            g.open_inconsistencies
        ));
    }
    b
}

/// What the last full validation (started in the current state) lacks.
fn run_blockers(run: &FinishedRun, g: &GuardInput<'_>, b: &mut Vec<String>) {
    let o = &run.outcome;
    if let Some(e) = &o.error {
        b.push(format!(
            "a completed full validation (the last one did not complete: {e})"
        ));
        return;
    }
    if o.remaining() > 0 {
        b.push(format!(
            "a full validation with 0 discrepancies (the last one left {})",
            o.remaining()
        ));
    }
    if !o.all_tables {
        b.push("a full validation of every table (the last one was limited by `tables`)".into());
    }
    if !o.skipped.is_empty() {
        b.push(format!(
            "every table validated (the last run skipped {})",
            o.skipped.join("; ")
        ));
    }
    if let Some(d) = g.mirror_now.since(run.mirror_at_start) {
        b.push(format!(
            "a new full validation: an inconsistency was recorded after the last one started \
             ({} mirror failures (writes the mirror lost), {} mismatches, {} unsafe statements)",
            d.failures, d.mismatches, d.unsafe_statements
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_moves_are_guarded() {
        use Pattern::*;
        assert!(is_guarded(SrcFirst, DstFirst));
        assert!(is_guarded(DstFirst, SrcFirst));
        assert!(is_guarded(DstFirst, DstOnly));
        assert!(is_guarded(SrcOnly, DstOnly));
        assert!(!is_guarded(SrcOnly, SrcFirst));
        assert!(!is_guarded(SrcFirst, SrcOnly));
        assert!(!is_guarded(DstOnly, DstFirst));
        assert!(!is_guarded(DstOnly, DstOnly));
    }

    fn clean_run(state: State, started: Instant) -> FinishedRun {
        FinishedRun {
            started,
            finished: started,
            state,
            outcome: FullOutcome {
                completed: true,
                all_tables: true,
                ..FullOutcome::default()
            },
            mirror_at_start: MirrorHealth::default(),
        }
    }

    #[test]
    fn blockers_name_what_is_missing() {
        let entered = Instant::now();
        let mut g = GuardInput {
            from: State::SrcFirst,
            to: State::DstFirst,
            validation_available: true,
            entered_state_at: entered,
            last_full: None,
            mirror_now: MirrorHealth::default(),
            open_inconsistencies: 0,
            drift: &[],
        };
        let b = move_blockers(&g);
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(
            b[0].contains("full validation started in src_first"),
            "{b:?}"
        );

        let run = clean_run(State::SrcFirst, entered);
        g.last_full = Some(&run);
        assert!(move_blockers(&g).is_empty());

        g.mirror_now.failures = 2;
        g.open_inconsistencies = 3;
        let b = move_blockers(&g);
        assert_eq!(b.len(), 2, "{b:?}");
        assert!(b[0].contains("2 mirror failures"), "{b:?}");
        assert!(b[1].contains("3 open"), "{b:?}");

        let mut dirty = clean_run(State::SrcFirst, entered);
        dirty.outcome.found = 5;
        dirty.outcome.repaired = 1;
        dirty.outcome.all_tables = false;
        g.last_full = Some(&dirty);
        g.mirror_now = MirrorHealth::default();
        g.open_inconsistencies = 0;
        let b = move_blockers(&g);
        assert!(b[0].contains("the last one left 4"), "{b:?}");
        assert!(b[1].contains("every table"), "{b:?}");

        g.validation_available = false;
        assert!(move_blockers(&g)[0].contains("no validator is available"));
        g.to = State::SrcOnly;
        assert!(
            move_blockers(&g).is_empty(),
            "src_first -> src_only is not guarded"
        );
    }
}
