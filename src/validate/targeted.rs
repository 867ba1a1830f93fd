//! The table-level re-check behind dirty records that name a table but no
//! row: a trigger, or a stored function, wrote rows the data path cannot
//! name (issue 9, kind 6). The whole table is compared chunk by chunk
//! (`(lo, hi]` keyset ranges of at most `chunk_max_rows`, as a full run
//! does), differing chunks are drilled down, and the rows that still differ
//! after `recheck_delay_ms` (writes in flight between the two sides) are
//! recorded as open events, which `fix_open` repairs. Memory: one chunk's
//! row hashes at a time. It is no run: no checkpoint, no run report, and it
//! never counts as the full validation the authority-move guard requires.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::Value;

use super::checksum::{boundary, chunk_checksum};
use super::db::{values, Db};
use super::diff::{diff_range, recheck, RowDiff};
use super::events::{Direction, EventStatus, Finding};
use super::keyset::{after, key_to_json, range, rough_cmp, Key};
use super::schema::{self, TableInfo};
use super::{Inner, RunId, ValidateError};

/// Compare `table` now; record the rows that differ. Returns how many new
/// open events were recorded.
///
/// # Errors
/// [`ValidateError::Table`] when the table cannot be validated (no primary
/// key, missing on a side); connect/query errors.
pub async fn recheck_table(
    base: &Db,
    target: &Db,
    inner: &Arc<Inner>,
    direction: Direction,
    table: &str,
    run_id: RunId,
) -> Result<u64, ValidateError> {
    let cfg = inner.validation_cfg();
    let t = schema::discover_one(base, target, table, &cfg.utime_column).await?;
    let n = cfg.chunk_max_rows.max(1);
    let delay = Duration::from_millis(cfg.recheck_delay_ms);
    let mut lo: Option<Key> = None;
    let mut found = 0;
    loop {
        let hi = next_bound(base, target, &t, lo.as_ref(), n).await?;
        let (pred, params) = range(&t.pk, lo.as_ref(), hi.as_ref());
        let csql = chunk_checksum(&t, &pred);
        let (rb, rt) = tokio::try_join!(
            base.rows(&csql, params.clone()),
            target.rows(&csql, params.clone())
        )?;
        if rb.first().map(values) != rt.first().map(values) {
            let diffs = diff_range(base, target, &t, &pred, &params).await?;
            tokio::time::sleep(delay).await;
            let diffs = recheck(base, target, &t, diffs).await?;
            found += record(inner, direction, run_id, &t, diffs)?;
        }
        match hi {
            Some(h) => lo = Some(h),
            None => return Ok(found),
        }
    }
}

/// The chunk's upper bound: the smaller of each side's `n`-th key after
/// `lo` (`None`: to the end).
async fn next_bound(
    base: &Db,
    target: &Db,
    t: &TableInfo,
    lo: Option<&Key>,
    n: u64,
) -> Result<Option<Key>, ValidateError> {
    let (lo_pred, mut params) = match lo {
        Some(k) => after(&t.pk, k),
        None => ("1=1".to_string(), Vec::new()),
    };
    params.push(Value::UInt(n.saturating_sub(1)));
    let sql = boundary(t, &lo_pred);
    let (hb, ht) = tokio::try_join!(base.rows(&sql, params.clone()), target.rows(&sql, params))?;
    Ok(match (hb.first().map(values), ht.first().map(values)) {
        (Some(a), Some(b)) => Some(if rough_cmp(&b, &a).is_lt() { b } else { a }),
        (a, b) => a.or(b),
    })
}

/// Record the rows of `diffs` that have no open event yet.
fn record(
    inner: &Arc<Inner>,
    direction: Direction,
    run_id: RunId,
    t: &TableInfo,
    diffs: Vec<RowDiff>,
) -> Result<u64, ValidateError> {
    let mut events = inner.events();
    let mut findings = Vec::new();
    for d in diffs {
        let pk = key_to_json(&t.pk, &d.key);
        if events.open_for(&t.name, &pk).is_none() {
            metrics::counter!("cutover_inconsistencies_total", "kind" => d.kind.as_str())
                .increment(1);
            findings.push(Finding {
                table: t.name.clone(),
                pk,
                kind: d.kind,
            });
        }
    }
    let n = findings.len() as u64;
    if n > 0 {
        events.record(findings, direction, run_id, EventStatus::Open)?;
    }
    Ok(n)
}
