//! The verifier: takes due keys from the queue, compares them on both sides
//! (the row hashes of `hash.rs`), and settles what still differs.
//!
//! A key that differs on its first re-check is queued once more after
//! `recheck_delay_ms` (a write in flight between the sides — the mirror of a
//! statement cutover relays — has landed by then); one that still differs
//! is recorded as an event, or with `auto_fix` repaired by the fixer (under
//! the base row lock, `fix.rs`) and recorded as fixed. Events are
//! de-duplicated while open, so a row that stays different is reported once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::queue::{Batch, Done, Queue};
use super::status::Counters;
use crate::pattern::Side;
use crate::validate::db::Db;
use crate::validate::diff::{recheck, RowDiff};
use crate::validate::events::{Direction, EventStatus, Finding, Kind};
use crate::validate::keyset::{key_to_json, Key};
use crate::validate::schema::{self, TableInfo};
use crate::validate::{fix, Inner, RunId, ValidateError};

/// Keys taken from the queue per round.
const ROUND: usize = 2_000;
/// Schema information is re-read after this long (or after DDL).
const SCHEMA_TTL: Duration = Duration::from_secs(60);
/// Back-off of a batch whose re-check failed (backend down, lock timeout).
const RETRY: Duration = Duration::from_secs(1);

/// The verifier's view of the current pair.
struct Pair {
    side: Side,
    base: Db,
    target: Db,
    tables: HashMap<String, (Result<TableInfo, String>, Instant)>,
    generation: u64,
}

impl Pair {
    fn open(inner: &Inner, side: Side) -> Result<Pair, ValidateError> {
        let cfg = &inner.cfg;
        let side_cfg = |s: Side| match s {
            Side::Source => &cfg.source,
            Side::Destination => &cfg.destination,
        };
        let checksum = cfg.validation.checksum;
        Ok(Pair {
            side,
            base: Db::open(side, side_cfg(side))?
                .with_checksum(checksum)
                .with_ddl_defaults(cfg.mirror.ddl_defaults),
            target: Db::open(side.other(), side_cfg(side.other()))?.with_checksum(checksum),
            tables: HashMap::new(),
            generation: 0,
        })
    }

    fn direction(&self) -> Direction {
        match self.side {
            Side::Source => Direction::Src,
            Side::Destination => Direction::Dst,
        }
    }

    /// The table as both sides define it (cached), or why it cannot be
    /// checked (`Ok(Err(reason))`: no primary key, missing on a side, …).
    ///
    /// # Errors
    /// information_schema could not be read (transient: not cached).
    async fn table(
        &mut self,
        inner: &Inner,
        name: &str,
    ) -> Result<Result<TableInfo, String>, ValidateError> {
        if let Some((t, at)) = self.tables.get(name) {
            if at.elapsed() < SCHEMA_TTL {
                return Ok(t.clone());
            }
        }
        let utime = &inner.cfg.validation.utime_column;
        let (mut tables, skipped) =
            schema::discover(&self.base, &self.target, &[name.to_string()], utime).await?;
        let t = tables.pop().ok_or_else(|| {
            skipped
                .into_iter()
                .next()
                .map_or_else(|| "not found".to_string(), |s| s.reason)
        });
        self.tables
            .insert(name.to_string(), (t.clone(), Instant::now()));
        Ok(t)
    }
}

/// Run until `stop`: re-check due keys against the current authority.
pub async fn run(
    inner: Arc<Inner>,
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    run_id: RunId,
    stop: CancellationToken,
) {
    let mut pair: Option<Pair> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = queue.wait_work() => {}
        }
        let batches = queue.take_due(ROUND);
        if batches.is_empty() {
            continue;
        }
        let pattern = inner.pattern.load();
        if !pattern.is_double_write() {
            // src_only / dst_only: the other side is not kept equal, so a
            // difference means nothing (full runs and the backfill cover it).
            for b in &batches {
                Counters::add(&counters.keys_skipped, b.keys.len() as u64);
                for (k, _) in &b.keys {
                    queue.finish(&b.table, k, Done::Checked);
                }
            }
            continue;
        }
        let side = pattern.primary();
        if pair.as_ref().is_none_or(|p| p.side != side) {
            if let Some(old) = pair.take() {
                old.base.disconnect().await;
                old.target.disconnect().await;
            }
            match Pair::open(&inner, side) {
                Ok(p) => pair = Some(p),
                Err(e) => {
                    counters.error(&e);
                    for b in &batches {
                        retry_all(&queue, b);
                    }
                    continue;
                }
            }
        }
        let Some(p) = pair.as_mut() else { continue };
        let g = generation.load(std::sync::atomic::Ordering::Relaxed);
        if g != p.generation {
            p.tables.clear();
            p.generation = g;
        }
        for b in batches {
            if let Err(e) = verify(&inner, &queue, &counters, p, run_id, &b).await {
                tracing::warn!(table = %b.table, "re-verification failed, retrying: {e}");
                counters.error(&e);
                p.tables.remove(&b.table);
                retry_all(&queue, &b);
            }
        }
    }
    if let Some(p) = pair {
        p.base.disconnect().await;
        p.target.disconnect().await;
    }
}

