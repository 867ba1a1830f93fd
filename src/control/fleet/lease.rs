//! The member's lease: keep-alive, the fence's deadline, re-sync after a
//! pause or an outage, re-joining after the lease expired, the heartbeat.
//!
//! After every successful keep-alive the fence is confirmed until
//! `sent + ttl − fence_margin_ms`, where `sent` is when the keep-alive was
//! *sent* on the monotonic clock: etcd extends the lease when it *receives*
//! it, later, so the lease cannot expire before that instant. When this
//! member could not vouch for its lease at some point (the deadline passed:
//! etcd unreachable, the process paused or starved), it re-reads the fleet's
//! state before the fence opens again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};

use super::{Fleet, FleetError, Lease};
use crate::config::OnCoordinatorLoss;
use crate::control::metrics;
use crate::fence::FenceState;

type Keeper = (LeaseKeeper, LeaseKeepAliveStream, i64);

impl Fleet {
    fn fences(&self) -> bool {
        self.cfg.on_coordinator_loss == OnCoordinatorLoss::FenceWrites
    }

    /// Grant a fresh lease; returns when the grant was sent (the deadline's
    /// origin). The fence is not opened here: callers vouch once the state
    /// is re-read.
    pub(super) async fn new_lease(&self) -> Result<Instant, FleetError> {
        let ttl_s = (self.cfg.lease_ttl_ms / 1000) as i64;
        let sent = Instant::now();
        let resp = self
            .etcd("lease grant", |mut c| async move {
                c.lease_grant(ttl_s, None).await
            })
            .await?;
        let ttl = Duration::from_secs(resp.ttl().max(1) as u64);
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = Lease { id: resp.id(), ttl };
        Ok(sent)
    }

    /// The lease is valid at least until `sent + ttl`: open the fence until
    /// that minus the margin.
    pub(super) fn vouch(&self, sent: Instant, ttl: Duration) {
        let fence = self.handle.fence();
        if !self.fences() {
            fence.disarm();
            return;
        }
        let margin = Duration::from_millis(self.cfg.fence_margin_ms);
        let deadline = sent + ttl.saturating_sub(margin);
        fence.confirm_until(
            deadline,
            &format!(
                "fleet member {} could not renew its etcd lease in time; the fleet may switch without it",
                self.cfg.member_id
            ),
        );
    }

    /// Keep the lease, the fence and the member record up to date until stopped.
    pub(super) async fn keep_lease(self: Arc<Self>) {
        let every = Duration::from_millis(self.cfg.keepalive_every_ms());
        let mut keeper: Option<Keeper> = None;
        let mut last_beat = Instant::now();
        let mut healthy = true;
        loop {
            let pause = if healthy {
                every
            } else {
                Duration::from_millis(250)
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stop.cancelled() => return,
            }
            let sent = Instant::now();
            let mut answer = self.keep_alive_once(&mut keeper).await;
            if answer.is_err() {
                // The stream may just be stale (after a pause): one more try on a fresh one.
                keeper = None;
                answer = self.keep_alive_once(&mut keeper).await;
            }
            healthy = match answer {
                Ok(ttl) if ttl > 0 => self.renewed(sent, healthy).await,
                Ok(_) => {
                    keeper = None;
                    self.rejoin().await
                }
                Err(e) => {
                    keeper = None;
                    self.lost(&e).await;
                    false
                }
            };
            if healthy && last_beat.elapsed() >= every {
                last_beat = Instant::now();
                if let Err(e) = self.put_member().await {
                    tracing::debug!("heartbeat: {e}");
                }
            }
            metrics::set_fenced(self.handle.fence().is_fenced());
        }
    }

    /// A keep-alive answered: if this member's lease could not be vouched
    /// for meanwhile, re-read the fleet first; then open the fence again.
    async fn renewed(self: &Arc<Self>, sent: Instant, was_healthy: bool) -> bool {
        let ttl = self.lease.lock().unwrap_or_else(|e| e.into_inner()).ttl;
        let fence = self.handle.fence();
        let in_doubt = !was_healthy
            || (self.fences()
                && (fence.state() != FenceState::Open
                    || self.deadline().is_none_or(|d| Instant::now() >= d)));
        if in_doubt {
            if self.fences() {
                fence.resyncing(&format!(
                    "fleet member {} is re-reading the migration state after its lease could not be confirmed",
                    self.cfg.member_id
                ));
            }
            if let Err(e) = self.resync().await {
                self.lost(&e).await;
                return false;
            }
            tracing::info!(member = %self.cfg.member_id, epoch = self.applied.load(Ordering::Acquire), "re-synced with the fleet");
            let _ = self.put_member().await;
        }
        self.vouch(sent, ttl);
        true
    }

