//! `[coordination]`: where the migration state lives — a local file (the
//! default, one process) or etcd (a fleet of sidecars, docs/FLEET.md).

use serde::Deserialize;

use super::{key_err, ConfigError};

/// What a member does when it cannot renew its lease with the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCoordinatorLoss {
    /// Stop starting writes before the lease can expire (the fleet may then
    /// switch without this member); reads go on under the last known pattern.
    FenceWrites,
    /// Keep serving everything under the last known pattern; in exchange no
    /// switch commits while this member is registered and unreachable (an
    /// operator evicts it: `POST /fleet/evict`).
    KeepServing,
}

impl OnCoordinatorLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            OnCoordinatorLoss::FenceWrites => "fence_writes",
            OnCoordinatorLoss::KeepServing => "keep_serving",
        }
    }
}

/// `[coordination] backend = "etcd"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdCoordination {
    /// `http://host:port` of the etcd members.
    pub endpoints: Vec<String>,
    /// Every key of this migration lives under it (`/cutover/shop`).
    pub prefix: String,
    /// This member's name in the fleet (unique; default hostname:listen-port).
    pub member_id: String,
    /// Lease TTL (whole seconds, at least 2 s).
    pub lease_ttl_ms: u64,
    /// Bound of a switch's prepare phase.
    pub switch_timeout_ms: u64,
    pub on_coordinator_loss: OnCoordinatorLoss,
    /// Writes stop this long before the lease could expire (default TTL/4).
    pub fence_margin_ms: u64,
    /// How long a statement waits at a closed fence before it is refused.
    pub fence_wait_ms: u64,
    /// Bound of one request to etcd.
    pub request_timeout_ms: u64,
}

impl EtcdCoordination {
    /// Keep-alive period: a third of the TTL.
    pub fn keepalive_every_ms(&self) -> u64 {
        self.lease_ttl_ms / 3
    }
}

/// Where the migration state lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Coordination {
    /// `state_file` on local disk: one cutover process per migration.
    #[default]
    File,
    /// etcd, shared by every member of the fleet.
    Etcd(EtcdCoordination),
}

/// The raw `[coordination]` table.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCoordination {
    backend: Option<String>,
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    member_id: Option<String>,
    lease_ttl_ms: Option<u64>,
    switch_timeout_ms: Option<u64>,
    on_coordinator_loss: Option<String>,
    fence_margin_ms: Option<u64>,
    fence_wait_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
}

/// `CUTOVER_COORDINATION_*` / `--coordination-*` overrides of `[coordination]`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CoordinationOverrides {
    /// Where the migration state lives: `file` (state_file) or `etcd` (a fleet).
    #[arg(long = "coordination-backend", env = "CUTOVER_COORDINATION_BACKEND")]
    pub backend: Option<String>,
    /// etcd endpoints, comma-separated (http://host:2379,…).
    #[arg(
        long = "coordination-endpoints",
        env = "CUTOVER_COORDINATION_ENDPOINTS"
    )]
    pub endpoints: Option<String>,
    /// Key prefix of this migration in etcd (/cutover/shop).
    #[arg(long = "coordination-prefix", env = "CUTOVER_COORDINATION_PREFIX")]
    pub prefix: Option<String>,
    /// This member's unique name in the fleet (a pod template sets the pod name).
    #[arg(
        long = "coordination-member-id",
        env = "CUTOVER_COORDINATION_MEMBER_ID"
    )]
    pub member_id: Option<String>,
    /// Lease TTL in ms (whole seconds).
    #[arg(
        long = "coordination-lease-ttl-ms",
        env = "CUTOVER_COORDINATION_LEASE_TTL_MS"
    )]
    pub lease_ttl_ms: Option<u64>,
    /// Bound of a switch's prepare phase, in ms.
    #[arg(
        long = "coordination-switch-timeout-ms",
        env = "CUTOVER_COORDINATION_SWITCH_TIMEOUT_MS"
    )]
    pub switch_timeout_ms: Option<u64>,
    /// `fence_writes` or `keep_serving`.
    #[arg(
        long = "coordination-on-coordinator-loss",
        env = "CUTOVER_COORDINATION_ON_COORDINATOR_LOSS"
    )]
    pub on_coordinator_loss: Option<String>,
}