fn retry_all(queue: &Queue, b: &Batch) {
    for (k, _) in &b.keys {
        queue.finish(&b.table, k, Done::Retry(RETRY));
    }
}

/// Re-check one batch and settle it.
async fn verify(
    inner: &Arc<Inner>,
    queue: &Queue,
    counters: &Counters,
    p: &mut Pair,
    run_id: RunId,
    b: &Batch,
) -> Result<(), ValidateError> {
    let t = match p.table(inner, &b.table).await? {
        Ok(t) => t,
        Err(reason) => {
            tracing::debug!(table = %b.table, %reason, "changed rows of a table that cannot be validated");
            for (k, _) in &b.keys {
                queue.finish(&b.table, k, Done::Checked);
            }
            return Ok(());
        }
    };
    let (mut first, mut again) = (Vec::new(), Vec::new());
    for (k, attempts) in &b.keys {
        if k.len() != t.pk.len() {
            continue; // a dirty record's single key for a composite key: nothing to look up
        }
        let d = RowDiff {
            key: k.clone(),
            kind: Kind::Neq,
        };
        if *attempts == 0 {
            first.push(d);
        } else {
            again.push(d);
        }
    }
    let (still_first, still_again) = tokio::try_join!(
        recheck(&p.base, &p.target, &t, first),
        recheck(&p.base, &p.target, &t, again)
    )?;
    let delay = Duration::from_millis(inner.cfg.validation.recheck_delay_ms);
    let follow: Vec<Key> = still_first.into_iter().map(|d| d.key).collect();
    if !follow.is_empty() {
        queue.push(b.table.clone(), follow, b.owner, 1, delay);
    }
    settle(inner, counters, p, &t, run_id, still_again).await?;
    Counters::add(&counters.keys_reverified, b.keys.len() as u64);
    metrics::counter!("cutover_capture_keys_reverified_total").increment(b.keys.len() as u64);
    for (k, _) in &b.keys {
        queue.finish(&b.table, k, Done::Checked);
    }
    Ok(())
}

/// Record (or, with `auto_fix`, repair and record as fixed) rows that
/// differed on two re-checks.
async fn settle(
    inner: &Arc<Inner>,
    counters: &Counters,
    p: &Pair,
    t: &TableInfo,
    run_id: RunId,
    diffs: Vec<RowDiff>,
) -> Result<(), ValidateError> {
    if diffs.is_empty() {
        return Ok(());
    }
    let finding = |key: &Key, kind: Kind| Finding {
        table: t.name.clone(),
        pk: key_to_json(&t.pk, key),
        kind,
    };
    let (findings, status) = if inner.cfg.validation.auto_fix {
        let keys: Vec<Key> = diffs.iter().map(|d| d.key.clone()).collect();
        let outcome = fix::fix_keys(&p.base, &p.target, t, &keys).await?;
        let repaired: Vec<Finding> = outcome
            .iter()
            .filter_map(|(k, was)| was.map(|kind| finding(k, kind)))
            .collect();
        Counters::add(&counters.repaired, repaired.len() as u64);
        (repaired, EventStatus::Fixed)
    } else {
        let open = diffs.iter().map(|d| finding(&d.key, d.kind)).collect();
        (open, EventStatus::Open)
    };
    if findings.is_empty() {
        return Ok(());
    }
    for f in &findings {
        metrics::counter!("cutover_inconsistencies_total", "kind" => f.kind.as_str()).increment(1);
        tracing::warn!(table = %f.table, pk = %f.pk, kind = f.kind.as_str(), status = ?status, "change capture: rows differ");
    }
    let n = findings.len() as u64;
    Counters::add(&counters.differences, n);
    inner
        .events()
        .record(findings, p.direction(), run_id, status)?;
    Ok(())
}
