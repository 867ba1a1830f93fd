//! The seam between the scheduler and *where* the migration state lives.
//!
//! [`Coordinator`] makes a move durable and applies it to the data path, and
//! persists the state between moves. [`Local`] is the single-process default
//! (`[coordination] backend = "file"`): the state file and this process's
//! pattern handle, exactly as before fleets existed. `fleet::Fleet` is the
//! etcd implementation: one state for every sidecar of an application, a
//! two-phase switch, leases, fencing and one elected leader for background
//! work (docs/FLEET.md). The scheduler never asks which one it has.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::guard::MirrorHealth;
use super::scheduler::{Scheduler, SchedulerError};
use super::state_machine::State;
use super::store::{PersistedState, StateStore, StoreError};
use super::validation::BoxFuture;
use crate::pattern::PatternHandle;

/// What a move asks of the coordinator.
#[derive(Debug, Clone)]
pub struct Move {
    pub from: State,
    pub next: PersistedState,
    /// The authoritative side changes: in-flight work drains first (new
    /// work waits at the gate), bounded by `drain_timeout`.
    pub drain: bool,
    pub drain_timeout: Duration,
}

/// A finished full validation as the leader keeps it for its successor
/// (wall-clock times; the guard's view is rebuilt from it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FullRecord {
    /// The state and fleet epoch the run started in.
    pub state: State,
    pub epoch: u64,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub completed: bool,
    pub error: Option<String>,
    pub all_tables: bool,
    pub tables_checked: u64,
    pub rows_checked: u64,
    pub found: u64,
    pub repaired: u64,
    pub skipped: Vec<String>,
    pub mirror_at_start: MirrorHealth,
}

/// A full validation that was running when its leader stopped (resumed by
/// the next leader from the checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningFull {
    pub tables: Option<Vec<String>>,
    pub fix: bool,
}

/// What the leader keeps where its successor finds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub last_full: Option<FullRecord>,
    pub running_full: Option<RunningFull>,
    /// A fleet's mirror counters per member incarnation (so a new leader's
    /// sum never falls below the one a validation started with).
    #[serde(default)]
    pub mirror_seen: BTreeMap<String, MirrorHealth>,
}

/// Where the migration state lives; see the module docs.
pub trait Coordinator: Send + Sync + 'static {
    /// For logs (`file ./cutover-state.json`, `etcd /cutover/shop`).
    fn describe(&self) -> String;

    /// Make `m.next` the migration state and its pattern the data path's
    /// (every member's, in a fleet). Nothing changes anywhere on `Err`.
    ///
    /// # Errors
    /// [`SchedulerError::DrainTimeout`], [`SchedulerError::SwitchAborted`]
    /// (409), [`SchedulerError::Persist`], [`SchedulerError::NotLeader`].
    fn commit_move(&self, m: Move) -> BoxFuture<'_, Result<(), SchedulerError>>;

    /// Persist `state` (the same state, new migration stats).
    ///
    /// # Errors
    /// [`StoreError`] when it could not be made durable.
    fn save(&self, state: PersistedState) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Whether this process runs background work (validation, the fixer,
    /// auto-promotion, auto-migrate). Always outside a fleet.
    fn is_leader(&self) -> bool {
        true
    }

    /// The scheduler is up: a fleet tells it about states committed and
    /// leaderships won or lost elsewhere.
    fn attach(&self, _scheduler: Weak<Scheduler>) {}

    /// The fleet's mirror counters (every member's), given this process's.
    fn mirror_health(&self, local: MirrorHealth) -> MirrorHealth {
        local
    }

    /// Keep `r` for the next leader.
    fn save_leader_record(&self, _r: LeaderRecord) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// What the previous leader kept.
    fn load_leader_record(&self) -> BoxFuture<'_, Option<LeaderRecord>> {
        Box::pin(async { None })
    }

    /// `/status` → `fleet` (None outside a fleet).
    fn fleet_status(&self) -> Option<serde_json::Value> {
        None
    }

    /// Publish what only the leader knows (validation, automation) for the
    /// other members' `/status`.
    fn publish_report(&self, _report: serde_json::Value) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The leader's last report, on a member that is not the leader.
    fn leader_report(&self) -> Option<serde_json::Value> {
        None
    }

    /// The fleet epoch of the current state (0 outside a fleet).
    fn epoch(&self) -> u64 {
        0
    }

    /// Hand an admin request only the leader serves to the leader; `None`
    /// when this process serves it itself (outside a fleet, or the leader).
    fn forward(&self, _call: Forwarded) -> Option<BoxFuture<'_, Result<ForwardedReply, String>>> {
        None
    }

    /// Install what serves forwarded requests (on the leader).
    fn attach_executor(&self, _exec: Executor) {}

    /// Forget a registered fleet member that is gone (`POST /fleet/evict`).
    ///
    /// # Errors
    /// 409 outside a fleet or while the member is live; 503.
    fn evict(&self, _member: String) -> BoxFuture<'_, Result<bool, SchedulerError>> {
        Box::pin(async {
            Err(SchedulerError::Conflict(
                "no fleet: [coordination] backend is \"file\"".into(),
            ))
        })
    }
}

/// An admin request forwarded to the fleet's leader.
pub type Forwarded = super::fleet::keys::RpcRequest;
/// The leader's answer to it.
pub type ForwardedReply = super::fleet::keys::RpcReply;
/// What serves forwarded requests.
pub type Executor = super::fleet::Executor;

/// One process, one state file: the default.
pub struct Local {
    store: Arc<dyn StateStore>,
    pattern: PatternHandle,
}

impl Local {
    pub fn new(store: Arc<dyn StateStore>, pattern: PatternHandle) -> Self {
        Local { store, pattern }
    }

    async fn save_now(&self, state: PersistedState) -> Result<(), StoreError> {
        let store = Arc::clone(&self.store);
        match tokio::task::spawn_blocking(move || store.save(&state)).await {
            Ok(r) => r,
            Err(e) => Err(StoreError::Write {
                path: self.store.describe().into(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

impl Coordinator for Local {
    fn describe(&self) -> String {
        self.store.describe()
    }

    /// Drain (an authority change), persist, swap: a move is made only once
    /// it is durable, and the state is persisted only once the drain worked.
    fn commit_move(&self, m: Move) -> BoxFuture<'_, Result<(), SchedulerError>> {
        Box::pin(async move {
            let to = m.next.state;
            let drained = if m.drain {
                let d = self.pattern.drain(m.drain_timeout).await.map_err(|e| {
                    tracing::warn!(from = %m.from, %to, "switch aborted: {e}");
                    SchedulerError::DrainTimeout { to, detail: e }
                })?;
                Some(d)
            } else {
                None
            };
            self.save_now(m.next).await?;
            match &drained {
                Some(d) => d.swap(to.pattern()),
                None => self.pattern.swap(to.pattern()),
            };
            Ok(())
        })
    }

    fn save(&self, state: PersistedState) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.save_now(state))
    }
}
