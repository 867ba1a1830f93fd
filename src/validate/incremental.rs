//! Incremental mode: rows whose update-time column is at or after a start
//! point, read in keyset order on (utime, pk) — never OFFSET — from both
//! sides, each row looked up by key on the other side.
//!
//! Why no row is skipped: a pass only moves forward in (utime, pk) order. A
//! row updated while the pass runs gets a new utime ≥ every utime already
//! passed (utimes are "now" when written), so it lies ahead of the pass and is
//! read later in this pass — or, in the corner case of the very same utime with
//! a smaller key, or a transaction committing late, by the next pass, which
//! restarts `incremental_overlap_ms` before the previous pass's last utime.
//! A one-shot run (no interval) therefore does its pass plus one catch-up pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::Value;

use super::checksum::row_hash;
use super::db::{values, Db};
use super::diff::{compare, hashes_for_keys, RowDiff};
use super::keyset::{after, column_list, quote, Key};
use super::progress::{Outcome, TableProgress};
use super::schema::{self, Skipped, TableInfo, UtimeKind};
use super::throttle::{ChunkSizer, Pace, Throttle};
use super::{RunCtx, ValidateError};

/// Where a scan is: the last (utime, pk) it read.
type Position = Option<(Value, Key)>;

pub async fn run(
    ctx: Arc<RunCtx>,
    tables: Option<Vec<String>>,
    since_ms: i64,
    interval_ms: Option<u64>,
) -> Result<Outcome, ValidateError> {
    let wanted = tables.unwrap_or_else(|| ctx.cfg.tables.clone());
    let (all, mut skipped) =
        schema::discover(&ctx.base, &ctx.target, &wanted, &ctx.cfg.utime_column).await?;
    let mut tables = Vec::new();
    for t in all {
        if t.utime.is_some() {
            tables.push(t);
        } else {
            skipped.push(Skipped {
                table: t.name.clone(),
                reason: format!(
                    "no update-time column `{}` (BIGINT milliseconds or DATETIME/TIMESTAMP)",
                    ctx.cfg.utime_column
                ),
            });
        }
    }
    ctx.update(|r| {
        r.skipped = skipped;
        r.tables = tables
            .iter()
            .map(|t| TableProgress::new(&t.name, t.estimated_rows))
            .collect();
    });
    // [base scan, target scan] positions per table.
    let mut pos: HashMap<String, [Position; 2]> = HashMap::new();
    let mut passes = 0u64;
    loop {
        for t in &tables {
            let p = pos.entry(t.name.clone()).or_insert([None, None]);
            for (i, scanning_base) in [(0, true), (1, false)] {
                match scan(&ctx, t, scanning_base, since_ms, p[i].take()).await? {
                    Some(next) => p[i] = next,
                    None => return Ok(Outcome::Stopped),
                }
            }
        }
        passes += 1;
        ctx.update(|r| r.passes = passes);
        match interval_ms {
            None if passes >= 2 => {
                ctx.update(|r| r.tables.iter_mut().for_each(|t| t.done = true));
                return Ok(Outcome::Completed);
            }
            None => {}
            Some(ms) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    _ = ctx.stop.cancelled() => {}
                }
            }
        }
        if ctx.stopped() {
            return Ok(Outcome::Stopped);
        }
    }
}

/// The predicate where a pass starts: `utime >= since`, or the previous
/// pass's last utime minus the overlap.
fn start_pred(
    ctx: &RunCtx,
    ucol: &str,
    kind: UtimeKind,
    since_ms: i64,
    prev: &Position,
) -> (String, Vec<Value>) {
    let q = quote(ucol);
    let overlap = ctx.cfg.incremental_overlap_ms as i64;
    match (prev, kind) {
        (None, UtimeKind::Millis) => (format!("{q} >= ?"), vec![Value::Int(since_ms)]),
        (None, UtimeKind::Temporal) => (
            format!("{q} >= FROM_UNIXTIME(? / 1000)"),
            vec![Value::Int(since_ms)],
        ),
        (Some((u, _)), UtimeKind::Millis) => (
            format!("{q} >= ? - ?"),
            vec![u.clone(), Value::Int(overlap)],
        ),
        (Some((u, _)), UtimeKind::Temporal) => (
            format!("{q} >= ? - INTERVAL ? MICROSECOND"),
            vec![u.clone(), Value::Int(overlap * 1000)],
        ),
    }
}

/// One pass over one table from one side. Returns the new position, or
/// `None` when stopped.
async fn scan(
    ctx: &RunCtx,
    t: &TableInfo,
    scanning_base: bool,
    since_ms: i64,
    prev: Position,
) -> Result<Option<Position>, ValidateError> {
    let Some((ucol, kind)) = t.utime.clone() else {
        return Ok(Some(prev));
    };
    let (this, other): (&Db, &Db) = if scanning_base {
        (&ctx.base, &ctx.target)
    } else {
        (&ctx.target, &ctx.base)
    };
    let mut cols = vec![ucol.clone()];
    cols.extend(t.pk.iter().cloned());
    let select = format!(
        "SELECT {}, {} FROM {} WHERE ",
        column_list(&cols),
        row_hash(t),
        quote(&t.name)
    );
    let order = format!(" ORDER BY {} LIMIT ?", column_list(&cols));
    let mut sizer = ChunkSizer::new(&ctx.cfg);
    let mut throttle = Throttle::new(&ctx.cfg);
    ctx.update(|r| r.table_mut(&t.name).map(|tp| tp.begin()));
    let (mut pred, mut params) = start_pred(ctx, &ucol, kind, since_ms, &prev);
    let mut last = prev;
    let label = ctx.direction_label();
    loop {
        if ctx.stopped() {
            return Ok(None);
        }
        let n = sizer.size();
        let mut p = params.clone();
        p.push(Value::UInt(n));
        let sql = format!("{select}{pred}{order}");
        let started = Instant::now();
        let (rows, took) = this.timed_rows(&sql, p).await?;
        let mut batch = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut v = values(r);
            let hash = match v.pop() {
                Some(Value::Bytes(b)) => b,
                _ => Vec::new(),
            };
            let u = v.remove(0);
            last = Some((u, v.clone()));
            batch.push((v, hash));
        }
        let keys: Vec<Key> = batch.iter().map(|(k, _)| k.clone()).collect();
        let theirs = hashes_for_keys(other, t, &keys).await?;
        // Scanning the target: its rows absent from the base are base_missing.
        let diffs: Vec<RowDiff> = if scanning_base {
            compare(batch, theirs)
        } else {
            compare(theirs, batch)
        };
        ctx.settle(t, diffs).await?;
        let count = rows.len() as u64;
        metrics::histogram!("cutover_validation_chunk_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("cutover_validation_rows_checked_total", "direction" => label)
            .increment(count);
        ctx.update(|r| {
            if let Some(tp) = r.table_mut(&t.name) {
                tp.tally.rows_checked += count;
                tp.chunks += 1;
                tp.chunk_rows = n;
            }
        });
        if count < n {
            return Ok(Some(last));
        }
        let Some((u, k)) = &last else {
            return Ok(Some(last));
        };
        let mut key = vec![u.clone()];
        key.extend(k.iter().cloned());
        (pred, params) = after(&cols, &key);
        sizer.observe(count, took);
        if throttle.after_chunk(count, took).await == Pace::BackedOff {
            sizer.shrink();
            ctx.update(|r| r.backoffs += 1);
        }
    }
}
