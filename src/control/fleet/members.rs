//! What every member shows of the fleet (`/status` → `fleet`, the fleet's
//! mirror counters for the authority-move guard) and the operator's
//! eviction of a registered member that is gone.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::keys::{self, MemberRecord};
use super::Fleet;
use crate::control::guard::MirrorHealth;
use crate::control::scheduler::SchedulerError;

impl Fleet {
    /// `/status` → `fleet`.
    pub(super) fn status_json(&self) -> serde_json::Value {
        let members: Vec<serde_json::Value> = self
            .cached_under::<MemberRecord>(&self.keys.members())
            .into_iter()
            .map(|(_, m)| {
                serde_json::json!({
                    "id": m.id,
                    "pattern": m.pattern,
                    "epoch": m.epoch,
                    "last_seen": crate::control::status::rfc3339(
                        std::time::UNIX_EPOCH + Duration::from_millis(m.last_seen_ms)
                    ),
                    "fenced": m.fenced,
                    "on_coordinator_loss": m.on_coordinator_loss,
                })
            })
            .collect();
        let registered: Vec<String> = self
            .cached_under::<serde_json::Value>(&self.keys.registered_all())
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let leader = self.leader_key().map(|(l, _)| l.member);
        let switch = self
            .cached::<keys::SwitchRecord>(&self.keys.switch())
            .map(|(s, _)| s);
        serde_json::json!({
            "backend": "etcd",
            "prefix": self.cfg.prefix,
            "member_id": self.cfg.member_id,
            "epoch": self.applied.load(Ordering::Acquire),
            "leader": leader,
            "is_leader": self.current_term().is_some(),
            "fenced": self.handle.fence().is_fenced(),
            "members": members,
            "registered": registered,
            "last_switch": switch,
        })
    }

    /// Every member incarnation's mirror counters, summed (the highest seen
    /// per incarnation, so a member that left still counts).
    pub(super) fn fleet_mirror(&self, local: MirrorHealth) -> MirrorHealth {
        let mut seen = self.mirror_seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.insert(
            format!("{}@{}", self.cfg.member_id, self.incarnation),
            local,
        );
        for (_, m) in self.cached_under::<MemberRecord>(&self.keys.members()) {
            let slot = seen
                .entry(format!("{}@{}", m.id, m.incarnation))
                .or_default();
            slot.failures = slot.failures.max(m.mirror.failures);
            slot.mismatches = slot.mismatches.max(m.mirror.mismatches);
            slot.unsafe_statements = slot.unsafe_statements.max(m.mirror.unsafe_statements);
        }
        seen.values()
            .fold(MirrorHealth::default(), |a, m| MirrorHealth {
                failures: a.failures + m.failures,
                mismatches: a.mismatches + m.mismatches,
                unsafe_statements: a.unsafe_statements + m.unsafe_statements,
            })
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// `POST /fleet/evict?member=ID`: forget a registered (`keep_serving`)
    /// member that is gone, so switches stop waiting for it. Refused while
    /// its lease is live. `Ok(false)`: it was not registered.
    pub(super) async fn evict_member(&self, member: String) -> Result<bool, SchedulerError> {
        let (mkey, rkey) = (self.keys.member(&member), self.keys.registered(&member));
        let gone = self
            .etcd("evict", |mut c| async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(mkey, CompareOp::Equal, 0)])
                    .and_then([TxnOp::delete(rkey, None)]);
                c.txn(txn).await
            })
            .await
            .map_err(|e| SchedulerError::Unavailable(e.to_string()))?;
        if !gone.succeeded() {
            return Err(SchedulerError::Conflict(format!(
                "member {member} holds a live lease; only a member that is gone can be evicted"
            )));
        }
        let deleted = gone
            .op_responses()
            .into_iter()
            .any(|r| matches!(r, etcd_client::TxnOpResponse::Delete(d) if d.deleted() > 0));
        tracing::warn!(%member, deleted, "member evicted from the fleet");
        Ok(deleted)
    }

    /// When this member's lease could expire at the earliest, as last confirmed.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.handle.fence().deadline()
    }
}
