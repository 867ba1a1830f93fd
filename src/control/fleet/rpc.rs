//! Admin requests that only the leader serves (moves, validation, repair,
//! automation, events), forwarded to it through etcd: the follower writes
//! the request under the leader's term (`rpc/<term>/req/<id>`, attached to
//! its own lease), the leader serves it with the same handler an HTTP
//! request would reach and writes the answer (`rpc/<term>/rep/<id>`), the
//! follower relays it verbatim. etcd is the only channel members share
//! (sidecar admin ports are usually loopback-only), and the answer is the
//! leader's own: the same status codes and bodies from every member.
//!
//! A request is never re-sent: when the leadership changes before the
//! answer, the follower answers 503 saying the request may or may not have
//! been applied (`cutover ctl status` shows what happened).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::PutOptions;

use super::keys::{LeaderKey, RpcReply, RpcRequest};
use super::{json_bytes, Fleet};
use crate::control::validation::BoxFuture;

/// What a forwarded request is.
pub type RpcCall = RpcRequest;

/// Serves a forwarded request on the leader (the admin API's dispatcher).
pub type Executor = Arc<dyn Fn(RpcCall) -> BoxFuture<'static, RpcReply> + Send + Sync>;

static NEXT: AtomicU64 = AtomicU64::new(1);

/// Deletes a request (and its answer) however the wait ended.
struct Cleanup<'a> {
    fleet: &'a Fleet,
    keys: Option<(String, String)>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some((req, rep)) = self.keys.take() {
            let client = self.fleet.client.clone();
            tokio::spawn(async move {
                let mut c = client;
                let _ = c.delete(req, None).await;
                let _ = c.delete(rep, None).await;
            });
        }
    }
}

impl Fleet {
    /// Forward `call` to the leader and wait for its answer (no bound but the
    /// leader's liveness: a repair may take hours).
    ///
    /// # Errors
    /// A message for a 503: no leader, etcd unreachable, the leadership
    /// changed before the answer.
    pub async fn forward_to_leader(&self, call: RpcCall) -> Result<RpcReply, String> {
        let Some((leader, entry)) = self.leader_key() else {
            return Err("no leader is elected in the fleet right now (an election takes up to the lease TTL); retry".into());
        };
        let term = entry.create_rev;
        let id = format!(
            "{}-{}-{:08x}",
            self.cfg.member_id,
            NEXT.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let req_key = format!("{}{id}", self.keys.rpc_requests(term));
        let rep_key = self.keys.rpc_reply(term, &id);
        let mut changed = self.cache_changed.subscribe();
        let lease = self.lease_id();
        let value = json_bytes(&call);
        let put_key = req_key.clone();
        self.etcd("forward to the leader", |mut c| async move {
            c.put(put_key, value, Some(PutOptions::new().with_lease(lease)))
                .await
                .map(|_| ())
        })
        .await
        .map_err(|e| {
            format!(
                "cannot forward the request to the leader ({}): {e}",
                leader.member
            )
        })?;
        let _cleanup = Cleanup {
            fleet: self,
            keys: Some((req_key, rep_key.clone())),
        };
        loop {
            if let Some((reply, _)) = self.cached::<RpcReply>(&rep_key) {
                return Ok(reply);
            }
            let same_leader = self.leader_key().is_some_and(|(_, e)| e.create_rev == term);
            if !same_leader {
                return Err(format!(
                    "the fleet's leader ({}) changed before it answered; the request may or may not \
                     have been applied: check `/status` and retry",
                    leader.member
                ));
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = self.stop.cancelled() => return Err("shutting down".into()),
            }
        }
    }

    /// The leader: serve every forwarded request of its term once.
    pub(super) fn serve_forwarded(self: &Arc<Self>, term: i64) {
        let Some(exec) = self.executor.get().cloned() else {
            return;
        };
        let prefix = self.keys.rpc_requests(term);
        for (id, call) in self.cached_under::<RpcRequest>(&prefix) {
            let fresh = self
                .rpc_started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone());
            if !fresh {
                continue;
            }
            let me = Arc::clone(self);
            let exec = Arc::clone(&exec);
            tokio::spawn(async move {
                tracing::info!(from = %call.from, method = %call.method, path = %call.path, "serving a forwarded admin request");
                let reply = exec(call).await;
                let key = me.keys.rpc_reply(term, &id);
                let lease = me.lease_id();
                let value = json_bytes(&reply);
                if let Err(e) = me
                    .etcd("answer a forwarded request", |mut c| async move {
                        c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                            .await
                            .map(|_| ())
                    })
                    .await
                {
                    tracing::warn!("cannot answer a forwarded request: {e}");
                }
            });
        }
    }

    /// Install the leader's dispatcher.
    pub fn set_executor(&self, exec: Executor) {
        let _ = self.executor.set(exec);
    }

    /// The leader as cached (for messages).
    pub fn leader_member(&self) -> Option<LeaderKey> {
        self.leader_key().map(|(l, _)| l)
    }
}
