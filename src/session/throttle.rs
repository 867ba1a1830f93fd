//! Login throttling per client address, on MySQL's `connection_control`
//! model (MySQL Reference Manual, "Connection Control Plugins"): after
//! `failed_login_threshold` consecutive failed logins from one address,
//! each further failure is answered only after a delay that grows by
//! `failed_login_delay_min_ms` per failure, up to `failed_login_delay_max_ms`.
//! A successful login is never delayed and clears the address's count.
//!
//! Unlike the plugin, the delay is applied to the failure answer, not before
//! authentication: a client with the right password is answered at once
//! even while its address is being throttled.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Limits;

/// Addresses remembered at most; beyond it, the ones idle the longest are
/// forgotten first (memory stays bounded under a spray of addresses).
const MAX_ADDRESSES: usize = 10_000;
/// A count is forgotten once its address has not failed for this long.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Consecutive failed logins per client address (see the module docs).
pub struct LoginThrottle {
    threshold: u32,
    step: Duration,
    max: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginThrottle {
    /// A throttle with the limits' `failed_login_*` settings.
    pub fn new(limits: &Limits) -> Self {
        LoginThrottle {
            threshold: limits.failed_login_threshold,
            step: Duration::from_millis(limits.failed_login_delay_min_ms),
            max: Duration::from_millis(limits.failed_login_delay_max_ms),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Record a failed login from `addr`; returns how long to wait before
    /// answering it: zero up to the threshold, then `step × (failures −
    /// threshold)`, at most `max`.
    pub fn failed(&self, addr: IpAddr) -> Duration {
        if self.threshold == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&addr) {
            map.retain(|_, (_, at)| now.duration_since(*at) < FORGET_AFTER);
            if map.len() >= MAX_ADDRESSES {
                if let Some(oldest) = map.iter().min_by_key(|(_, (_, at))| *at).map(|(a, _)| *a) {
                    map.remove(&oldest);
                }
            }
        }
        let entry = map.entry(addr).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let beyond = entry.0.saturating_sub(self.threshold);
        self.step.saturating_mul(beyond).min(self.max)
    }

    /// A successful login from `addr`: its count starts over.
    pub fn succeeded(&self, addr: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(threshold: u32, min_ms: u64, max_ms: u64) -> LoginThrottle {
        LoginThrottle::new(&Limits {
            failed_login_threshold: threshold,
            failed_login_delay_min_ms: min_ms,
            failed_login_delay_max_ms: max_ms,
            ..Limits::default()
        })
    }

    #[test]
    fn delay_grows_past_the_threshold_and_is_capped() {
        let t = throttle(3, 1000, 2500);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let delays: Vec<u64> = (0..6).map(|_| t.failed(a).as_millis() as u64).collect();
        assert_eq!(delays, [0, 0, 0, 1000, 2000, 2500]);
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.failed(b), Duration::ZERO, "per address");
        t.succeeded(a);
        assert_eq!(t.failed(a), Duration::ZERO, "a success starts over");
    }

    #[test]
    fn threshold_zero_disables() {
        let t = throttle(0, 1000, 2000);
        let a: IpAddr = "::1".parse().unwrap();
        assert!((0..10).all(|_| t.failed(a).is_zero()));
    }

    #[test]
    fn memory_is_bounded() {
        let t = throttle(1, 10, 10);
        for i in 0..(MAX_ADDRESSES as u32 + 50) {
            t.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(t.failures.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
