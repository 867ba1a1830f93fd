//! The control plane's validation seam (`crate::control::Validator`),
//! implemented by [`super::Validator`]: the scheduler's full validations
//! (`/full/*`, auto-promotion, auto-migrate) run through here.
//!
//! Plug in with `control.with_validator(Arc::new(validate::Validator::new(cfg, pattern)?))`.

use crate::control::validator::ValidationFuture;
use crate::control::{CancelToken, ValidationReport};

use super::progress::{Mode, Outcome};
use super::Validator;

impl crate::control::Validator for Validator {
    /// A full run from scratch (fixing when `[validation] auto_fix`); stops
    /// after its current chunk when `cancel` fires and then returns `Err`.
    /// `discrepancies` counts differences left unrepaired.
    fn run_full(&self, tables: Option<Vec<String>>, cancel: CancelToken) -> ValidationFuture {
        let v = self.clone();
        Box::pin(async move {
            let fix = v.inner.cfg.validation.auto_fix;
            v.start_full_exact(tables, fix, true)
                .map_err(|e| e.to_string())?;
            let report = tokio::select! {
                r = v.wait_slot(Mode::Full) => r,
                _ = cancel.cancelled() => {
                    let _ = v.stop_full().await;
                    return Err("validation cancelled".to_string());
                }
            };
            let report = report.ok_or_else(|| "validation task vanished".to_string())?;
            match report.outcome {
                Outcome::Completed => Ok(ValidationReport {
                    tables_checked: report.tables.len() as u64,
                    rows_checked: report.totals.rows_checked,
                    discrepancies: report.remaining(),
                }),
                Outcome::Stopped => Err("validation stopped before completion".into()),
                Outcome::Failed | Outcome::Running => {
                    Err(report.error.unwrap_or_else(|| "validation failed".into()))
                }
            }
        })
    }
}
