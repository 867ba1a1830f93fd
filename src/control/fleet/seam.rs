//! The fleet behind the control plane's one seam ([`Coordinator`]): what
//! the scheduler, the admin API and the validator ask of the coordinator,
//! answered from etcd.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use etcd_client::{Compare, CompareOp, TxnOp};

use super::keys::{self, FleetState};
use super::{json_bytes, Executor, Fleet, RpcCall};
use crate::control::coordinator::{Coordinator, LeaderRecord, Move};
use crate::control::guard::MirrorHealth;
use crate::control::scheduler::{Scheduler, SchedulerError};
use crate::control::store::{PersistedState, StoreError};
use crate::control::validation::BoxFuture;

impl Coordinator for Fleet {
    fn describe(&self) -> String {
        format!("etcd {} ({})", self.cfg.prefix, self.endpoints)
    }

    fn commit_move(&self, m: Move) -> BoxFuture<'_, Result<(), SchedulerError>> {
        Box::pin(self.switch(m))
    }

    fn save(&self, state: PersistedState) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let epoch = self.applied.load(Ordering::Acquire);
            let (current, entry) = match self.cached::<FleetState>(&self.keys.state()) {
                Some(c) => c,
                None => return Ok(()),
            };
            if current.epoch != epoch || current.persisted.state != state.state {
                // A newer state was committed meanwhile: its stats win.
                return Ok(());
            }
            let value = json_bytes(&FleetState {
                epoch,
                persisted: state,
            });
            let key = self.keys.state();
            self.guarded(
                "save stats",
                vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    entry.mod_rev,
                )],
                vec![TxnOp::put(key, value, None)],
            )
            .await
            .map_err(|e| StoreError::Write {
                path: self.describe().into(),
                source: std::io::Error::other(e.to_string()),
            })
        })
    }

    fn is_leader(&self) -> bool {
        self.current_term().is_some() && !self.handle.fence().is_fenced()
    }

    fn attach(&self, scheduler: Weak<Scheduler>) {
        let _ = self.scheduler.set(scheduler);
        // A leadership won before the scheduler existed.
        if let (Some(s), true) = (self.scheduler(), self.current_term().is_some()) {
            tokio::spawn(async move { s.lead().await });
        }
    }

    fn mirror_health(&self, local: MirrorHealth) -> MirrorHealth {
        self.fleet_mirror(local)
    }

    fn save_leader_record(&self, mut r: LeaderRecord) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            r.mirror_seen = self
                .mirror_seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let key = self.keys.leader_record();
            if let Err(e) = self
                .guarded(
                    "leader record",
                    vec![],
                    vec![TxnOp::put(key, json_bytes(&r), None)],
                )
                .await
            {
                tracing::warn!("could not keep the leader record for the next leader: {e}");
            }
        })
    }

    fn load_leader_record(&self) -> BoxFuture<'_, Option<LeaderRecord>> {
        Box::pin(async move {
            let key = self.keys.leader_record();
            let resp = self
                .etcd(
                    "leader record",
                    |mut c| async move { c.get(key, None).await },
                )
                .await
                .map_err(|e| tracing::warn!("cannot read the previous leader's record: {e}"))
                .ok()?;
            let kv = resp.kvs().first()?;
            let record: LeaderRecord = serde_json::from_slice(kv.value())
                .map_err(|e| tracing::warn!("unreadable leader record: {e}"))
                .ok()?;
            let mut seen = self.mirror_seen.lock().unwrap_or_else(|e| e.into_inner());
            for (k, m) in &record.mirror_seen {
                let slot = seen.entry(k.clone()).or_default();
                slot.failures = slot.failures.max(m.failures);
                slot.mismatches = slot.mismatches.max(m.mismatches);
                slot.unsafe_statements = slot.unsafe_statements.max(m.unsafe_statements);
            }
            Some(record)
        })
    }

    fn fleet_status(&self) -> Option<serde_json::Value> {
        Some(self.status_json())
    }

    fn publish_report(&self, report: serde_json::Value) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let key = self.keys.report();
            let value = json_bytes(&report);
            let unchanged = self
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys
                .get(&key)
                .is_some_and(|e| e.value == value);
            if unchanged {
                return;
            }
            let _ = self
                .guarded("report", vec![], vec![TxnOp::put(key, value, None)])
                .await;
        })
    }

    fn leader_report(&self) -> Option<serde_json::Value> {
        if self.current_term().is_some() {
            return None;
        }
        self.cached::<serde_json::Value>(&self.keys.report())
            .map(|(v, _)| v)
    }

    fn epoch(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    fn forward(&self, call: RpcCall) -> Option<BoxFuture<'_, Result<keys::RpcReply, String>>> {
        if self.current_term().is_some() {
            return None;
        }
        Some(Box::pin(self.forward_to_leader(RpcCall {
            from: self.cfg.member_id.clone(),
            ..call
        })))
    }

    fn attach_executor(&self, exec: Executor) {
        self.set_executor(exec);
    }

    fn evict(&self, member: String) -> BoxFuture<'_, Result<bool, SchedulerError>> {
        Box::pin(self.evict_member(member))
    }
}
