//! The fixer: make the target equal to the base, row by row for events and in
//! bulk (multi-row upserts) for backfill.
//!
//! Race safety: the base rows (or, for absent keys, their gaps) are locked with
//! `SELECT … FOR UPDATE` in a base transaction that stays open until the target
//! write has committed. An application write to those rows through the proxy
//! reaches the base first (cutover applies it to the authoritative side before
//! mirroring), so it either committed before our read — then we copy its value —
//! or it waits for our commit and is mirrored to the target after our write.
//! Lock waits are short (`innodb_lock_wait_timeout`) so a cross-server wait
//! cycle with an application transaction ends in a retry, not a hang.
//!
//! Foreign keys: the target session runs with `foreign_key_checks = 0`, as
//! dump/restore tools do (mariadb-dump writes `SET FOREIGN_KEY_CHECKS=0`),
//! so tables can be copied and repaired in any order — a child before its
//! parent, self-references, cycles. Each write copies rows the base already
//! holds under its own constraints, so the target ends as consistent as
//! the base. With checks off InnoDB also performs no `ON DELETE/UPDATE
//! CASCADE`: a repair changes exactly the rows it names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, TxOpts, Value};
use serde::Serialize;

use super::checksum::{column_list_of, delete, full_rows_hashed, upsert};
use super::db::{params_of, values, Db};
use super::diff::{hashes_for_keys, KEY_BATCH};
use super::events::{EventStatus, Inconsistency, Kind};
use super::keyset::{any_of, key_from_json, key_id, Key};
use super::schema::{self, TableInfo};
use super::{Inner, ValidateError};

/// Seconds the fixer waits for a row lock on either side.
const LOCK_WAIT_S: u32 = 5;
/// Bytes of values per multi-row upsert (well under max_allowed_packet).
const UPSERT_BYTES: usize = 4 << 20;

/// What `POST /fix` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FixReport {
    /// Open events taken up.
    pub attempted: u64,
    /// Made equal to the base.
    pub fixed: u64,
    /// Already equal on re-read.
    pub obsolete: u64,
    /// Still open (see `errors`).
    pub failed: u64,
    pub errors: Vec<String>,
    /// Tables where a run found more differences than `max_events_per_run`
    /// let it record: fixing the events cannot finish those; a full run
    /// with fix over them does (`POST /fix` starts one).
    pub unrecorded_tables: Vec<String>,
}

/// A session with a short lock wait; on the target also without foreign
/// key checks (see the module docs).
async fn session(db: &Db, target: bool) -> Result<Conn, ValidateError> {
    let mut c = db.conn().await?;
    let sql = if target {
        format!("SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_S}, foreign_key_checks = 0")
    } else {
        format!("SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_S}")
    };
    c.query_drop(&sql).await.map_err(|e| ValidateError::Query {
        side: db.side,
        sql,
        source: e,
    })?;
    Ok(c)
}

fn qerr(db: &Db, sql: &str, e: mysql_async::Error) -> ValidateError {
    ValidateError::Query {
        side: db.side,
        sql: super::db::truncate(sql),
        source: e,
    }
}

fn approx_size(v: &Value) -> usize {
    match v {
        Value::Bytes(b) => b.len() + 4,
        _ => 9,
    }
}

/// Upsert full rows into the target in multi-row statements.
async fn write_rows(
    db: &Db,
    tx: &mut mysql_async::Transaction<'_>,
    t: &TableInfo,
    rows: Vec<Vec<Value>>,
) -> Result<(), ValidateError> {
    let ncols = t.columns.len().max(1);
    let max_rows = (60_000 / ncols).clamp(1, 1000);
    let mut batch: Vec<Value> = Vec::new();
    let mut n = 0;
    let mut bytes = 0;
    let mut iter = rows.into_iter().peekable();
    while let Some(row) = iter.next() {
        bytes += row.iter().map(approx_size).sum::<usize>();
        batch.extend(row);
        n += 1;
        if n == max_rows || bytes >= UPSERT_BYTES || iter.peek().is_none() {
            let sql = upsert(t, n);
            tx.exec_drop(&sql, params_of(std::mem::take(&mut batch)))
                .await
                .map_err(|e| qerr(db, &sql, e))?;
            n = 0;
            bytes = 0;
        }
    }
    Ok(())
}