impl RawCoordination {
    pub(super) fn apply(&mut self, o: &CoordinationOverrides) {
        let set = |slot: &mut Option<String>, v: &Option<String>| {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                *slot = Some(v.clone());
            }
        };
        set(&mut self.backend, &o.backend);
        set(&mut self.prefix, &o.prefix);
        set(&mut self.member_id, &o.member_id);
        set(&mut self.on_coordinator_loss, &o.on_coordinator_loss);
        if let Some(e) = o.endpoints.as_ref().filter(|e| !e.is_empty()) {
            self.endpoints = Some(e.split(',').map(|s| s.trim().to_string()).collect());
        }
        self.lease_ttl_ms = o.lease_ttl_ms.or(self.lease_ttl_ms);
        self.switch_timeout_ms = o.switch_timeout_ms.or(self.switch_timeout_ms);
    }

    /// Validate; `listen` gives the default member id's port.
    pub(super) fn into_config(self, listen: &str) -> Result<Coordination, ConfigError> {
        let k = |name: &str| format!("coordination.{name}");
        match self.backend.as_deref().unwrap_or("file") {
            "file" => {
                if self.endpoints.is_some() || self.prefix.is_some() {
                    return Err(key_err(
                        &k("backend"),
                        "endpoints/prefix are set but backend is \"file\"; set backend = \"etcd\"",
                    ));
                }
                return Ok(Coordination::File);
            }
            "etcd" => {}
            other => {
                return Err(key_err(
                    &k("backend"),
                    format!("expected \"file\" or \"etcd\", got \"{other}\""),
                ))
            }
        }
        let endpoints = self
            .endpoints
            .unwrap_or_else(|| vec!["http://127.0.0.1:2379".into()]);
        if endpoints.is_empty()
            || endpoints
                .iter()
                .any(|e| !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < 10)
        {
            return Err(key_err(
                &k("endpoints"),
                "a non-empty list of http://host:port URLs",
            ));
        }
        let prefix = self.prefix.ok_or_else(|| {
            key_err(
                &k("prefix"),
                "missing (one migration = one prefix, e.g. \"/cutover/shop\")",
            )
        })?;
        if !prefix.starts_with('/') || prefix.ends_with('/') || prefix.len() < 2 {
            return Err(key_err(
                &k("prefix"),
                "must start with `/` and not end with it (e.g. \"/cutover/shop\")",
            ));
        }
        let member_id = self.member_id.unwrap_or_else(|| default_member_id(listen));
        if member_id.is_empty() || member_id.contains(['/', ' ']) || member_id.len() > 128 {
            return Err(key_err(
                &k("member_id"),
                "1..128 characters, no `/` or space",
            ));
        }
        let lease_ttl_ms = self.lease_ttl_ms.unwrap_or(10_000);
        if lease_ttl_ms < 2000 || !lease_ttl_ms.is_multiple_of(1000) {
            return Err(key_err(
                &k("lease_ttl_ms"),
                "whole seconds, at least 2000 (etcd leases count in seconds)",
            ));
        }
        let fence_margin_ms = self.fence_margin_ms.unwrap_or(lease_ttl_ms / 4);
        if fence_margin_ms == 0 || fence_margin_ms > lease_ttl_ms / 2 {
            return Err(key_err(
                &k("fence_margin_ms"),
                "between 1 and half of lease_ttl_ms",
            ));
        }
        let switch_timeout_ms = self.switch_timeout_ms.unwrap_or(10_000);
        if switch_timeout_ms < 100 {
            return Err(key_err(&k("switch_timeout_ms"), "at least 100"));
        }
        let on_coordinator_loss = match self.on_coordinator_loss.as_deref() {
            None | Some("fence_writes") => OnCoordinatorLoss::FenceWrites,
            Some("keep_serving") => OnCoordinatorLoss::KeepServing,
            Some(other) => {
                return Err(key_err(
                    &k("on_coordinator_loss"),
                    format!("expected \"fence_writes\" or \"keep_serving\", got \"{other}\""),
                ))
            }
        };
        let fence_wait_ms = self.fence_wait_ms.unwrap_or(2000);
        let request_timeout_ms = self.request_timeout_ms.unwrap_or(2000);
        if fence_wait_ms == 0 || request_timeout_ms == 0 {
            return Err(key_err(
                &k("fence_wait_ms"),
                "fence_wait_ms and request_timeout_ms must be at least 1",
            ));
        }
        Ok(Coordination::Etcd(EtcdCoordination {
            endpoints,
            prefix,
            member_id,
            lease_ttl_ms,
            switch_timeout_ms,
            on_coordinator_loss,
            fence_margin_ms,
            fence_wait_ms,
            request_timeout_ms,
        }))
    }
}

