//! Full mode: walk every table by primary key in chunks, compare a checksum
//! computed inside each database, drill down only the chunks that differ.
//!
//! Chunk bounds come from the UNION of both sides' keys: the next upper bound
//! is the smaller of "the n-th key after `lo`" on each side, and the last chunk
//! is open-ended. So rows that exist only on the target — even beyond the
//! base's last key — fall into some chunk and are found (base_missing), and
//! no chunk holds much more than n rows on either side.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::checkpoint::{self, Checkpoint, TableCheckpoint};
use super::drill::{checksums, differing, nth_key};
use super::intrange::{self, IntRange};
use super::keyset::{key_from_json, rough_cmp, value_to_json, Key};
use super::progress::{Outcome, TableProgress};
use super::schema::{self, TableInfo};
use super::throttle::{ChunkSizer, Pace, Throttle};
use super::{now_ms, utc_text, RunCtx, RunId, ValidateError};

/// What `POST /full/start` will do given a resumable checkpoint.
pub struct ResumePlan {
    /// The run to resume, if any.
    pub run_id: Option<RunId>,
    /// The tables the run covers.
    pub tables: Option<Vec<String>>,
    pub note: Option<String>,
}

/// Resume `saved` (over its own tables) when there is one; say so when the
/// request asked for other tables or another `fix`.
pub fn resume_plan(
    saved: Option<&Checkpoint>,
    asked: Option<Vec<String>>,
    fix: bool,
) -> ResumePlan {
    let Some(c) = saved else {
        return ResumePlan {
            run_id: None,
            tables: asked,
            note: None,
        };
    };
    let mut notes = Vec::new();
    if asked.is_some() && asked != c.requested {
        let scope = |t: &Option<Vec<String>>| {
            t.as_ref()
                .map_or("every table".to_string(), |t| t.join(", "))
        };
        notes.push(format!(
            "resuming run {} from its checkpoint over {}; the tables asked for ({}) are not checked by it \
             — send {{\"restart\": true}} to start a new run over them",
            c.run_id,
            scope(&c.requested),
            scope(&asked)
        ));
    }
    if fix != c.fix {
        notes.push(format!(
            "resuming run {} (started with fix={}) with fix={fix}: only the rest of the run {}",
            c.run_id,
            c.fix,
            if fix {
                "repairs; differences found before are open events (POST /fix)"
            } else {
                "records instead of repairing"
            }
        ));
    }
    ResumePlan {
        run_id: Some(c.run_id),
        tables: c.requested.clone(),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

fn key_json(k: &Key) -> serde_json::Value {
    serde_json::Value::Array(k.iter().map(value_to_json).collect())
}

pub async fn run(ctx: Arc<RunCtx>, tables: Option<Vec<String>>) -> Result<Outcome, ValidateError> {
    let saved = checkpoint::load(ctx.storage.as_ref())
        .filter(|c| c.run_id == ctx.run_id)
        .filter(|c| {
            let same = c.direction == ctx.direction;
            if !same {
                tracing::warn!("authority changed since the checkpoint was written; starting over");
            }
            same
        });
    let requested = match &saved {
        Some(c) => c.requested.clone(),
        None => tables,
    };
    let wanted = requested.clone().unwrap_or_else(|| ctx.cfg.tables.clone());
    let (tables, skipped) =
        schema::discover(&ctx.base, &ctx.target, &wanted, &ctx.cfg.utime_column).await?;
    for s in &skipped {
        tracing::warn!(table = %s.table, reason = %s.reason, "table skipped");
    }
    let mut cp = saved.unwrap_or_else(|| Checkpoint {
        run_id: ctx.run_id,
        direction: ctx.direction,
        fix: ctx.fix,
        requested,
        started_at: utc_text(now_ms()),
        tables: BTreeMap::new(),
    });
    ctx.update(|r| {
        r.skipped = skipped;
        r.started_at = cp.started_at.clone();
        r.tables = tables
            .iter()
            .map(|t| {
                let mut tp = TableProgress::new(&t.name, t.estimated_rows);
                if let Some(c) = cp.tables.get(&t.name) {
                    tp.tally = c.tally.clone();
                    tp.resumed_rows = c.tally.rows_checked;
                    tp.done = c.done;
                }
                tp
            })
            .collect();
    });
    for t in &tables {
        let state = cp.tables.entry(t.name.clone()).or_insert(TableCheckpoint {
            done: false,
            after: None,
            tally: Default::default(),
        });
        if state.done {
            continue;
        }
        let lo = match &state.after {
            Some(j) => Some(
                key_from_json(&t.pk, j).ok_or_else(|| ValidateError::BadKey {
                    table: t.name.clone(),
                    message: format!("unreadable checkpoint key {j}"),
                })?,
            ),
            None => None,
        };
        if table(&ctx, t, lo, &mut cp).await? == Outcome::Stopped {
            checkpoint::save(ctx.storage.as_ref(), &cp)?;
            return Ok(Outcome::Stopped);
        }
    }
    checkpoint::remove(ctx.storage.as_ref());
    Ok(Outcome::Completed)
}

/// The next chunk's upper bound after `lo`: the smaller of each side's
/// `n`-th key (the union of both sides' keys), `None` when neither side has
/// `n` more keys (the chunk is open-ended and the last).
async fn next_bound(
    ctx: &RunCtx,
    t: &TableInfo,
    lo: Option<&Key>,
    n: u64,
) -> Result<Option<Key>, ValidateError> {
    let (hb, ht) = tokio::try_join!(
        nth_key(&ctx.base, t, lo, None, n),
        nth_key(&ctx.target, t, lo, None, n)
    )?;
    Ok(match (hb, ht) {
        (Some(a), Some(b)) => Some(if rough_cmp(&b, &a).is_lt() { b } else { a }),
        (a, b) => a.or(b),
    })
}

/// How a table's chunk bounds are found.
enum Bounds {
    /// Each side's n-th key (any primary key).
    Keyset,
    /// Arithmetic on a single integer key (`intrange.rs`).
    Int(IntRange),
    /// Both sides empty at the start: one open chunk.
    Empty,
}

impl Bounds {
    async fn start(ctx: &RunCtx, t: &TableInfo) -> Result<Bounds, ValidateError> {
        if !intrange::eligible(t) {
            return Ok(Bounds::Keyset);
        }
        Ok(match IntRange::start(&ctx.base, &ctx.target, t).await? {
            Some(r) => Bounds::Int(r),
            None => Bounds::Empty,
        })
    }

    async fn next(
        &self,
        ctx: &RunCtx,
        t: &TableInfo,
        lo: Option<&Key>,
        n: u64,
    ) -> Result<Option<Key>, ValidateError> {
        match self {
            Bounds::Keyset => next_bound(ctx, t, lo, n).await,
            Bounds::Int(r) => r.next(&ctx.base, t, lo, n).await,
            Bounds::Empty => Ok(None),
        }
    }

    fn observe(&mut self, lo: Option<&Key>, hi: Option<&Key>, rows: u64) {
        if let Bounds::Int(r) = self {
            r.observe(lo, hi, rows);
        }
    }
}

/// Validate one table from `lo` (exclusive) to its end.
///
/// Per chunk, both sides' checksums run concurrently and — pipelined with
/// them — the *next* chunk's bound is found (by arithmetic for an integer
/// key, else by both sides' n-th key), so a chunk costs one round of queries
/// on each server; the chunk size follows `chunk_target_ms`. Differing
/// chunks go to `drill::differing`.
async fn table(
    ctx: &RunCtx,
    t: &TableInfo,
    lo: Option<Key>,
    cp: &mut Checkpoint,
) -> Result<Outcome, ValidateError> {
    let mut sizer = ChunkSizer::new(&ctx.cfg);
    let mut throttle = Throttle::new(&ctx.cfg);
    let label = ctx.direction_label();
    ctx.update(|r| r.table_mut(&t.name).map(|tp| tp.begin()));
    let mut lo = lo;
    let mut n = sizer.size();
    let mut bounds = Bounds::start(ctx, t).await?;
    let mut hi = bounds.next(ctx, t, lo.as_ref(), n).await?;
    loop {
        if ctx.stopped() {
            return Ok(Outcome::Stopped);
        }
        let started = Instant::now();
        let next_n = sizer.size();
        let following = async {
            match &hi {
                Some(h) => bounds.next(ctx, t, Some(h), next_n).await.map(Some),
                None => Ok(None),
            }
        };
        let ((sb, st, latency), following) = tokio::try_join!(
            checksums(&ctx.base, &ctx.target, t, lo.as_ref(), hi.as_ref()),
            following
        )?;
        let rows = sb.rows.max(st.rows);
        let differs = sb != st;
        bounds.observe(lo.as_ref(), hi.as_ref(), rows);
        if differs {
            differing(ctx, t, lo.as_ref(), hi.as_ref(), sb, st, 0).await?;
        }
        metrics::histogram!("cutover_validation_chunk_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("cutover_validation_rows_checked_total", "direction" => label)
            .increment(rows);
        let done = hi.is_none();
        let tally = ctx.update(|r| {
            let tp = r.table_mut(&t.name)?;
            tp.tally.rows_checked += rows;
            tp.chunks += 1;
            tp.differing_chunks += differs as u64;
            tp.chunk_rows = n;
            tp.done = done;
            Some(tp.tally.clone())
        });
        let state = cp.tables.entry(t.name.clone()).or_insert(TableCheckpoint {
            done: false,
            after: None,
            tally: Default::default(),
        });
        state.after = hi.as_ref().map(key_json);
        state.done = done;
        if let Some(tally) = tally {
            state.tally = tally;
        }
        checkpoint::save(ctx.storage.as_ref(), cp)?;
        if done {
            return Ok(Outcome::Completed);
        }
        sizer.observe(rows, latency);
        if throttle.after_chunk(rows, latency).await == Pace::BackedOff {
            sizer.shrink();
            ctx.update(|r| r.backoffs += 1);
        }
        lo = hi;
        hi = following.flatten();
        n = next_n;
    }
}
