//! What happens to a chunk whose checksums differ, at any size: a chunk with
//! at most `drill_down_rows` rows on each side is compared row by row
//! (`diff.rs`) or, when backfilling into an empty target range, copied in
//! bulk; a larger one is split into up to [`MAX_PARTS`] key ranges of about
//! equal row counts, each part is checksummed on both sides concurrently and
//! only the differing parts are descended into. Memory stays bounded by
//! `drill_down_rows` (pt-table-checksum / sync-diff-inspector bisect the same
//! way), and a single difference in a 1M-row chunk costs about two scans of
//! the chunk, not a fetch of a million hashes.

use std::future::Future;
use std::pin::Pin;

use mysql_async::{Row, Value};

use super::checksum::{boundary, chunk_checksum};
use super::db::{uint, values, Db};
use super::diff::diff_range;
use super::keyset::{range, Key};
use super::schema::TableInfo;
use super::{RunCtx, ValidateError};

/// Parts a differing range is split into per level.
pub const MAX_PARTS: u64 = 16;
/// Levels of splitting before rows are compared regardless of size (a
/// safeguard; 16-way splits reach any realistic size in a few levels).
const MAX_DEPTH: u32 = 12;

/// A chunk checksum on one side: its row count and the algorithm's
/// aggregate(s), compared as the server printed them (a SUM of 64-bit row
/// hashes does not fit in a u64).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sum {
    pub rows: u64,
    pub digest: Vec<Vec<u8>>,
}

impl Sum {
    pub fn of(rows: &[Row]) -> Sum {
        let Some(r) = rows.first() else {
            return Sum::default();
        };
        Sum {
            rows: uint(r, 0),
            digest: values(r)
                .iter()
                .skip(1)
                .map(|v| super::keyset::value_text(v).into_bytes())
                .collect(),
        }
    }
}

/// The checksums of `(lo, hi]` on both sides, concurrently, with the
/// slower side's query time.
pub async fn checksums(
    base: &Db,
    target: &Db,
    t: &TableInfo,
    lo: Option<&Key>,
    hi: Option<&Key>,
) -> Result<(Sum, Sum, std::time::Duration), ValidateError> {
    let (pred, params) = range(&t.pk, lo, hi);
    let sql = chunk_checksum(t, &pred);
    let ((rb, db), (rt, dt)) = tokio::try_join!(
        base.timed_rows(&sql, params.clone()),
        target.timed_rows(&sql, params)
    )?;
    Ok((Sum::of(&rb), Sum::of(&rt), db.max(dt)))
}

/// The `n`-th key (n ≥ 1) after `lo` within `(lo, hi]` on one side.
pub async fn nth_key(
    db: &Db,
    t: &TableInfo,
    lo: Option<&Key>,
    hi: Option<&Key>,
    n: u64,
) -> Result<Option<Key>, ValidateError> {
    let (pred, mut params) = range(&t.pk, lo, hi);
    params.push(Value::UInt(n.saturating_sub(1)));
    let rows = db.rows(&boundary(t, &pred), params).await?;
    Ok(rows.first().map(values))
}

/// Split points of `(lo, hi]`: every `step`-th key of `db` in the range
/// (chained, so each query scans one part), at most `MAX_PARTS - 1` of them.
async fn split_points(
    db: &Db,
    t: &TableInfo,
    lo: Option<&Key>,
    hi: Option<&Key>,
    step: u64,
) -> Result<Vec<Key>, ValidateError> {
    let mut points: Vec<Key> = Vec::new();
    while (points.len() as u64) < MAX_PARTS - 1 {
        let from = points.last().or(lo);
        match nth_key(db, t, from, hi, step).await? {
            // the range's own upper bound is not a split point
            Some(k) if hi.is_none_or(|h| super::keyset::key_id(h) != super::keyset::key_id(&k)) => {
                points.push(k)
            }
            _ => break,
        }
    }
    Ok(points)
}

/// Settle a range whose checksums differ (`b` base, `g` target): copy,
/// compare rows, or split and descend.
pub fn differing<'a>(
    ctx: &'a RunCtx,
    t: &'a TableInfo,
    lo: Option<&'a Key>,
    hi: Option<&'a Key>,
    b: Sum,
    g: Sum,
    depth: u32,
) -> Pin<Box<dyn Future<Output = Result<(), ValidateError>> + Send + 'a>> {
    Box::pin(async move {
        let limit = ctx.cfg.drill_down_rows;
        let rows = b.rows.max(g.rows);
        if rows <= limit || depth >= MAX_DEPTH {
            return leaf(ctx, t, lo, hi, &g).await;
        }
        // Split by the side with more rows: each of its parts then holds at
        // most `step` rows, so every level makes progress.
        let (side, n) = if b.rows >= g.rows {
            (&ctx.base, b.rows)
        } else {
            (&ctx.target, g.rows)
        };
        let parts = n.div_ceil(limit).clamp(2, MAX_PARTS);
        let step = n.div_ceil(parts).max(1);
        let points = split_points(side, t, lo, hi, step).await?;
        let mut bounds: Vec<Option<&Key>> = vec![lo];
        bounds.extend(points.iter().map(Some));
        bounds.push(hi);
        for w in bounds.windows(2) {
            if ctx.stopped() {
                return Ok(());
            }
            if ctx.fix && g.rows == 0 {
                // Backfill: the target has nothing in the whole range, so
                // every part is copied (split further while larger than
                // drill_down_rows); no need to checksum the parts.
                let part = Sum {
                    rows: step,
                    digest: Vec::new(),
                };
                differing(ctx, t, w[0], w[1], part, Sum::default(), depth + 1).await?;
                continue;
            }
            let (sb, sg, _) = checksums(&ctx.base, &ctx.target, t, w[0], w[1]).await?;
            if sb != sg {
                differing(ctx, t, w[0], w[1], sb, sg, depth + 1).await?;
            }
        }
        Ok(())
    })
}

/// A range small enough to handle directly: bulk copy into an empty target
/// range (backfill), otherwise row-by-row comparison and settle.
async fn leaf(
    ctx: &RunCtx,
    t: &TableInfo,
    lo: Option<&Key>,
    hi: Option<&Key>,
    g: &Sum,
) -> Result<(), ValidateError> {
    let (pred, params) = range(&t.pk, lo, hi);
    if ctx.fix && g.rows == 0 {
        let copied = super::fix::copy_range(&ctx.base, &ctx.target, t, &pred, &params).await?;
        ctx.backfilled(&t.name, copied);
        return Ok(());
    }
    let diffs = diff_range(&ctx.base, &ctx.target, t, &pred, &params).await?;
    ctx.settle(t, diffs).await
}
