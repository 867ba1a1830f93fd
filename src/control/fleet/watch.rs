//! The member's mirror of `<prefix>/fleet/` (list, then watch from the
//! listed revision) and what it reacts to, level-triggered after every
//! batch of events ([`Fleet::reconcile`]): a committed state newer than the
//! applied one is adopted; a prepare for the next epoch is drained for and
//! acknowledged; an abort re-opens the gate; a vacant leader key is
//! campaigned for; the leader serves forwarded requests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};

use super::keys::{Ack, FleetState, LeaderKey, MemberRecord, Phase, SwitchRecord};
use super::{json_bytes, wall_ms, Entry, Fleet, FleetError, Pending};
use crate::control::metrics;

impl Fleet {
    /// List + watch `<prefix>/fleet/` until stopped; re-list after any break.
    pub(super) async fn watch_fleet(self: Arc<Self>) {
        loop {
            if self.stopping() {
                return;
            }
            let from = self
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .revision
                + 1;
            let prefix = self.keys.fleet();
            let opts = WatchOptions::new().with_prefix().with_start_revision(from);
            let stream = self
                .etcd(
                    "watch",
                    |mut c| async move { c.watch(prefix, Some(opts)).await },
                )
                .await;
            match stream {
                Ok(mut ws) => loop {
                    let msg = tokio::select! {
                        m = ws.message() => m,
                        _ = self.stop.cancelled() => return,
                    };
                    match msg {
                        Ok(Some(resp)) if resp.canceled() => {
                            tracing::warn!(
                                reason = resp.cancel_reason(),
                                "fleet watch cancelled; re-listing"
                            );
                            break;
                        }
                        Ok(Some(resp)) => {
                            let revision = resp.header().map_or(0, |h| h.revision());
                            self.apply_events(resp.events(), revision);
                            if let Err(e) = self.reconcile() {
                                tracing::warn!("fleet: {e}");
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                },
                Err(e) => tracing::debug!("fleet watch: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = self.stop.cancelled() => return,
            }
            if let Err(e) = self.resync().await {
                tracing::debug!("fleet re-list: {e}");
            }
        }
    }

    /// Fold one watch response into the cache (never older than what it holds).
    fn apply_events(&self, events: &[etcd_client::Event], revision: i64) {
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for ev in events {
                let Some(kv) = ev.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                let newer = cache
                    .keys
                    .get(key)
                    .is_none_or(|e| e.mod_rev < kv.mod_revision());
                match ev.event_type() {
                    EventType::Put if newer => {
                        cache.keys.insert(
                            key.to_string(),
                            Entry {
                                value: kv.value().to_vec(),
                                mod_rev: kv.mod_revision(),
                                create_rev: kv.create_revision(),
                                lease: kv.lease(),
                            },
                        );
                    }
                    EventType::Delete if newer => {
                        cache.keys.remove(key);
                    }
                    _ => {}
                }
            }
            cache.revision = cache.revision.max(revision);
        }
        self.cache_changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// React to the cached keys (see the module docs). Never blocks: what
    /// needs etcd or a drain is spawned.
    pub(super) fn reconcile(self: &Arc<Self>) -> Result<(), FleetError> {
        self.reconcile_state()?;
        self.reconcile_switch();
        self.reconcile_leader();
        if let Some(term) = self.current_term() {
            self.serve_forwarded(term);
        }
        let members = self
            .cached_under::<MemberRecord>(&self.keys.members())
            .len();
        metrics::set_fleet(
            self.applied.load(Ordering::Acquire),
            members,
            self.current_term().is_some(),
        );
        Ok(())
    }

    fn reconcile_state(self: &Arc<Self>) -> Result<(), FleetError> {
        let key = self.keys.state();
        let Some(entry) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .get(&key)
            .cloned()
        else {
            return Ok(());
        };
        let fs: FleetState =
            serde_json::from_slice(&entry.value).map_err(|e| FleetError::Corrupt {
                key: key.clone(),
                message: e.to_string(),
            })?;
        let applied = self.applied.load(Ordering::Acquire);
        if fs.epoch > applied
            || (fs.epoch == applied && self.handle.load() != fs.persisted.state.pattern())
        {
            self.adopt(&fs);
        }
        if let Some(s) = self.scheduler() {
            let persisted = fs.persisted;
            tokio::spawn(async move { s.adopt_state(persisted).await });
        }
        Ok(())
    }

    /// Apply a committed state to the data path: swap under the drain this
    /// member holds for that epoch (its gate then opens), or directly.
    fn adopt(self: &Arc<Self>, fs: &FleetState) {
        let pattern = fs.persisted.state.pattern();
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let previous = match pending.as_ref().and_then(|p| {
            (p.epoch == fs.epoch)
                .then_some(p.drained.as_ref())
                .flatten()
        }) {
            Some(drained) => drained.adopt(pattern, fs.epoch),
            None => self.handle.adopt(pattern, fs.epoch),
        };
        drop(pending); // re-opens the gate
        self.applied.store(fs.epoch, Ordering::Release);
        metrics::set_state(fs.persisted.state);
        tracing::info!(epoch = fs.epoch, state = %fs.persisted.state, %pattern, %previous, "adopted the fleet's state");
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _ = me.put_member().await;
        });
    }

    fn reconcile_switch(self: &Arc<Self>) {
        let Some((sw, entry)) = self.cached::<SwitchRecord>(&self.keys.switch()) else {
            return;
        };
        match sw.phase {
            Phase::Prepare => {
                let next = self.applied.load(Ordering::Acquire) + 1;
                let fresh = self
                    .prepared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(sw.id.clone());
                if sw.epoch == next && fresh {
                    tokio::spawn(Arc::clone(self).prepare(sw, entry.mod_rev));
                }
            }
            Phase::Abort => {
                let holds = self
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .is_some_and(|p| p.switch_id == sw.id);
                if holds {
                    self.release_pending(sw.reason.as_deref().unwrap_or("switch aborted"));
                }
            }
            Phase::Commit => {}
        }
    }

    /// Let go of the prepare this member holds (its gate re-opens).
    pub(super) fn release_pending(&self, why: &str) {
        let released = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(p) = released {
            tracing::info!(switch = %p.switch_id, "released the switch gate: {why}");
        }
    }

    /// Prepare phase, member side: drain (if the authority changes), hold
    /// the gate, acknowledge; a watchdog ends the switch if no outcome comes.
    async fn prepare(self: Arc<Self>, sw: SwitchRecord, rev: i64) {
        let drained = if sw.drain {
            match self.handle.drain(self.drain_timeout).await {
                Ok(d) => Some(d),
                Err(e) => {
                    let detail = format!("{}: {e}", self.cfg.member_id);
                    tracing::warn!(switch = %sw.id, "cannot drain for the switch: {e}");
                    let _ = self.ack(&sw.id, false, Some(detail)).await;
                    return;
                }
            }
        } else {
            None
        };
        let still_pending = self
            .cached::<SwitchRecord>(&self.keys.switch())
            .is_some_and(|(cur, _)| cur.id == sw.id && cur.phase == Phase::Prepare)
            && self.applied.load(Ordering::Acquire) < sw.epoch;
        if !still_pending {
            return; // drop: the gate opens
        }
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(Pending {
            switch_id: sw.id.clone(),
            epoch: sw.epoch,
            drained,
        });
        if let Err(e) = self.ack(&sw.id, true, None).await {
            tracing::warn!(switch = %sw.id, "cannot acknowledge the switch: {e}");
            self.release_pending("acknowledgement failed");
            return;
        }
        tokio::spawn(self.watchdog(sw, rev));
    }

    async fn ack(
        &self,
        switch_id: &str,
        ok: bool,
        detail: Option<String>,
    ) -> Result<(), FleetError> {
        let key = self.keys.ack(switch_id, &self.cfg.member_id);
        let value = json_bytes(&Ack { ok, detail });
        let lease = self.lease_id();
        self.etcd("acknowledge", |mut c| async move {
            c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
                .map(|_| ())
        })
        .await
    }

    /// No outcome within the prepare bound (the leader died or is cut off):
    /// abort the switch if it is still in prepare (compare-and-swap on its
    /// revision, so a commit that got there first wins), then re-read.
    async fn watchdog(self: Arc<Self>, sw: SwitchRecord, rev: i64) {
        let grace =
            Duration::from_millis(self.cfg.switch_timeout_ms + 2 * self.cfg.request_timeout_ms);
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = self.stop.cancelled() => return,
        }
        let holds = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|p| p.switch_id == sw.id);
        if !holds {
            return;
        }
        tracing::warn!(switch = %sw.id, "no outcome for the switch in time; aborting it unless it committed");
        let key = self.keys.switch();
        let abort = SwitchRecord {
            phase: Phase::Abort,
            reason: Some(format!(
                "member {} saw no outcome within the switch timeout (the coordinating leader is gone)",
                self.cfg.member_id
            )),
            ..sw
        };
        let value = json_bytes(&abort);
        let _ = self
            .etcd("abort a stale switch", |mut c| async move {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::put(key, value, None)]);
                c.txn(txn).await.map(|_| ())
            })
            .await;
        if let Err(e) = self.resync().await {
            tracing::warn!("re-reading after a stale switch: {e}");
        }
    }

    /// Who leads: this member when the leader key carries its incarnation
    /// and lease; campaign when nobody does.
    fn reconcile_leader(self: &Arc<Self>) {
        let leader = self.leader_key();
        let mine = leader.as_ref().and_then(|(l, e): &(LeaderKey, Entry)| {
            (l.member == self.cfg.member_id
                && l.incarnation == self.incarnation
                && e.lease == self.lease_id())
            .then_some(e.create_rev)
        });
        let before = std::mem::replace(
            &mut *self.term.lock().unwrap_or_else(|e| e.into_inner()),
            mine,
        );
        if before != mine {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.leadership_changed(mine).await });
        }
        if leader.is_none() && !self.handle.fence().is_fenced() {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.campaign().await });
        }
    }

    async fn campaign(&self) {
        let key = self.keys.leader();
        let value = json_bytes(&LeaderKey {
            member: self.cfg.member_id.clone(),
            incarnation: self.incarnation.clone(),
            since_ms: wall_ms(),
        });
        let lease = self.lease_id();
        let won = self
            .etcd("campaign", |mut c| async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key,
                        value,
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                c.txn(txn).await.map(|r| r.succeeded())
            })
            .await;
        if let Ok(true) = won {
            tracing::info!(member = %self.cfg.member_id, "won the fleet's leader election");
        }
    }

    /// Start or stop the leader's work (validation on this member, the
    /// scheduler's background work).
    async fn leadership_changed(self: Arc<Self>, term: Option<i64>) {
        let scheduler = self.scheduler();
        match term {
            Some(term) => {
                tracing::info!(member = %self.cfg.member_id, term, "leading the fleet's background work");
                if let Some(v) = self.validation.get() {
                    v.activate(term).await;
                }
                if let Some(s) = scheduler {
                    s.lead().await;
                }
            }
            None => {
                tracing::info!(member = %self.cfg.member_id, "no longer the fleet's leader");
                if let Some(s) = scheduler {
                    s.step_down().await;
                }
                if let Some(v) = self.validation.get() {
                    v.deactivate().await;
                }
            }
        }
    }
}
