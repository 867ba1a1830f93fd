//! Plugs the validator (`crate::validate`) into the control plane: the
//! scheduler's [`Validator`] seam, and the consumer of the data path's dirty
//! records (mirror mismatches and unsafe statements) that asks for targeted
//! re-checks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::scheduler::Scheduler;
use super::validator::{CancelToken, ValidationFuture, ValidationReport, Validator};
use crate::stats::DataPathStats;
use crate::validate;

/// The real validator behind the scheduler's seam (auto-promotion,
/// auto-migrate, `/full/*`).
pub struct ValidatorAdapter(pub Arc<validate::Validator>);

impl Validator for ValidatorAdapter {
    fn run_full(&self, tables: Option<Vec<String>>, cancel: CancelToken) -> ValidationFuture {
        let v = Arc::clone(&self.0);
        Box::pin(async move {
            let fix = v.config().validation.auto_fix;
            let run = v.run_full_resuming(tables, fix);
            tokio::pin!(run);
            tokio::select! {
                r = &mut run => {
                    let r = r.map_err(|e| e.to_string())?;
                    if !matches!(r.outcome, validate::progress::Outcome::Completed) {
                        return Err(r.error.unwrap_or_else(|| format!("validation ended: {:?}", r.outcome)));
                    }
                    Ok(ValidationReport {
                        tables_checked: r.tables.len() as u64,
                        rows_checked: r.totals.rows_checked,
                        // what is still different after the run (repairs subtracted)
                        discrepancies: r.totals.found().saturating_sub(r.totals.repaired),
                    })
                }
                _ = cancel.cancelled() => {
                    let _ = v.stop_full().await;
                    Err("validation cancelled".into())
                }
            }
        })
    }
}

/// Drain the data path's dirty records: each marks an inconsistency (which
/// holds back auto-promotion) and, when the key is known, gets a targeted
/// re-check of that row (repaired at once with `auto_fix`). Records without
/// a key name a table that the next full validation covers; they are logged.
pub async fn consume_dirty(
    v: Arc<validate::Validator>,
    scheduler: Arc<Scheduler>,
    stats: Arc<DataPathStats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let records = stats.dirty.drain();
        if records.is_empty() {
            continue;
        }
        scheduler.record_inconsistency().await;
        let mut keyed = BTreeSet::new();
        let mut tables = BTreeSet::new();
        for r in records {
            let Some(table) = r.table.as_deref().map(plain_table) else {
                continue;
            };
            match r.key {
                Some(k) => keyed.insert((table, k)),
                None => tables.insert(table),
            };
        }
        for t in tables {
            info!(table = %t, "a mirrored statement may have diverged this table; the next full validation re-checks it");
        }
        let mut found = false;
        for (table, key) in keyed {
            match v.recheck_key(&table, key).await {
                Ok(Some(e)) => {
                    warn!(%table, key, kind = ?e.kind, "targeted re-check found a difference");
                    found = true;
                }
                Ok(None) => {}
                Err(e) => warn!(%table, key, "targeted re-check failed: {e}"),
            }
        }
        if found && v.config().validation.auto_fix {
            match v.fix_open().await {
                Ok(r) => info!(?r, "auto_fix repaired re-checked rows"),
                Err(e) => warn!("auto_fix after re-check failed: {e}"),
            }
        }
    }
}

/// `shop.orders` / `` `orders` `` → `orders` (the validator works in the
/// configured database).
fn plain_table(t: &str) -> String {
    t.rsplit('.')
        .next()
        .unwrap_or(t)
        .trim_matches('`')
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_table_names() {
        assert_eq!(super::plain_table("shop.orders"), "orders");
        assert_eq!(super::plain_table("`m`"), "m");
    }
}
