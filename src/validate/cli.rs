//! `cutover validate`: a one-shot run with a progress line on stderr and a
//! summary table on stdout.
//!
//! The authoritative side comes from the persisted migration state (the
//! `state_file` `cutover serve` writes), never from a config default: in
//! `dst_first` the destination is the base and `--fix` copies destination →
//! source. The CLI refuses when it cannot read that state, and when the
//! data directory is locked by a running server (one writer per
//! `data_dir`; use `cutover ctl validate` then, it goes through the server).
//!
//! Exit codes: 0 consistent, 1 discrepancies remain, 2 configuration error,
//! 3 the run could not complete (backend unreachable, query failed, …),
//! 4 refused (no readable migration state, `--pattern` contradicts it, or
//! the data directory is in use by another cutover process).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Overrides};
use crate::pattern::{Pattern, PatternHandle};

use super::progress::{Mode, Outcome, RunReport};
use super::{ValidateError, Validator};

pub const EXIT_CONSISTENT: u8 = 0;
pub const EXIT_DISCREPANCIES: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_FAILED: u8 = 3;
pub const EXIT_REFUSED: u8 = 4;

/// The `validate` subcommand's arguments.
#[derive(Debug, Clone)]
pub struct ValidateArgs {
    pub config: PathBuf,
    /// Tables to validate (empty: `[validation] tables`, else all).
    pub tables: Vec<String>,
    /// Incremental from this update time (ms since the epoch) instead of full.
    pub since: Option<i64>,
    pub fix: bool,
    /// Which side is authoritative, when no migration state exists yet
    /// (it must agree with the persisted state when one does).
    pub pattern: Option<Pattern>,
}

/// Run the subcommand; returns the process exit code.
pub fn main(args: ValidateArgs) -> u8 {
    let mut cfg = match Config::load(&args.config, &Overrides::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cutover: {e}");
            return EXIT_CONFIG;
        }
    };
    let pattern = match authoritative_pattern(&cfg, args.pattern) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("cutover: {msg}");
            return EXIT_REFUSED;
        }
    };
    cfg.initial_pattern = pattern;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cutover: cannot start runtime: {e}");
            return EXIT_FAILED;
        }
    };
    rt.block_on(run(Arc::new(cfg), pattern, args))
}

async fn run(cfg: Arc<Config>, pattern: Pattern, args: ValidateArgs) -> u8 {
    let v = match Validator::new(cfg, PatternHandle::new(pattern)) {
        Ok(v) => v,
        Err(e @ ValidateError::DataDirLocked { .. }) => {
            eprintln!("cutover: {e}");
            return EXIT_REFUSED;
        }
        Err(e) => {
            eprintln!("cutover: {e}");
            return EXIT_CONFIG;
        }
    };
    let tables = (!args.tables.is_empty()).then(|| args.tables.clone());
    let progress = tokio::spawn(show_progress(v.clone(), args.since.is_some()));
    let result = match args.since {
        Some(since) => {
            v.run_incremental_to_completion(tables, since, args.fix)
                .await
        }
        None => v.run_full_to_completion(tables, args.fix).await,
    };
    progress.abort();
    let _ = progress.await;
    let tty = std::io::stderr().is_terminal();
    if tty {
        eprint!("\r\x1b[2K");
    }
    match result {
        Ok(report) => {
            print!("{}", summary(&report));
            let _ = std::io::stdout().flush();
            exit_code(&report)
        }
        Err(e @ ValidateError::Config(_)) => {
            eprintln!("cutover: {e}");
            EXIT_CONFIG
        }
        Err(e) => {
            eprintln!("cutover: {e}");
            EXIT_FAILED
        }
    }
}