/// `hostname:port` of `listen` (the pod name in Kubernetes).
fn default_member_id(listen: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "cutover".into());
    let port = listen.rsplit_once(':').map_or("6033", |(_, p)| p);
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const BASE: &str =
        "[source]\nurl='mysql://a:b@h:1/d'\n[destination]\nurl='mysql://a:b@h:2/d'\n";

    #[test]
    fn file_is_the_default() {
        let c = Config::parse(BASE).unwrap();
        assert_eq!(c.coordination, Coordination::File);
    }

    #[test]
    fn etcd_keys_and_defaults() {
        let c = Config::parse(&format!(
            "listen='127.0.0.1:7000'\n{BASE}[coordination]\nbackend='etcd'\nprefix='/cutover/shop'\n"
        ))
        .unwrap();
        let Coordination::Etcd(e) = c.coordination else {
            panic!("etcd")
        };
        assert_eq!(e.endpoints, vec!["http://127.0.0.1:2379".to_string()]);
        assert!(e.member_id.ends_with(":7000"), "{}", e.member_id);
        assert_eq!((e.lease_ttl_ms, e.switch_timeout_ms), (10_000, 10_000));
        assert_eq!(e.fence_margin_ms, 2500);
        assert_eq!(e.on_coordinator_loss, OnCoordinatorLoss::FenceWrites);
    }

    #[test]
    fn binlog_change_capture_is_refused_in_a_fleet() {
        let text = format!(
            "{BASE}[validation]\nchange_capture='binlog'\n[coordination]\nbackend='etcd'\nprefix='/x'\n"
        );
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("validation.change_capture"), "{e}");
        assert!(e.contains("etcd"), "{e}");
        let file = format!("{BASE}[validation]\nchange_capture='binlog'\n");
        assert!(
            Config::parse(&file).is_ok(),
            "the file-backed default keeps it"
        );
    }

    #[test]
    fn errors_name_the_key() {
        for (extra, key) in [
            ("backend='zk'", "coordination.backend"),
            ("backend='etcd'", "coordination.prefix"),
            ("backend='etcd'\nprefix='x'", "coordination.prefix"),
            (
                "backend='etcd'\nprefix='/x'\nlease_ttl_ms=1500",
                "coordination.lease_ttl_ms",
            ),
            (
                "backend='etcd'\nprefix='/x'\nmember_id='a/b'",
                "coordination.member_id",
            ),
            (
                "backend='etcd'\nprefix='/x'\nendpoints=['127.0.0.1:2379']",
                "coordination.endpoints",
            ),
            (
                "backend='etcd'\nprefix='/x'\non_coordinator_loss='panic'",
                "coordination.on_coordinator_loss",
            ),
            (
                "backend='etcd'\nprefix='/x'\nfence_margin_ms=6000",
                "coordination.fence_margin_ms",
            ),
            ("prefix='/x'", "coordination.backend"),
            ("lease_ttl=5", "lease_ttl"),
        ] {
            let e = Config::parse(&format!("{BASE}[coordination]\n{extra}\n")).unwrap_err();
            assert!(e.to_string().contains(key), "{extra}: {e}");
        }
    }

    #[test]
    fn overrides_win() {
        let mut raw = RawCoordination::default();
        raw.apply(&CoordinationOverrides {
            backend: Some("etcd".into()),
            endpoints: Some("http://a:1, http://b:2".into()),
            prefix: Some("/p".into()),
            member_id: Some("web-7".into()),
            lease_ttl_ms: Some(4000),
            ..Default::default()
        });
        let Coordination::Etcd(e) = raw.into_config("127.0.0.1:1").unwrap() else {
            panic!()
        };
        assert_eq!(e.endpoints, vec!["http://a:1", "http://b:2"]);
        assert_eq!((e.member_id.as_str(), e.lease_ttl_ms), ("web-7", 4000));
    }
}
