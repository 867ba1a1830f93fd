//! Fencing: whether this process may start a statement, as the control plane
//! last confirmed it.
//!
//! Part of the narrow bridge between the wings (with [`crate::pattern`]): the
//! data path asks [`Fence::admit`] before every statement; only the control
//! plane changes it. Outside a fleet the fence is never armed and `admit` is
//! two atomic loads.
//!
//! In a fleet (docs/FLEET.md) the control plane confirms, after every
//! successful lease keep-alive, a *deadline*: the keep-alive's send time +
//! the lease TTL − a margin, on the monotonic clock. The lease cannot expire
//! at the coordinator before that instant, so as long as `now < deadline`
//! this member is still a live member of the fleet and no switch can commit
//! without it. Past the deadline the fence closes **by itself** — the data
//! path compares the clock with the deadline on every statement, it does not
//! wait for a control-plane task to notice (a paused or starved process
//! would not) — and stays closed until the control plane has re-read the
//! fleet's state ([`Fence::confirm_until`]) or found the coordinator
//! unreachable ([`Fence::reads_only`]: reads run under the last known
//! pattern, writes wait and then fail).

#![warn(missing_docs)]

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What a statement does, as the fence sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads, session state, BEGIN, ROLLBACK: nothing becomes durable.
    Read,
    /// Anything that may change data (writes, DDL, COMMIT, unknown statements).
    Write,
}

/// The fence's state as the control plane set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceState {
    /// Statements run (until the deadline, when one is armed).
    Open,
    /// The fleet's state is being re-read: every statement waits (bounded).
    Resyncing,
    /// The coordinator cannot be reached: reads run under the last known
    /// pattern; writes wait (bounded), then fail.
    ReadsOnly,
}

const OPEN: u8 = 0;
const RESYNCING: u8 = 1;
const READS_ONLY: u8 = 2;

/// A statement the fence did not admit within its bound; the message names
/// the cause (sent to the client as `ER_OPTION_PREVENTS_STATEMENT`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Fenced(pub String);

/// The admission gate of one process (see the module docs).
pub struct Fence {
    state: AtomicU8,
    /// Nanoseconds since [`base`] until which `Open` holds; 0 = unarmed.
    deadline_ns: AtomicU64,
    /// How long a statement waits for the fence to open, in ms.
    wait_ms: AtomicU64,
    /// Bumped on every change, so waiters re-check.
    changed: watch::Sender<u64>,
    /// Why the fence is (or would be) closed, for the client's error.
    reason: Mutex<String>,
}

/// The process-wide origin of the fence's clock.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn nanos_since_base(t: Instant) -> u64 {
    t.saturating_duration_since(base()).as_nanos() as u64
}

impl Default for Fence {
    fn default() -> Self {
        Fence::new()
    }
}

impl Fence {
    /// An unarmed, open fence (a process outside a fleet).
    pub fn new() -> Fence {
        base();
        Fence {
            state: AtomicU8::new(OPEN),
            deadline_ns: AtomicU64::new(0),
            wait_ms: AtomicU64::new(2000),
            changed: watch::Sender::new(0),
            reason: Mutex::new(String::new()),
        }
    }

    /// Whether `access` may start now (no waiting).
    pub fn admits(&self, access: Access) -> bool {
        match self.state.load(Ordering::Acquire) {
            OPEN => {
                let deadline = self.deadline_ns.load(Ordering::Acquire);
                deadline == 0 || nanos_since_base(Instant::now()) < deadline
            }
            READS_ONLY => access == Access::Read,
            _ => false,
        }
    }

    /// Wait (at most the configured bound) until `access` may start.
    ///
    /// # Errors
    /// [`Fenced`] naming the cause when the bound passes first.
    pub async fn admit(&self, access: Access) -> Result<(), Fenced> {
        if self.admits(access) {
            return Ok(());
        }
        let mut rx = self.changed.subscribe();
        let wait = Duration::from_millis(self.wait_ms.load(Ordering::Relaxed));
        let until = tokio::time::Instant::now() + wait;
        loop {
            rx.borrow_and_update();
            if self.admits(access) {
                return Ok(());
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Err(self.refusal(access, wait)),
            }
        }
    }