/// The pattern whose primary is the base: the persisted state's, which
/// `--pattern` may only confirm; `--pattern` alone when no state exists yet.
///
/// # Errors
/// A sentence for the operator: the state file is unreadable, absent
/// without `--pattern`, or contradicts `--pattern`.
pub fn authoritative_pattern(cfg: &Config, asked: Option<Pattern>) -> Result<Pattern, String> {
    if let crate::config::Coordination::Etcd(e) = &cfg.coordination {
        return Err(format!(
            "[coordination] backend is \"etcd\": the migration state lives in etcd ({}), and \
             validation runs on the fleet's leader; use `cutover ctl validate` against any member",
            e.prefix
        ));
    }
    let store = crate::control::FileStateStore::new(&cfg.state_file);
    match crate::control::StateStore::load(&store) {
        Err(e) => Err(format!("{e}; not validating without the migration state")),
        Ok(Some(p)) => {
            let persisted = p.state.pattern();
            match asked {
                Some(a) if a != persisted => Err(format!(
                    "--pattern {a} contradicts the persisted migration state {} ({}: {} is authoritative); not validating",
                    p.state,
                    cfg.state_file.display(),
                    persisted.primary()
                )),
                _ => Ok(persisted),
            }
        }
        Ok(None) => asked.ok_or_else(|| {
            format!(
                "no migration state at {} (cutover serve writes it); the authoritative side is \
                 taken from it, never from initial_pattern — pass --pattern to name it explicitly \
                 before the first `cutover serve`",
                cfg.state_file.display()
            )
        }),
    }
}

/// The exit code a finished run maps to.
pub fn exit_code(r: &RunReport) -> u8 {
    match r.outcome {
        Outcome::Completed if r.remaining() == 0 => EXIT_CONSISTENT,
        Outcome::Completed => EXIT_DISCREPANCIES,
        _ if r
            .error
            .as_deref()
            .is_some_and(|e| e.contains(".url must name a database")) =>
        {
            EXIT_CONFIG
        }
        _ => EXIT_FAILED,
    }
}

async fn show_progress(v: Validator, incremental: bool) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    };
    loop {
        tokio::time::sleep(every).await;
        let s = v.status();
        let Some(r) = (if incremental { s.incremental } else { s.full }) else {
            continue;
        };
        let current = r.tables.iter().find(|t| !t.done).or(r.tables.last());
        let Some(t) = current else { continue };
        let eta = t
            .eta_seconds
            .map(|e| format!(", ETA {e:.0}s"))
            .unwrap_or_default();
        let line = match r.mode {
            Mode::Full => format!(
                "validating {} ({}/{} tables): {:.1}% {} rows{eta}, {} differences",
                t.table,
                r.tables.iter().filter(|t| t.done).count(),
                r.tables.len(),
                t.percent,
                t.tally.rows_checked,
                r.totals.found()
            ),
            Mode::Incremental => format!(
                "incremental pass {}: {} {} rows, {} differences",
                r.passes + 1,
                t.table,
                t.tally.rows_checked,
                r.totals.found()
            ),
        };
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// The summary table printed at the end.
pub fn summary(r: &RunReport) -> String {
    let mut out = String::new();
    let w = r
        .tables
        .iter()
        .map(|t| t.table.len())
        .chain(r.skipped.iter().map(|s| s.table.len()))
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "{:<w$}  {:>12}  {:>14}  {:>12}  {:>8}  {:>8}\n",
        "table", "rows", "target_missing", "base_missing", "neq", "repaired"
    ));
    for t in &r.tables {
        out.push_str(&format!(
            "{:<w$}  {:>12}  {:>14}  {:>12}  {:>8}  {:>8}\n",
            t.table,
            t.tally.rows_checked,
            t.tally.target_missing,
            t.tally.base_missing,
            t.tally.neq,
            t.tally.repaired
        ));
    }
    for s in &r.skipped {
        out.push_str(&format!("{:<w$}  skipped: {}\n", s.table, s.reason));
    }
    let verdict = match r.outcome {
        Outcome::Completed if r.remaining() == 0 => "consistent".to_string(),
        Outcome::Completed => format!("{} discrepancies remain", r.remaining()),
        Outcome::Stopped => "stopped before completion".into(),
        Outcome::Failed | Outcome::Running => {
            format!("failed: {}", r.error.as_deref().unwrap_or("unknown error"))
        }
    };
    out.push_str(&format!(
        "{} validation {} (base {}): {} rows checked, {} found, {} repaired, {} events recorded — {verdict}\n",
        match r.mode {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
        },
        r.run_id,
        r.direction.as_str(),
        r.totals.rows_checked,
        r.totals.found(),
        r.totals.repaired,
        r.events_recorded,
    ));
    out
}
