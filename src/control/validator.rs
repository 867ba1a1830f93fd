//! The seam to data validation (issue 4).
//!
//! No validator exists yet. The scheduler takes an optional
//! `Arc<dyn Validator>`: without one, `/full/*` and `/incr/*` answer 501,
//! auto-promotion never fires (it needs a completed, zero-discrepancy full
//! validation) and auto-migrate stops at its first validation step.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

/// What a finished full validation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    pub tables_checked: u64,
    pub rows_checked: u64,
    /// Rows that differ between source and destination (0 = consistent).
    pub discrepancies: u64,
}

pub type ValidationFuture =
    Pin<Box<dyn Future<Output = Result<ValidationReport, String>> + Send + 'static>>;

/// Compares source and destination.
pub trait Validator: Send + Sync + 'static {
    /// Compare `tables` (every table when `None`). Must stop soon after
    /// `cancel` fires and then return `Err`.
    fn run_full(&self, tables: Option<Vec<String>>, cancel: CancelToken) -> ValidationFuture;
}

/// A cloneable "please stop" flag that can also be awaited.
#[derive(Debug, Clone)]
pub struct CancelToken {
    rx: watch::Receiver<bool>,
}

/// The side that fires a [`CancelToken`].
#[derive(Debug)]
pub struct Canceller {
    tx: watch::Sender<bool>,
}

pub fn cancel_pair() -> (Canceller, CancelToken) {
    let (tx, rx) = watch::channel(false);
    (Canceller { tx }, CancelToken { rx })
}

impl Canceller {
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    pub fn token(&self) -> CancelToken {
        CancelToken {
            rx: self.tx.subscribe(),
        }
    }
}

impl CancelToken {
    pub fn is_cancelled(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves once cancelled (never, if the `Canceller` is dropped uncancelled).
    pub async fn cancelled(&self) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
