//! Per-session metric handles for the per-statement counters.
//!
//! The `metrics` macros build, sort and hash the label set and look it up
//! in the recorder's registry on every call (6 allocations and ~3,500
//! instructions per statement in the profile). A session resolves each
//! (class, target, outcome) handle the first time it needs it and reuses it.
//! Handles are per session, not global, so a session started after the
//! recorder was installed never keeps no-op handles from before.

use std::time::Instant;

use metrics::{Counter, Histogram};

use crate::classify::Class;
use crate::pattern::Side;

const CLASSES: [&str; 5] = ["read", "write", "ddl", "transaction", "session"];
const OUTCOMES: [&str; 2] = ["ok", "error"];

#[derive(Default)]
pub(super) struct StatementMetrics {
    counters: [[[Option<Counter>; 2]; 2]; 5],
    durations: [Option<Histogram>; 2],
}

fn class_index(c: Class) -> usize {
    match c {
        Class::Read => 0,
        Class::Write => 1,
        Class::Ddl => 2,
        Class::Transaction => 3,
        Class::SessionState => 4,
    }
}

impl StatementMetrics {
    pub fn record(&mut self, class: Class, target: Side, failed: bool, started: Instant) {
        let (c, t, o) = (class_index(class), target.index(), failed as usize);
        self.counters[c][t][o]
            .get_or_insert_with(|| {
                metrics::counter!("cutover_statements_total", "class" => CLASSES[c], "target" => target.as_str(), "outcome" => OUTCOMES[o])
            })
            .increment(1);
        self.durations[t]
            .get_or_insert_with(|| metrics::histogram!("cutover_statement_duration_seconds", "target" => target.as_str()))
            .record(started.elapsed().as_secs_f64());
    }
}