async fn delete_keys(
    db: &Db,
    tx: &mut mysql_async::Transaction<'_>,
    t: &TableInfo,
    keys: &[Key],
) -> Result<(), ValidateError> {
    for batch in keys.chunks(KEY_BATCH) {
        let (pred, params) = any_of(&t.pk, batch);
        let sql = delete(t, &pred);
        tx.exec_drop(&sql, params_of(params))
            .await
            .map_err(|e| qerr(db, &sql, e))?;
    }
    Ok(())
}

/// Repair up to [`KEY_BATCH`] keys. Returns each key with what was different
/// (`None`: the sides were already equal on re-read — obsolete).
pub async fn fix_keys(
    base: &Db,
    target: &Db,
    t: &TableInfo,
    keys: &[Key],
) -> Result<Vec<(Key, Option<Kind>)>, ValidateError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let npk_pos: Vec<usize> =
        t.pk.iter()
            .map(|p| t.columns.iter().position(|c| &c.name == p).unwrap_or(0))
            .collect();
    let ncols = t.columns.len();
    // 1. Lock and read the base rows (gap locks for absent keys).
    let mut bconn = session(base, false).await?;
    let mut btx = bconn
        .start_transaction(TxOpts::default())
        .await
        .map_err(|e| qerr(base, "START TRANSACTION", e))?;
    let (pred, params) = any_of(&t.pk, keys);
    let sql = full_rows_hashed(t, &pred, true);
    let rows: Vec<mysql_async::Row> = btx
        .exec(&sql, params_of(params))
        .await
        .map_err(|e| qerr(base, &sql, e))?;
    let mut base_rows: HashMap<String, (Vec<Value>, Value)> = HashMap::new();
    for r in &rows {
        let mut v = values(r);
        let hash = v.pop().unwrap_or(Value::NULL);
        v.truncate(ncols);
        let key: Key = npk_pos.iter().map(|&i| v[i].clone()).collect();
        base_rows.insert(key_id(&key), (v, hash));
    }
    // 2. Re-read the target.
    let target_hash: HashMap<String, Vec<u8>> = hashes_for_keys(target, t, keys)
        .await?
        .into_iter()
        .map(|(k, h)| (key_id(&k), h))
        .collect();
    // 3. Decide per key.
    let mut out = Vec::with_capacity(keys.len());
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for key in keys {
        let id = key_id(key);
        match (base_rows.remove(&id), target_hash.get(&id)) {
            (None, None) => out.push((key.clone(), None)),
            (None, Some(_)) => {
                deletes.push(key.clone());
                out.push((key.clone(), Some(Kind::BaseMissing)));
            }
            (Some((row, hash)), th) => {
                let same = matches!((&hash, th), (Value::Bytes(b), Some(h)) if b == h);
                if same {
                    out.push((key.clone(), None));
                } else {
                    upserts.push(row);
                    let kind = if th.is_some() {
                        Kind::Neq
                    } else {
                        Kind::TargetMissing
                    };
                    out.push((key.clone(), Some(kind)));
                }
            }
        }
    }
    // 4. Write the target while the base locks are held.
    if !upserts.is_empty() || !deletes.is_empty() {
        let mut tconn = session(target, true).await?;
        let mut ttx = tconn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| qerr(target, "START TRANSACTION", e))?;
        write_rows(target, &mut ttx, t, upserts).await?;
        delete_keys(target, &mut ttx, t, &deletes).await?;
        ttx.commit().await.map_err(|e| qerr(target, "COMMIT", e))?;
    }
    // 5. Release the base locks.
    btx.commit().await.map_err(|e| qerr(base, "COMMIT", e))?;
    Ok(out)
}

