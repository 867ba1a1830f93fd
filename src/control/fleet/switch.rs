//! The leader's two-phase switch.
//!
//! 1. **Prepare**: write the switch record (epoch E+1, phase `prepare`) —
//!    only if this member still leads and the state is still at E. Every
//!    member (this one included) drains its gate when the authoritative side
//!    changes, then acknowledges under its lease and holds the gate.
//! 2. Wait until every *required* member acknowledged: every member whose
//!    lease is live (re-read from etcd each round, so a member that joined
//!    after the prepare is required too — it sees the prepare when it joins)
//!    plus every registered `keep_serving` member. A member whose lease
//!    expired meanwhile is not required: by the fencing rule it stopped
//!    writing before its lease could expire.
//! 3. **Commit** (one transaction: the state at E+1 and the record's phase,
//!    only if the record is still the prepare and the state still at E) —
//!    or **abort** when `switch_timeout_ms` passes or a member could not
//!    drain: the 409 names the members that did not answer, and no member
//!    changed pattern (the ones holding gates re-open them under E).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp, TxnOpResponse};

use super::keys::{Ack, FleetState, Phase, SwitchRecord};
use super::{json_bytes, Fleet, FleetError};
use crate::control::coordinator::Move;
use crate::control::metrics;
use crate::control::scheduler::SchedulerError;

/// Why the prepare phase did not succeed, and who stayed silent.
struct NotPrepared {
    reason: String,
    silent: Vec<String>,
}

impl Fleet {
    /// See the module docs.
    pub(super) async fn switch(&self, m: Move) -> Result<(), SchedulerError> {
        let to = m.next.state;
        let unavailable =
            |e: FleetError| SchedulerError::Unavailable(format!("not moving to {to}: {e}"));
        if self.current_term().is_none() {
            return Err(SchedulerError::Unavailable(format!(
                "not moving to {to}: this member is not the fleet's leader"
            )));
        }
        let (current, state_rev) = self.read_state().await.map_err(unavailable)?;
        if current.persisted.state != m.from {
            return Err(SchedulerError::StateChanged {
                expected: m.from,
                actual: current.persisted.state,
                to,
            });
        }
        let epoch = current.epoch + 1;
        let mut record = SwitchRecord {
            id: format!("{epoch}-{:08x}", rand::random::<u32>()),
            epoch,
            from: m.from,
            to,
            pattern: to.pattern(),
            drain: m.drain,
            phase: Phase::Prepare,
            coordinator: self.cfg.member_id.clone(),
            reason: None,
        };
        let started = Instant::now();
        let switch_key = self.keys.switch();
        let state_key = self.keys.state();
        let switch_rev = self
            .guarded_rev(
                "switch prepare",
                vec![Compare::mod_revision(
                    state_key.clone(),
                    CompareOp::Equal,
                    state_rev,
                )],
                vec![TxnOp::put(switch_key.clone(), json_bytes(&record), None)],
            )
            .await
            .map_err(unavailable)?;
        tracing::info!(switch = %record.id, from = %m.from, %to, epoch, drain = m.drain, "switch: prepare");
        let prepared = self.await_acks(&record).await;
        metrics::record_switch_phase("prepare", started.elapsed());
        if let Err(np) = prepared {
            self.abort(&mut record, switch_rev, &np.reason).await;
            metrics::record_fleet_switch("aborted");
            return Err(SchedulerError::SwitchAborted {
                to,
                reason: np.reason,
                silent: np.silent,
            });
        }
        let committing = Instant::now();
        record.phase = Phase::Commit;
        let next = FleetState {
            epoch,
            persisted: m.next,
        };
        let committed = self
            .guarded(
                "switch commit",
                vec![
                    Compare::mod_revision(switch_key.clone(), CompareOp::Equal, switch_rev),
                    Compare::mod_revision(state_key.clone(), CompareOp::Equal, state_rev),
                ],
                vec![
                    TxnOp::put(state_key, json_bytes(&next), None),
                    TxnOp::put(switch_key, json_bytes(&record), None),
                ],
            )
            .await;
        if let Err(e) = committed {
            metrics::record_fleet_switch("aborted");
            let reason = self
                .read_switch_reason(&record.id)
                .await
                .unwrap_or_else(|| e.to_string());
            return Err(SchedulerError::SwitchAborted {
                to,
                reason: format!("the commit did not apply ({reason})"),
                silent: Vec::new(),
            });
        }
        self.await_applied(epoch).await;
        metrics::record_switch_phase("commit", committing.elapsed());
        metrics::record_fleet_switch("committed");
        tracing::info!(switch = %record.id, %to, epoch, ms = started.elapsed().as_millis() as u64, "switch: committed");
        self.delete_acks(&record.id).await;
        Ok(())
    }

