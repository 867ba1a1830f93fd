//! A fleet of sidecars, one migration: the etcd [`Coordinator`]
//! (docs/FLEET.md has the protocol, its failure cases and why each is safe).
//!
//! | file | concern |
//! |------|---------|
//! | `keys.rs` | the key layout and the JSON records |
//! | `mod.rs` | [`Fleet`]: joining, the etcd calls, the coordinator seam |
//! | `lease.rs` | keep-alive, fencing, re-sync after a pause or an outage, heartbeat |
//! | `watch.rs` | the member's mirror of the fleet keys and what it reacts to (adopt, prepare, elect) |
//! | `switch.rs` | the leader's two-phase switch |
//! | `rpc.rs` | admin requests forwarded to the leader through etcd |
//! | `storage.rs` | the validator's checkpoint and events in etcd; validation on the leader only |
//!
//! Every member holds a lease; its record and acknowledgements are attached
//! to it. The data path learns nothing of this but the pattern handle: the
//! pattern and epoch it adopts, the drain gate a prepare closes, and the
//! fence ([`crate::fence`]) armed with the lease's local deadline.

pub mod keys;
mod lease;
mod members;
mod rpc;
mod seam;
pub mod storage;
mod switch;
mod watch;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, Txn, TxnOp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch as tokio_watch;
use tokio_util::sync::CancellationToken;

use super::guard::MirrorHealth;
use super::scheduler::Scheduler;
use super::state_machine::State;
use super::store::PersistedState;
use crate::config::{Config, EtcdCoordination, OnCoordinatorLoss};
use crate::pattern::{Drained, PatternHandle};
use crate::stats::DataPathStats;
use keys::{FleetState, Keys, LeaderKey, MemberRecord};

pub use rpc::{Executor, RpcCall};

/// A failure talking to etcd or a refusal by it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    #[error("etcd ({endpoints}): {message}")]
    Etcd { endpoints: String, message: String },
    #[error("etcd ({endpoints}) did not answer within {ms} ms ({what})")]
    Timeout {
        endpoints: String,
        ms: u64,
        what: &'static str,
    },
    /// A guarded write found that this member is no longer the leader.
    #[error("this member ({0}) is not the fleet's leader (any more)")]
    NotLeader(String),
    #[error("corrupt record at {key}: {message}")]
    Corrupt { key: String, message: String },
}

/// One cached key of `<prefix>/fleet/`.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub value: Vec<u8>,
    pub mod_rev: i64,
    pub create_rev: i64,
    pub lease: i64,
}

/// The member's mirror of `<prefix>/fleet/` (list, then watch).
#[derive(Debug, Default)]
pub(super) struct Cache {
    pub keys: BTreeMap<String, Entry>,
    pub revision: i64,
}

/// A prepare this member acknowledged: its gate stays closed until the
/// switch commits or aborts.
struct Pending {
    switch_id: String,
    epoch: u64,
    drained: Option<Drained>,
}

/// The lease this member holds.
#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    ttl: Duration,
}

/// One member of the fleet (see the module docs).
pub struct Fleet {
    cfg: EtcdCoordination,
    keys: Keys,
    incarnation: String,
    endpoints: String,
    client: Client,
    handle: PatternHandle,
    lease: Mutex<Lease>,
    cache: Mutex<Cache>,
    /// Bumped after every batch of watch events.
    cache_changed: tokio_watch::Sender<u64>,
    /// The epoch applied to the data path.
    applied: AtomicU64,
    pending: Mutex<Option<Pending>>,
    /// Switch ids this member has started to prepare.
    prepared: Mutex<HashSet<String>>,
    /// `Some(term)` while this member holds the leader key (term = its create revision).
    term: Mutex<Option<i64>>,
    scheduler: OnceLock<Weak<Scheduler>>,
    executor: OnceLock<Executor>,
    stats: OnceLock<Arc<DataPathStats>>,
    rpc_started: Mutex<HashSet<String>>,
    /// Highest mirror counters seen per member incarnation (leader's sum).
    mirror_seen: Mutex<BTreeMap<String, MirrorHealth>>,
    /// The drain bound of a prepare.
    drain_timeout: Duration,
    /// Validation, opened while this member leads.
    validation: OnceLock<Arc<storage::LeaderValidation>>,
    stop: CancellationToken,
}