/// Backfill fast path: the target has no rows in this chunk range, so copy
/// every base row of the range (locked) in multi-row upserts. Returns the
/// number of rows copied.
pub async fn copy_range(
    base: &Db,
    target: &Db,
    t: &TableInfo,
    pred: &str,
    params: &[Value],
) -> Result<u64, ValidateError> {
    let mut bconn = session(base, false).await?;
    let mut btx = bconn
        .start_transaction(TxOpts::default())
        .await
        .map_err(|e| qerr(base, "START TRANSACTION", e))?;
    let sql = format!(
        "SELECT {} FROM {} WHERE {pred} FOR UPDATE",
        column_list_of(t),
        super::keyset::quote(&t.name)
    );
    let rows: Vec<mysql_async::Row> = btx
        .exec(&sql, params_of(params.to_vec()))
        .await
        .map_err(|e| qerr(base, &sql, e))?;
    let n = rows.len() as u64;
    let rows: Vec<Vec<Value>> = rows.iter().map(values).collect();
    if !rows.is_empty() {
        let mut tconn = session(target, true).await?;
        let mut ttx = tconn
            .start_transaction(TxOpts::default())
            .await
            .map_err(|e| qerr(target, "START TRANSACTION", e))?;
        write_rows(target, &mut ttx, t, rows).await?;
        ttx.commit().await.map_err(|e| qerr(target, "COMMIT", e))?;
    }
    btx.commit().await.map_err(|e| qerr(base, "COMMIT", e))?;
    Ok(n)
}

/// Repair open events (grouped by table, [`KEY_BATCH`] keys per transaction),
/// marking each fixed or obsolete. A failing batch is retried once.
pub async fn fix_events(
    base: &Db,
    target: &Db,
    inner: &Arc<Inner>,
    open: Vec<Inconsistency>,
) -> Result<FixReport, ValidateError> {
    let mut report = FixReport::default();
    if open.is_empty() {
        return Ok(report);
    }
    let mut by_table: BTreeMap<String, Vec<Inconsistency>> = BTreeMap::new();
    for ev in open {
        by_table.entry(ev.table.clone()).or_default().push(ev);
    }
    let names: Vec<String> = by_table.keys().cloned().collect();
    let (tables, skipped) =
        schema::discover(base, target, &names, &inner.validation_cfg().utime_column).await?;
    for s in skipped {
        let n = by_table.get(&s.table).map_or(0, |v| v.len()) as u64;
        report.attempted += n;
        report.failed += n;
        report.errors.push(format!("{}: {}", s.table, s.reason));
    }
    for t in tables {
        let events = by_table.remove(&t.name).unwrap_or_default();
        report.attempted += events.len() as u64;
        let mut pending: Vec<(u64, Key)> = Vec::new();
        for ev in events {
            match key_from_json(&t.pk, &ev.pk) {
                Some(k) => pending.push((ev.id, k)),
                None => {
                    report.failed += 1;
                    report
                        .errors
                        .push(format!("{} event {}: bad pk {}", t.name, ev.id, ev.pk));
                }
            }
        }
        for batch in pending.chunks(KEY_BATCH) {
            let keys: Vec<Key> = batch.iter().map(|(_, k)| k.clone()).collect();
            let mut result = fix_keys(base, target, &t, &keys).await;
            if result.is_err() {
                tokio::time::sleep(Duration::from_millis(300)).await;
                result = fix_keys(base, target, &t, &keys).await;
            }
            match result {
                Ok(outcomes) => {
                    let by_key: HashMap<String, Option<Kind>> =
                        outcomes.into_iter().map(|(k, o)| (key_id(&k), o)).collect();
                    let mut changes = Vec::new();
                    for (id, k) in batch {
                        let status = match by_key.get(&key_id(k)) {
                            Some(Some(_)) => {
                                report.fixed += 1;
                                EventStatus::Fixed
                            }
                            _ => {
                                report.obsolete += 1;
                                EventStatus::Obsolete
                            }
                        };
                        changes.push((*id, status));
                    }
                    inner.events().set_status(&changes)?;
                }
                Err(e) => {
                    report.failed += batch.len() as u64;
                    report.errors.push(format!("{}: {e}", t.name));
                }
            }
        }
    }
    tracing::info!(
        fixed = report.fixed,
        obsolete = report.obsolete,
        failed = report.failed,
        "fixer finished"
    );
    Ok(report)
}