    /// The lease expired at etcd (paused past its TTL, or partitioned): this
    /// member is no longer part of the fleet. Take a new lease, register
    /// again and re-read the state before serving anything.
    async fn rejoin(self: &Arc<Self>) -> bool {
        tracing::warn!(member = %self.cfg.member_id, "lease expired at etcd; re-joining the fleet");
        if self.fences() {
            self.handle.fence().resyncing(&format!(
                "fleet member {} lost its lease and is re-joining the fleet",
                self.cfg.member_id
            ));
        }
        let joined = async {
            let sent = self.new_lease().await?;
            self.put_member().await?;
            self.resync().await?;
            Ok::<_, FleetError>(sent)
        }
        .await;
        match joined {
            Ok(sent) => {
                let ttl = self.lease.lock().unwrap_or_else(|e| e.into_inner()).ttl;
                self.vouch(sent, ttl);
                tracing::info!(member = %self.cfg.member_id, epoch = self.applied.load(Ordering::Acquire), "re-joined the fleet");
                true
            }
            Err(e) => {
                self.lost(&e).await;
                false
            }
        }
    }

    /// The lease could not be renewed. Before the deadline nothing changes
    /// (the lease still holds). Past it, statements wait while the member
    /// tries to re-read the state — so it never serves under a pattern older
    /// than the fleet's when etcd can be asked — then reads go on under the
    /// pattern it knows and writes are fenced, and a prepare this member
    /// acknowledged is let go (its gate would otherwise hold the reads too).
    async fn lost(self: &Arc<Self>, e: &FleetError) {
        let fence = self.handle.fence();
        if !self.fences() {
            tracing::warn!(
                "coordinator unreachable ({e}); keep_serving: serving under the last known pattern"
            );
            let _ = self.resync().await;
            return;
        }
        let past = self.deadline().is_none_or(|d| Instant::now() >= d);
        if !past {
            tracing::warn!("keep-alive failed ({e}); the lease still holds until the deadline");
            return;
        }
        if fence.state() != FenceState::ReadsOnly {
            fence.resyncing(&format!(
                "fleet member {} could not renew its lease and is re-reading the migration state",
                self.cfg.member_id
            ));
        }
        let reread = self.resync().await;
        if fence.state() != FenceState::ReadsOnly {
            tracing::warn!(member = %self.cfg.member_id, reread = reread.is_ok(), "lease not renewed past its deadline ({e}); writes are fenced, reads go on");
        }
        let why = match &reread {
            Ok(()) => format!("its lease could not be renewed ({e})"),
            Err(_) => format!("it cannot reach the coordinator ({e})"),
        };
        fence.reads_only(&format!(
            "fleet member {}: {why}; its lease may have expired and the fleet may switch without it",
            self.cfg.member_id
        ));
        self.release_pending("the lease could not be renewed");
    }

    async fn keep_alive_once(&self, keeper: &mut Option<Keeper>) -> Result<i64, FleetError> {
        let id = self.lease_id();
        if keeper.as_ref().is_none_or(|k| k.2 != id) {
            let opened = self
                .etcd(
                    "keep-alive",
                    |mut c| async move { c.lease_keep_alive(id).await },
                )
                .await;
            let (k, s) = match opened {
                // etcd-client reports a keep-alive of an expired lease as this error.
                Err(FleetError::Etcd { message, .. }) if message.contains("lease not found") => {
                    return Ok(0)
                }
                other => other?,
            };
            *keeper = Some((k, s, id));
        }
        let Some((k, s, _)) = keeper.as_mut() else {
            unreachable!("set above")
        };
        let ms = self.cfg.request_timeout_ms;
        let answer = tokio::time::timeout(Duration::from_millis(ms), async {
            k.keep_alive().await?;
            s.message().await
        })
        .await;
        let endpoints = self.endpoints.clone();
        match answer {
            Ok(Ok(Some(r))) => Ok(r.ttl()),
            // etcd-client reports a keep-alive of an expired lease as an error.
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => Ok(0),
            Ok(Ok(None)) => Err(FleetError::Etcd {
                endpoints,
                message: "keep-alive stream closed".into(),
            }),
            Ok(Err(e)) => Err(FleetError::Etcd {
                endpoints,
                message: format!("keep-alive: {e}"),
            }),
            Err(_) => Err(FleetError::Timeout {
                endpoints,
                ms,
                what: "keep-alive",
            }),
        }
    }
}