    async fn read_state(&self) -> Result<(FleetState, i64), FleetError> {
        let key = self.keys.state();
        let resp = self
            .etcd("read state", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        let kv = resp.kvs().first().ok_or_else(|| FleetError::Corrupt {
            key: key.clone(),
            message: "missing".into(),
        })?;
        let fs = serde_json::from_slice(kv.value()).map_err(|e| FleetError::Corrupt {
            key,
            message: e.to_string(),
        })?;
        Ok((fs, kv.mod_revision()))
    }

    /// A guarded write returning its revision.
    async fn guarded_rev(
        &self,
        what: &'static str,
        mut compares: Vec<Compare>,
        ops: Vec<TxnOp>,
    ) -> Result<i64, FleetError> {
        let term = self
            .current_term()
            .ok_or_else(|| FleetError::NotLeader(self.cfg.member_id.clone()))?;
        compares.push(Compare::create_revision(
            self.keys.leader(),
            CompareOp::Equal,
            term,
        ));
        let resp = self
            .etcd(what, |mut c| async move {
                c.txn(Txn::new().when(compares).and_then(ops)).await
            })
            .await?;
        if !resp.succeeded() {
            return Err(FleetError::NotLeader(format!(
                "{} (or the state changed meanwhile)",
                self.cfg.member_id
            )));
        }
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Wait for every required member's acknowledgement (module docs).
    async fn await_acks(&self, record: &SwitchRecord) -> Result<(), NotPrepared> {
        let bound = Duration::from_millis(self.cfg.switch_timeout_ms);
        let until = tokio::time::Instant::now() + bound;
        let mut changed = self.cache_changed.subscribe();
        let mut silent = Vec::new();
        loop {
            match self.read_participants(&record.id).await {
                Ok((required, acks)) => {
                    if let Some((member, ack)) = acks.iter().find(|(_, a)| !a.ok) {
                        return Err(NotPrepared {
                            reason: format!(
                                "member {member} could not prepare: {}",
                                ack.detail.as_deref().unwrap_or("no detail")
                            ),
                            silent: Vec::new(),
                        });
                    }
                    let acked: BTreeSet<&String> = acks.iter().map(|(m, _)| m).collect();
                    silent = required
                        .into_iter()
                        .filter(|m| !acked.contains(m))
                        .collect();
                    if silent.is_empty() {
                        return Ok(());
                    }
                }
                Err(e) => tracing::warn!("switch: reading acknowledgements: {e}"),
            }
            if tokio::time::Instant::now() >= until {
                return Err(NotPrepared {
                    reason: format!(
                        "no acknowledgement within switch_timeout_ms ({} ms) from {}",
                        bound.as_millis(),
                        if silent.is_empty() {
                            "the coordinator".into()
                        } else {
                            silent.join(", ")
                        }
                    ),
                    silent,
                });
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// (required members, acknowledgements) read together at one revision.
    async fn read_participants(
        &self,
        switch_id: &str,
    ) -> Result<(BTreeSet<String>, Vec<(String, Ack)>), FleetError> {
        let (members, registered, acks) = (
            self.keys.members(),
            self.keys.registered_all(),
            self.keys.acks(switch_id),
        );
        let prefix = || Some(GetOptions::new().with_prefix().with_keys_only());
        let resp = self
            .etcd("read acknowledgements", |mut c| {
                let (m, r, a) = (members.clone(), registered.clone(), acks.clone());
                async move {
                    c.txn(Txn::new().and_then([
                        TxnOp::get(m, prefix()),
                        TxnOp::get(r, prefix()),
                        TxnOp::get(a, Some(GetOptions::new().with_prefix())),
                    ]))
                    .await
                }
            })
            .await?;
        let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let mut required = BTreeSet::new();
        for (g, p) in [(gets.next(), &members), (gets.next(), &registered)] {
            for kv in g.iter().flat_map(|g| g.kvs()) {
                if let Some(id) = kv.key_str().ok().and_then(|k| k.strip_prefix(p.as_str())) {
                    required.insert(id.to_string());
                }
            }
        }
        let mut out = Vec::new();
        for kv in gets.next().iter().flat_map(|g| g.kvs()) {
            let Some(id) = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(acks.as_str()))
            else {
                continue;
            };
            if let Ok(a) = serde_json::from_slice::<Ack>(kv.value()) {
                out.push((id.to_string(), a));
            }
        }
        Ok((required, out))
    }

    /// Write the abort (if the record is still this prepare) and clean up.
    async fn abort(&self, record: &mut SwitchRecord, rev: i64, reason: &str) {
        record.phase = Phase::Abort;
        record.reason = Some(reason.to_string());
        let key = self.keys.switch();
        let value = json_bytes(&*record);
        let written = self
            .etcd("switch abort", |mut c| async move {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::put(key, value, None)]);
                c.txn(txn).await.map(|r| r.succeeded())
            })
            .await;
        tracing::warn!(switch = %record.id, ?written, "switch: aborted: {reason}");
        self.delete_acks(&record.id).await;
    }

    async fn read_switch_reason(&self, id: &str) -> Option<String> {
        let key = self.keys.switch();
        let resp = self
            .etcd("read switch", |mut c| async move { c.get(key, None).await })
            .await
            .ok()?;
        let rec: SwitchRecord = serde_json::from_slice(resp.kvs().first()?.value()).ok()?;
        (rec.id == id).then_some(rec.reason).flatten()
    }

    async fn delete_acks(&self, id: &str) {
        let prefix = self.keys.acks(id);
        let _ = self
            .etcd("delete acknowledgements", |mut c| async move {
                c.delete(prefix, Some(DeleteOptions::new().with_prefix()))
                    .await
            })
            .await;
    }

    /// Until this member's data path runs the committed epoch (its own
    /// watch applies it; bounded, the commit is made either way).
    async fn await_applied(&self, epoch: u64) {
        let until = Instant::now() + Duration::from_millis(self.cfg.request_timeout_ms);
        let mut changed = self.cache_changed.subscribe();
        while self.applied.load(Ordering::Acquire) < epoch && Instant::now() < until {
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}