fn wall_ms() -> u64 {
    super::succession::wall_ms()
}

impl Fleet {
    /// Join the fleet: connect (retrying until etcd answers or `stop` is
    /// cancelled), take a lease, register, create the state from
    /// `initial_pattern` (or from an existing `state_file`) if the fleet has
    /// none, read it, and start the member's tasks. Returns the pattern
    /// handle the data path must use: it already carries the fleet's current
    /// pattern and epoch and an armed fence — nothing is served before this.
    ///
    /// # Errors
    /// A corrupt state record (never overwritten), or `stop` cancelled.
    pub async fn join(
        cfg: &Config,
        etcd: &EtcdCoordination,
        stop: CancellationToken,
    ) -> Result<(Arc<Fleet>, PatternHandle), FleetError> {
        let endpoints = etcd.endpoints.join(",");
        let client = loop {
            match connect(etcd).await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(%endpoints, "cannot reach etcd yet ({e}); retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => return Err(FleetError::Etcd { endpoints, message: "stopped before joining".into() }),
                    }
                }
            }
        };
        let handle = PatternHandle::new(cfg.initial_pattern);
        handle
            .fence()
            .set_wait(Duration::from_millis(etcd.fence_wait_ms));
        let (cache_changed, _) = tokio_watch::channel(0);
        let fleet = Arc::new(Fleet {
            cfg: etcd.clone(),
            keys: Keys::new(&etcd.prefix),
            incarnation: format!("{:016x}", rand::random::<u64>()),
            endpoints,
            client,
            handle: handle.clone(),
            lease: Mutex::new(Lease {
                id: 0,
                ttl: Duration::from_millis(etcd.lease_ttl_ms),
            }),
            cache: Mutex::new(Cache::default()),
            cache_changed,
            applied: AtomicU64::new(0),
            pending: Mutex::new(None),
            prepared: Mutex::new(HashSet::new()),
            term: Mutex::new(None),
            scheduler: OnceLock::new(),
            executor: OnceLock::new(),
            stats: OnceLock::new(),
            rpc_started: Mutex::new(HashSet::new()),
            mirror_seen: Mutex::new(BTreeMap::new()),
            drain_timeout: Duration::from_millis(cfg.switch_drain_timeout_ms),
            validation: OnceLock::new(),
            stop,
        });
        loop {
            match fleet.register(cfg).await {
                Ok(()) => break,
                Err(e @ FleetError::Corrupt { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!("cannot join the fleet yet ({e}); retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = fleet.stop.cancelled() => return Err(e),
                    }
                }
            }
        }
        tokio::spawn(Arc::clone(&fleet).keep_lease());
        tokio::spawn(Arc::clone(&fleet).watch_fleet());
        tracing::info!(
            member = %fleet.cfg.member_id,
            prefix = %fleet.cfg.prefix,
            epoch = fleet.applied.load(Ordering::Acquire),
            pattern = %handle.load(),
            "joined the fleet"
        );
        Ok((fleet, handle))
    }

    /// Lease, member record, the state (created if absent), adopted.
    async fn register(self: &Arc<Self>, cfg: &Config) -> Result<(), FleetError> {
        let sent = self.new_lease().await?;
        self.put_member().await?;
        if self.cfg.on_coordinator_loss == OnCoordinatorLoss::KeepServing {
            let since = serde_json::json!({ "since_ms": wall_ms() }).to_string();
            self.etcd("register", |mut c| {
                let key = self.keys.registered(&self.cfg.member_id);
                let since = since.clone();
                async move { c.put(key, since, None).await.map(|_| ()) }
            })
            .await?;
        }
        self.create_state_if_absent(cfg).await?;
        self.resync().await?;
        let ttl = self.lease.lock().unwrap_or_else(|e| e.into_inner()).ttl;
        self.vouch(sent, ttl);
        let _ = self.put_member().await;
        Ok(())
    }

    /// The fleet has no state yet: the first member writes it (from the
    /// local `state_file` if one exists — a single sidecar becoming a
    /// fleet — else `initial_pattern`). Only one creation can win.
    async fn create_state_if_absent(&self, cfg: &Config) -> Result<(), FleetError> {
        use super::store::StateStore;
        let seeded = super::store::FileStateStore::new(&cfg.state_file)
            .load()
            .ok()
            .flatten();
        let persisted = match seeded {
            Some(p) => {
                tracing::info!(state = %p.state, file = %cfg.state_file.display(), "seeding the fleet's state from the local state file (only if the fleet has none)");
                p
            }
            None => PersistedState::fresh(State::fresh(cfg.initial_pattern)),
        };
        let value = json_bytes(&FleetState {
            epoch: 1,
            persisted,
        });
        let key = self.keys.state();
        let created = self
            .etcd("create state", |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key, value, None)]);
                    c.txn(txn).await.map(|r| r.succeeded())
                }
            })
            .await?;
        if created {
            tracing::info!(prefix = %self.cfg.prefix, "created the fleet's migration state");
        }
        Ok(())
    }

    /// Re-read the state and the switch in progress and apply them: the
    /// pattern of the committed epoch, and a pending prepare (this member
    /// holds its gate closed for it). Statements are held back meanwhile.
    pub(super) async fn resync(self: &Arc<Self>) -> Result<(), FleetError> {
        let prefix = self.keys.fleet();
        let mut resp = self
            .etcd("read the fleet", |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if revision >= cache.revision {
                cache.keys = resp
                    .take_kvs()
                    .into_iter()
                    .filter_map(|kv| {
                        let key = kv.key_str().ok()?.to_string();
                        Some((
                            key,
                            Entry {
                                value: kv.value().to_vec(),
                                mod_rev: kv.mod_revision(),
                                create_rev: kv.create_revision(),
                                lease: kv.lease(),
                            },
                        ))
                    })
                    .collect();
                cache.revision = revision;
            }
        }
        self.reconcile()
    }

    /// The member's own record (heartbeat; after every change of epoch or fence).
    pub(super) async fn put_member(&self) -> Result<(), FleetError> {
        let record = MemberRecord {
            id: self.cfg.member_id.clone(),
            incarnation: self.incarnation.clone(),
            pattern: (self.applied.load(Ordering::Acquire) > 0).then(|| self.handle.load()),
            epoch: self.applied.load(Ordering::Acquire),
            fenced: self.handle.fence().is_fenced(),
            on_coordinator_loss: self.cfg.on_coordinator_loss.as_str().into(),
            last_seen_ms: wall_ms(),
            mirror: self
                .stats
                .get()
                .map(|s| super::guard::mirror_health(s))
                .unwrap_or_default(),
            version: crate::build_info::VERSION.to_string(),
        };
        let lease = self.lease_id();
        let key = self.keys.member(&self.cfg.member_id);
        let value = json_bytes(&record);
        self.etcd("member record", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
                    .map(|_| ())
            }
        })
        .await
    }

    pub(super) fn lease_id(&self) -> i64 {
        self.lease.lock().unwrap_or_else(|e| e.into_inner()).id
    }

    /// One etcd call, bounded by `request_timeout_ms`, errors named.
    pub(super) async fn etcd<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T, FleetError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let ms = self.cfg.request_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(ms), call(self.client.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(FleetError::Etcd {
                endpoints: self.endpoints.clone(),
                message: format!("{what}: {e}"),
            }),
            Err(_) => Err(FleetError::Timeout {
                endpoints: self.endpoints.clone(),
                ms,
                what,
            }),
        }
    }

    /// A write only the current leader may make: it applies only while the
    /// leader key still has the create revision this member won it with.
    pub(super) async fn guarded(
        &self,
        what: &'static str,
        mut compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<(), FleetError> {
        let term = self
            .current_term()
            .ok_or_else(|| FleetError::NotLeader(self.cfg.member_id.clone()))?;
        compares.push(Compare::create_revision(
            self.keys.leader(),
            CompareOp::Equal,
            term,
        ));
        let ok = self
            .etcd(what, |mut c| async move {
                c.txn(Txn::new().when(compares).and_then(ops))
                    .await
                    .map(|r| r.succeeded())
            })
            .await?;
        if ok {
            Ok(())
        } else {
            Err(FleetError::NotLeader(self.cfg.member_id.clone()))
        }
    }

    pub(super) fn current_term(&self) -> Option<i64> {
        *self.term.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cached record, decoded (`None` when absent or unreadable: logged).
    pub(super) fn cached<T: DeserializeOwned>(&self, key: &str) -> Option<(T, Entry)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let entry = cache.keys.get(key)?.clone();
        match serde_json::from_slice(&entry.value) {
            Ok(v) => Some((v, entry)),
            Err(e) => {
                tracing::warn!(%key, "unreadable fleet record: {e}");
                None
            }
        }
    }

    /// Every cached record under `prefix`, decoded, by the key's tail.
    pub(super) fn cached_under<T: DeserializeOwned>(&self, prefix: &str) -> Vec<(String, T)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter_map(|(k, e)| {
                let v = serde_json::from_slice(&e.value).ok()?;
                Some((k[prefix.len()..].to_string(), v))
            })
            .collect()
    }

    /// The leader key as cached.
    pub(super) fn leader_key(&self) -> Option<(LeaderKey, Entry)> {
        self.cached(&self.keys.leader())
    }

    fn scheduler(&self) -> Option<Arc<Scheduler>> {
        self.scheduler.get().and_then(Weak::upgrade)
    }

    /// The fleet's state as last read.
    pub fn current_state(&self) -> Option<PersistedState> {
        self.cached::<FleetState>(&self.keys.state())
            .map(|(s, _)| s.persisted)
    }

    /// The member's id.
    pub fn member_id(&self) -> &str {
        &self.cfg.member_id
    }

    /// Leave the fleet (SIGTERM): revoke the lease (the member record and
    /// the leadership go at once) and, for `keep_serving`, the registration.
    pub async fn leave(&self) {
        let id = self.lease_id();
        if self.cfg.on_coordinator_loss == OnCoordinatorLoss::KeepServing {
            let key = self.keys.registered(&self.cfg.member_id);
            let _ = self
                .etcd(
                    "deregister",
                    |mut c| async move { c.delete(key, None).await },
                )
                .await;
        }
        let _ = self
            .etcd(
                "revoke lease",
                |mut c| async move { c.lease_revoke(id).await },
            )
            .await;
        tracing::info!(member = %self.cfg.member_id, "left the fleet");
    }

    /// The validation seam for this member: the real validator while it
    /// leads (plug it into the control plane with `with_validation`).
    pub fn validation(&self, cfg: Arc<Config>) -> Arc<storage::LeaderValidation> {
        let v = Arc::new(storage::LeaderValidation::new(
            cfg,
            self.cfg.clone(),
            self.handle.clone(),
        ));
        let _ = self.validation.set(Arc::clone(&v));
        v
    }

    /// The stats whose mirror counters the member record carries.
    pub fn attach_stats(&self, stats: Arc<DataPathStats>) {
        let _ = self.stats.set(stats);
    }
}

async fn connect(cfg: &EtcdCoordination) -> Result<Client, etcd_client::Error> {
    let t = Duration::from_millis(cfg.request_timeout_ms);
    let opts = ConnectOptions::new()
        .with_connect_timeout(t)
        .with_keep_alive(Duration::from_secs(2), t)
        .with_keep_alive_while_idle(true);
    let mut client = Client::connect(&cfg.endpoints, Some(opts)).await?;
    // Fail now rather than at the first use when nothing answers.
    tokio::time::timeout(t, client.status())
        .await
        .map_err(|_| etcd_client::Error::InvalidArgs("status: no answer".into()))??;
    Ok(client)
}

pub(super) fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("fleet records serialize")
}
