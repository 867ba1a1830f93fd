//! Row-level drill-down of a differing chunk: fetch (pk, row hash) from both
//! sides, match by key, classify. Also the re-check of a handful of keys.
//! (What a run does with what it finds is `RunCtx::settle` in `run.rs`; the
//! fixer reads row hashes from here, so this module never imports it.)

use std::collections::HashMap;
use std::sync::Arc;

use mysql_async::{Row, Value};
use serde_json::Value as Json;

use super::checksum::row_hashes;
use super::db::{values, Db};
use super::events::{Direction, EventStatus, Finding, Inconsistency, Kind};
use super::keyset::{any_of, column_list, key_from_json, key_id, key_to_json, Key};
use super::schema::{self, TableInfo};
use super::{Inner, RunId, ValidateError};

/// Keys per `WHERE (pk = …) OR …` statement.
pub const KEY_BATCH: usize = 200;

/// One differing row.
#[derive(Debug, Clone)]
pub struct RowDiff {
    pub key: Key,
    pub kind: Kind,
}

type Hashed = Vec<(Key, Vec<u8>)>;

fn split(row: &Row, npk: usize) -> (Key, Vec<u8>) {
    let v = values(row);
    let hash = match v.get(npk) {
        Some(Value::Bytes(b)) => b.clone(),
        _ => Vec::new(),
    };
    (v.into_iter().take(npk).collect(), hash)
}

async fn hashes(
    db: &Db,
    t: &TableInfo,
    pred: &str,
    params: Vec<Value>,
) -> Result<Hashed, ValidateError> {
    let rows = db.rows(&row_hashes(t, pred), params).await?;
    Ok(rows.iter().map(|r| split(r, t.pk.len())).collect())
}

/// (pk, hash) of the rows with these keys.
pub async fn hashes_for_keys(
    db: &Db,
    t: &TableInfo,
    keys: &[Key],
) -> Result<Hashed, ValidateError> {
    let mut out = Vec::new();
    for batch in keys.chunks(KEY_BATCH) {
        let (pred, params) = any_of(&t.pk, batch);
        out.extend(hashes(db, t, &pred, params).await?);
    }
    Ok(out)
}

/// Merge by key: base-only → target_missing, target-only → base_missing,
/// both with different hashes → neq.
pub fn compare(base: Hashed, target: Hashed) -> Vec<RowDiff> {
    let mut t: HashMap<String, (Key, Vec<u8>)> = target
        .into_iter()
        .map(|(k, h)| (key_id(&k), (k, h)))
        .collect();
    let mut out = Vec::new();
    for (k, h) in base {
        match t.remove(&key_id(&k)) {
            None => out.push(RowDiff {
                key: k,
                kind: Kind::TargetMissing,
            }),
            Some((_, th)) if th != h => out.push(RowDiff {
                key: k,
                kind: Kind::Neq,
            }),
            Some(_) => {}
        }
    }
    let mut extra: Vec<RowDiff> = t
        .into_values()
        .map(|(k, _)| RowDiff {
            key: k,
            kind: Kind::BaseMissing,
        })
        .collect();
    extra.sort_by_key(|d| key_id(&d.key));
    out.extend(extra);
    out
}

/// Drill down one chunk range on both sides concurrently.
pub async fn diff_range(
    base: &Db,
    target: &Db,
    t: &TableInfo,
    pred: &str,
    params: &[Value],
) -> Result<Vec<RowDiff>, ValidateError> {
    let (b, tg) = tokio::try_join!(
        hashes(base, t, pred, params.to_vec()),
        hashes(target, t, pred, params.to_vec())
    )?;
    Ok(compare(b, tg))
}

/// Re-read these rows on both sides; keep the ones that still differ.
pub async fn recheck(
    base: &Db,
    target: &Db,
    t: &TableInfo,
    diffs: Vec<RowDiff>,
) -> Result<Vec<RowDiff>, ValidateError> {
    if diffs.is_empty() {
        return Ok(diffs);
    }
    let keys: Vec<Key> = diffs.into_iter().map(|d| d.key).collect();
    let (b, tg) = tokio::try_join!(
        hashes_for_keys(base, t, &keys),
        hashes_for_keys(target, t, &keys)
    )?;
    Ok(compare(b, tg))
}

/// The one-row re-check behind [`super::Validator::recheck`].
pub async fn recheck_one(
    base: &Db,
    target: &Db,
    inner: &Arc<Inner>,
    direction: Direction,
    table: &str,
    pk: Json,
    run_id: RunId,
) -> Result<Option<Inconsistency>, ValidateError> {
    let cfg = inner.validation_cfg();
    let t = schema::discover_one(base, target, table, &cfg.utime_column).await?;
    let key = key_from_json(&t.pk, &pk).ok_or_else(|| ValidateError::BadKey {
        table: table.into(),
        message: format!("expected {{{}}}, got {pk}", column_list(&t.pk)),
    })?;
    let diffs = recheck(
        base,
        target,
        &t,
        vec![RowDiff {
            key,
            kind: Kind::Neq,
        }],
    )
    .await?;
    let Some(d) = diffs.into_iter().next() else {
        return Ok(None);
    };
    let pk = key_to_json(&t.pk, &d.key);
    let mut events = inner.events();
    if let Some(id) = events.open_for(&t.name, &pk) {
        return Ok(events.get(id).cloned());
    }
    metrics::counter!("cutover_inconsistencies_total", "kind" => d.kind.as_str()).increment(1);
    let new = events.record(
        vec![Finding {
            table: t.name.clone(),
            pk,
            kind: d.kind,
        }],
        direction,
        run_id,
        EventStatus::Open,
    )?;
    Ok(new.into_iter().next())
}
