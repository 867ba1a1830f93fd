//! The fleet's keys under `[coordination] prefix` and what each holds (JSON).
//!
//! ```text
//! <prefix>/fleet/state                  FleetState: epoch + the migration state (history, stats)
//! <prefix>/fleet/switch                 SwitchRecord: the last switch and its phase
//! <prefix>/fleet/acks/<switch>/<member> Ack of one member for one prepare (member's lease)
//! <prefix>/fleet/members/<member>       MemberRecord (member's lease: gone when it expires)
//! <prefix>/fleet/registered/<member>    keep_serving members only, no lease (evicted explicitly)
//! <prefix>/fleet/leader                 LeaderKey (the leader's lease: the election)
//! <prefix>/fleet/report                 the leader's report for the other members' /status
//! <prefix>/fleet/rpc/<term>/req/<id>    an admin request forwarded to the leader of <term>
//! <prefix>/fleet/rpc/<term>/rep/<id>    its answer
//! <prefix>/validation/leader            LeaderRecord: last full validation, the run to resume
//! <prefix>/validation/checkpoint        the full run's checkpoint (validator)
//! <prefix>/validation/events/<seq>      inconsistency journal, one key per append
//! ```

use serde::{Deserialize, Serialize};

use crate::control::guard::MirrorHealth;
use crate::control::state_machine::State;
use crate::control::store::PersistedState;
use crate::pattern::Pattern;

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Everything members watch.
    pub fn fleet(&self) -> String {
        format!("{}/fleet/", self.prefix)
    }
    pub fn state(&self) -> String {
        format!("{}/fleet/state", self.prefix)
    }
    pub fn switch(&self) -> String {
        format!("{}/fleet/switch", self.prefix)
    }
    pub fn acks(&self, switch_id: &str) -> String {
        format!("{}/fleet/acks/{switch_id}/", self.prefix)
    }
    pub fn ack(&self, switch_id: &str, member: &str) -> String {
        format!("{}{member}", self.acks(switch_id))
    }
    pub fn members(&self) -> String {
        format!("{}/fleet/members/", self.prefix)
    }
    pub fn member(&self, id: &str) -> String {
        format!("{}{id}", self.members())
    }
    pub fn registered_all(&self) -> String {
        format!("{}/fleet/registered/", self.prefix)
    }
    pub fn registered(&self, id: &str) -> String {
        format!("{}{id}", self.registered_all())
    }
    pub fn leader(&self) -> String {
        format!("{}/fleet/leader", self.prefix)
    }
    pub fn report(&self) -> String {
        format!("{}/fleet/report", self.prefix)
    }
    pub fn rpc_requests(&self, term: i64) -> String {
        format!("{}/fleet/rpc/{term}/req/", self.prefix)
    }
    pub fn rpc_reply(&self, term: i64, id: &str) -> String {
        format!("{}/fleet/rpc/{term}/rep/{id}", self.prefix)
    }
    pub fn rpc_term(&self, term: i64) -> String {
        format!("{}/fleet/rpc/{term}/", self.prefix)
    }
    pub fn leader_record(&self) -> String {
        format!("{}/validation/leader", self.prefix)
    }
    pub fn checkpoint(&self) -> String {
        format!("{}/validation/checkpoint", self.prefix)
    }
    pub fn events(&self) -> String {
        format!("{}/validation/events/", self.prefix)
    }
    pub fn event(&self, seq: u64) -> String {
        format!("{}{seq:020}", self.events())
    }
}

/// `<prefix>/fleet/state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetState {
    /// Incremented by every committed switch (1 for the first state).
    pub epoch: u64,
    pub persisted: PersistedState,
}

/// Where a switch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Members drain for `epoch` and acknowledge.
    Prepare,
    /// The state of `epoch` is committed.
    Commit,
    /// Nothing changed; members re-open their gates.
    Abort,
}

/// `<prefix>/fleet/switch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchRecord {
    /// Unique per attempt (acks are filed under it).
    pub id: String,
    /// The epoch the switch commits.
    pub epoch: u64,
    pub from: State,
    pub to: State,
    pub pattern: Pattern,
    /// The authoritative side changes: members drain.
    pub drain: bool,
    pub phase: Phase,
    /// The member (leader) running the switch.
    pub coordinator: String,
    /// Why it aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `<prefix>/fleet/acks/<switch>/<member>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// Drained (or nothing to drain) and holding its gate until the outcome.
    pub ok: bool,
    /// Why not (e.g. the drain timed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `<prefix>/fleet/members/<member>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: String,
    /// Changes at every (re)start of the process.
    pub incarnation: String,
    pub pattern: Option<Pattern>,
    /// The epoch this member has applied.
    pub epoch: u64,
    pub fenced: bool,
    pub on_coordinator_loss: String,
    /// Wall clock of this record (ms since the Unix epoch).
    pub last_seen_ms: u64,
    pub mirror: MirrorHealth,
    pub version: String,
}

/// `<prefix>/fleet/leader`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaderKey {
    pub member: String,
    pub incarnation: String,
    pub since_ms: u64,
}

/// An admin request forwarded to the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcRequest {
    pub from: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body: String,
}

/// The leader's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcReply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// The part of `key` after `prefix`, if it starts with it.
pub fn tail<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    key.strip_prefix(prefix)
}
