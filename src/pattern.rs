//! The routing pattern and the atomic handle the control plane swaps.
//!
//! This is the narrow bridge between the two wings: the data path only ever
//! *reads* a [`Pattern`] snapshot from a [`PatternHandle`]; the control plane
//! is the only writer.

#![warn(missing_docs)]

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::fence::Fence;

/// Which backend a statement concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The database the application is moving away from.
    Source,
    /// The database the application is moving to.
    Destination,
}

impl Side {
    /// `source` / `destination` (metric labels, JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Source => Side::Destination,
            Side::Destination => Side::Source,
        }
    }

    /// 0 for the source, 1 for the destination (per-side arrays).
    pub fn index(self) -> usize {
        match self {
            Side::Source => 0,
            Side::Destination => 1,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How statements are relayed to the two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Everything goes to the source only.
    SrcOnly,
    /// Source is authoritative; writes are mirrored to the destination.
    SrcFirst,
    /// Destination is authoritative; writes are mirrored to the source.
    DstFirst,
    /// Everything goes to the destination only.
    DstOnly,
}

impl Pattern {
    /// Every pattern, in migration order.
    pub const ALL: [Pattern; 4] = [
        Pattern::SrcOnly,
        Pattern::SrcFirst,
        Pattern::DstFirst,
        Pattern::DstOnly,
    ];

    /// The authoritative side: reads come from it and its results reach the client.
    pub fn primary(self) -> Side {
        match self {
            Pattern::SrcOnly | Pattern::SrcFirst => Side::Source,
            Pattern::DstFirst | Pattern::DstOnly => Side::Destination,
        }
    }

    /// The side writes are mirrored to, if any.
    pub fn secondary(self) -> Option<Side> {
        match self {
            Pattern::SrcFirst => Some(Side::Destination),
            Pattern::DstFirst => Some(Side::Source),
            Pattern::SrcOnly | Pattern::DstOnly => None,
        }
    }

    /// Whether this pattern sends writes to both sides.
    pub fn is_double_write(self) -> bool {
        self.secondary().is_some()
    }

    /// Whether the pattern uses `side` at all.
    pub fn uses(self, side: Side) -> bool {
        self.primary() == side || self.secondary() == Some(side)
    }

    /// The pattern's name (`src_only`, …): admin routes, config, JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::SrcOnly => "src_only",
            Pattern::SrcFirst => "src_first",
            Pattern::DstFirst => "dst_first",
            Pattern::DstOnly => "dst_only",
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown pattern `{0}` (expected src_only, src_first, dst_first or dst_only)")]
/// A pattern name that is none of the four (the name given).
pub struct UnknownPattern(pub String);

impl FromStr for Pattern {
    type Err = UnknownPattern;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPattern(s.to_string()))
    }
}

/// Shared, atomically swappable current pattern, with a drain gate.
///
/// Cloning is cheap (an `Arc`). Sessions call [`PatternHandle::enter`] at
/// the start of each transaction or autocommit statement and keep the
/// returned [`InFlight`] (and the pattern snapshot) until it ends. A switch
/// that changes the authoritative side calls [`PatternHandle::drain`]: new
/// units wait at the gate (the lock is fair), in-flight ones finish, then
/// the pattern is swapped and the waiters continue under the new one. No
/// write can therefore apply in one order on one side and another order on
/// the other across an authority change.
///
/// In a fleet (docs/FLEET.md) the handle also carries the fleet's *epoch*
/// the pattern belongs to (0 outside a fleet) and the [`Fence`] that holds
/// statements back while this member cannot vouch for its lease.
#[derive(Clone)]
pub struct PatternHandle {
    inner: Arc<HandleInner>,
}

/// The pattern and the fleet epoch it was committed in, swapped together.
#[derive(Debug, Clone, Copy)]
struct Current {
    pattern: Pattern,
    epoch: u64,
}

struct HandleInner {
    current: ArcSwap<Current>,
    gate: Arc<RwLock<()>>,
    in_flight: AtomicUsize,
    fence: Fence,
}

/// Held by a session while a transaction / autocommit statement runs.
pub struct InFlight {
    _guard: OwnedRwLockReadGuard<()>,
    handle: PatternHandle,
    epoch: u64,
}

impl InFlight {
    /// The fleet epoch of the pattern the unit started under (0 outside a fleet).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.handle.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The gate is closed and nothing is in flight: swap now, then drop to
/// let the waiting statements continue.
pub struct Drained {
    _guard: OwnedRwLockWriteGuard<()>,
    handle: PatternHandle,
    started: Instant,
}

impl Drained {
    /// Swap the pattern while the gate is closed; returns the previous one.
    pub fn swap(&self, next: Pattern) -> Pattern {
        self.handle.swap(next)
    }