    fn refusal(&self, access: Access, waited: Duration) -> Fenced {
        let reason = self
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let what = match (access, self.state()) {
            (Access::Write, FenceState::ReadsOnly) => "writes are fenced",
            _ => "statements wait for the fleet's state to be re-read",
        };
        Fenced(format!(
            "cutover: {what} ({reason}); waited {} ms, not executed; retry later",
            waited.as_millis()
        ))
    }

    /// The state, with an `Open` fence past its deadline reported as
    /// [`FenceState::Resyncing`] (which is how the data path treats it).
    pub fn state(&self) -> FenceState {
        match self.state.load(Ordering::Acquire) {
            OPEN if self.admits(Access::Write) => FenceState::Open,
            READS_ONLY => FenceState::ReadsOnly,
            _ => FenceState::Resyncing,
        }
    }

    /// Whether anything is held back now (the `cutover_fenced` gauge).
    pub fn is_fenced(&self) -> bool {
        self.state() != FenceState::Open
    }

    /// The armed deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(base() + Duration::from_nanos(ns)),
        }
    }

    /// How long a statement waits at a closed fence before it is refused.
    pub fn set_wait(&self, wait: Duration) {
        self.wait_ms
            .store(wait.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// Control plane: the lease is valid (and the state current) until
    /// `deadline`; everything runs until then. `reason` is what a statement
    /// is told if the deadline passes before the next confirmation.
    pub fn confirm_until(&self, deadline: Instant, reason: &str) {
        self.set_reason(reason);
        self.deadline_ns
            .store(nanos_since_base(deadline).max(1), Ordering::Release);
        self.set_state(OPEN);
    }

    /// Control plane: never close (outside a fleet, or `keep_serving`).
    pub fn disarm(&self) {
        self.deadline_ns.store(0, Ordering::Release);
        self.set_state(OPEN);
    }

    /// Control plane: the fleet's state is being re-read; hold everything.
    pub fn resyncing(&self, reason: &str) {
        self.set_reason(reason);
        self.set_state(RESYNCING);
    }

    /// Control plane: the coordinator is unreachable; reads only.
    pub fn reads_only(&self, reason: &str) {
        self.set_reason(reason);
        self.set_state(READS_ONLY);
    }

    fn set_reason(&self, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if *r != reason {
            *r = reason.to_string();
        }
    }

    fn set_state(&self, s: u8) {
        self.state.store(s, Ordering::Release);
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("state", &self.state())
            .field("deadline", &self.deadline())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unarmed_fence_admits_everything() {
        let f = Fence::new();
        assert!(f.admits(Access::Write));
        f.admit(Access::Write).await.unwrap();
        assert!(!f.is_fenced());
    }

    #[tokio::test]
    async fn the_fence_closes_by_itself_at_the_deadline() {
        let f = Fence::new();
        f.set_wait(Duration::from_millis(50));
        f.confirm_until(
            Instant::now() + Duration::from_millis(30),
            "lease not renewed",
        );
        assert!(f.admits(Access::Write));
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            f.state(),
            FenceState::Resyncing,
            "no control-plane call needed"
        );
        let e = f.admit(Access::Read).await.unwrap_err();
        assert!(e.0.contains("lease not renewed"), "{e}");
        assert!(e.0.contains("re-read"), "{e}");
    }

    #[tokio::test]
    async fn reads_only_admits_reads_and_refuses_writes_after_the_bound() {
        let f = Fence::new();
        f.set_wait(Duration::from_millis(30));
        f.reads_only("etcd unreachable");
        f.admit(Access::Read).await.unwrap();
        let e = f.admit(Access::Write).await.unwrap_err();
        assert!(e.0.contains("writes are fenced"), "{e}");
        assert!(e.0.contains("etcd unreachable"), "{e}");
    }

    #[tokio::test]
    async fn a_waiting_write_proceeds_when_the_fence_opens_within_the_bound() {
        let f = std::sync::Arc::new(Fence::new());
        f.set_wait(Duration::from_secs(5));
        f.resyncing("re-reading");
        let f2 = f.clone();
        let t = tokio::spawn(async move { f2.admit(Access::Write).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        f.confirm_until(Instant::now() + Duration::from_secs(10), "x");
        t.await.unwrap().unwrap();
        f.disarm();
        assert_eq!(f.deadline(), None);
    }
}
