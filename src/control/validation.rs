//! Plugs the validator (`crate::validate`) into the control plane: the
//! scheduler's [`Validator`] seam, and the consumer of the data path's dirty
//! records (mirror mismatches and unsafe statements) that asks for targeted
//! re-checks.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

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

/// Drain the data path's dirty records, and watch the re-verification queue's
/// findings: each dirty record and each new difference found by change capture
/// marks an inconsistency (which holds back auto-promotion). Dirty records go
/// to the validator's re-verification
/// queue (`validate::capture`), which re-checks keyed rows after
/// `recheck_delay_ms` (repairing them with `auto_fix`) — the same queue binlog
/// change capture feeds. Records without a key name a table the next full
/// validation covers; they are logged.
pub async fn consume_dirty(
    v: Arc<validate::Validator>,
    scheduler: Arc<Scheduler>,
    stats: Arc<DataPathStats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut capture_differences = v.capture_status().differences_total;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // A difference change capture (or a dirty re-check) found also holds
        // back auto-promotion.
        let found = v.capture_status().differences_total;
        if found > capture_differences {
            capture_differences = found;
            scheduler.record_inconsistency().await;
        }
        let records = stats.dirty.drain();
        if records.is_empty() {
            continue;
        }
        scheduler.record_inconsistency().await;
        let keys = records
            .into_iter()
            .filter_map(|r| {
                Some(validate::capture::DirtyKey {
                    table: plain_table(r.table.as_deref()?),
                    key: r.key,
                    reason: r.reason,
                })
            })
            .collect();
        v.enqueue_dirty(keys);
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