    /// Swap to `next` of fleet epoch `epoch` while the gate is closed.
    pub fn adopt(&self, next: Pattern, epoch: u64) -> Pattern {
        self.handle.adopt(next, epoch)
    }
}

impl fmt::Debug for Drained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drained")
            .field("pattern", &self.handle.load())
            .finish()
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        metrics::histogram!("cutover_switch_pause_seconds")
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// In-flight work did not finish before the drain deadline; nothing changed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{in_flight} transaction(s)/statement(s) still in flight after {waited_ms} ms; switch aborted, pattern unchanged")]
pub struct DrainTimeout {
    /// Units (transactions / statements) still in flight at the deadline.
    pub in_flight: usize,
    /// How long the drain waited, in milliseconds.
    pub waited_ms: u64,
}

impl PatternHandle {
    /// A handle starting at `initial`, gate open.
    pub fn new(initial: Pattern) -> Self {
        PatternHandle {
            inner: Arc::new(HandleInner {
                current: ArcSwap::from_pointee(Current {
                    pattern: initial,
                    epoch: 0,
                }),
                gate: Arc::new(RwLock::new(())),
                in_flight: AtomicUsize::new(0),
                fence: Fence::new(),
            }),
        }
    }

    /// The current pattern.
    pub fn load(&self) -> Pattern {
        self.inner.current.load().pattern
    }

    /// The fleet epoch of the current pattern (0 outside a fleet).
    pub fn epoch(&self) -> u64 {
        self.inner.current.load().epoch
    }

    /// Replace the pattern at once (no drain), keeping the epoch; returns
    /// the previous pattern.
    pub fn swap(&self, next: Pattern) -> Pattern {
        let epoch = self.epoch();
        self.adopt(next, epoch)
    }

    /// Replace the pattern and its fleet epoch at once (no drain): the
    /// control plane applying a state the fleet committed. A transaction
    /// still open under an older epoch keeps its frozen pattern; the session
    /// refuses it further statements when the authoritative side changed
    /// (it cannot have been drained for that switch).
    pub fn adopt(&self, next: Pattern, epoch: u64) -> Pattern {
        self.inner
            .current
            .swap(Arc::new(Current {
                pattern: next,
                epoch,
            }))
            .pattern
    }

    /// The fence the data path asks before each statement.
    pub fn fence(&self) -> &Fence {
        &self.inner.fence
    }

    /// Start a unit of work: waits while a drain is in progress, then
    /// returns the pattern to use until the unit ends.
    pub async fn enter(&self) -> (Pattern, InFlight) {
        let guard = self.inner.gate.clone().read_owned().await;
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        let current = **self.inner.current.load();
        (
            current.pattern,
            InFlight {
                _guard: guard,
                handle: self.clone(),
                epoch: current.epoch,
            },
        )
    }

    /// Units currently in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Close the gate and wait (up to `timeout`) for in-flight units.
    ///
    /// # Errors
    /// [`DrainTimeout`] when units are still in flight at the deadline; the
    /// gate re-opens and nothing changes.
    pub async fn drain(&self, timeout: Duration) -> Result<Drained, DrainTimeout> {
        let started = Instant::now();
        match tokio::time::timeout(timeout, self.inner.gate.clone().write_owned()).await {
            Ok(guard) => Ok(Drained {
                _guard: guard,
                handle: self.clone(),
                started,
            }),
            Err(_) => Err(DrainTimeout {
                in_flight: self.in_flight(),
                waited_ms: started.elapsed().as_millis() as u64,
            }),
        }
    }
}

impl fmt::Debug for PatternHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PatternHandle").field(&self.load()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_follow_authority() {
        assert_eq!(Pattern::SrcFirst.primary(), Side::Source);
        assert_eq!(Pattern::SrcFirst.secondary(), Some(Side::Destination));
        assert_eq!(Pattern::DstFirst.primary(), Side::Destination);
        assert_eq!(Pattern::DstFirst.secondary(), Some(Side::Source));
        assert_eq!(Pattern::DstOnly.secondary(), None);
        assert!(!Pattern::SrcOnly.uses(Side::Destination));
    }

    #[test]
    fn parse_roundtrip() {
        for p in Pattern::ALL {
            assert_eq!(p.as_str().parse::<Pattern>().unwrap(), p);
        }
        assert!("src-only".parse::<Pattern>().is_err());
    }

    #[tokio::test]
    async fn drain_waits_for_in_flight_and_blocks_newcomers() {
        let h = PatternHandle::new(Pattern::SrcFirst);
        let (p, unit) = h.enter().await;
        assert_eq!(p, Pattern::SrcFirst);
        assert_eq!(h.in_flight(), 1);
        // in flight: the drain times out and nothing changes
        let e = h.drain(Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(e.in_flight, 1);
        assert_eq!(h.load(), Pattern::SrcFirst);
        let (p, second) = h.enter().await; // the gate re-opened
        assert_eq!(p, Pattern::SrcFirst);
        drop(second);
        // finish the unit while a drain waits: the drain succeeds, a newcomer waits for the swap
        let h2 = h.clone();
        let drainer = tokio::spawn(async move {
            let d = h2.drain(Duration::from_secs(5)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            d.swap(Pattern::DstFirst);
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(unit);
        let (p, _unit) = h.enter().await;
        assert_eq!(
            p,
            Pattern::DstFirst,
            "the newcomer ran under the new pattern"
        );
        drainer.await.unwrap();
    }

    #[test]
    fn handle_swaps() {
        let h = PatternHandle::new(Pattern::SrcOnly);
        let h2 = h.clone();
        assert_eq!(h.swap(Pattern::DstFirst), Pattern::SrcOnly);
        assert_eq!(h2.load(), Pattern::DstFirst);
    }
}
