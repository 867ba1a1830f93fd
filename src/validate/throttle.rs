//! Pacing: adaptive chunk size, a rows-per-second cap, and back-off when a
//! backend's query latency rises (the application comes first).

use std::time::{Duration, Instant};

use crate::config::ValidationConfig;

/// Picks the next chunk size so one chunk takes about `chunk_target_ms`.
#[derive(Debug, Clone)]
pub struct ChunkSizer {
    size: u64,
    min: u64,
    max: u64,
    target: Duration,
}

impl ChunkSizer {
    pub fn new(cfg: &ValidationConfig) -> ChunkSizer {
        ChunkSizer {
            size: 1000.clamp(cfg.chunk_min_rows, cfg.chunk_max_rows),
            min: cfg.chunk_min_rows,
            max: cfg.chunk_max_rows,
            target: Duration::from_millis(cfg.chunk_target_ms),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Feed back how long a chunk of `rows` took. Grows or shrinks at most 2×
    /// per step; a short last chunk tells nothing and is ignored.
    pub fn observe(&mut self, rows: u64, took: Duration) {
        if rows < self.size / 2 {
            return;
        }
        let took = took.as_secs_f64().max(0.001);
        let ratio = (self.target.as_secs_f64() / took).clamp(0.5, 2.0);
        self.size = ((self.size as f64 * ratio) as u64).clamp(self.min, self.max);
    }

    /// Halve (after a back-off).
    pub fn shrink(&mut self) {
        self.size = (self.size / 2).max(self.min);
    }
}

/// Rate cap plus latency back-off.
#[derive(Debug)]
pub struct Throttle {
    max_rows_per_second: u64,
    factor: f64,
    window_start: Instant,
    window_rows: u64,
    /// Seconds per row of a normal chunk (slow-moving average).
    baseline: Option<f64>,
    pub backoffs: u64,
}

/// What the throttle did after a chunk.
#[derive(Debug, PartialEq)]
pub enum Pace {
    Go,
    /// Latency rose: the caller should shrink its chunk.
    BackedOff,
}

impl Throttle {
    pub fn new(cfg: &ValidationConfig) -> Throttle {
        Throttle {
            max_rows_per_second: cfg.max_rows_per_second,
            factor: cfg.latency_backoff_factor,
            window_start: Instant::now(),
            window_rows: 0,
            baseline: None,
            backoffs: 0,
        }
    }

    /// The sleep the rate cap requires after `rows` more rows (pure; for tests).
    fn rate_delay(&self, now: Instant) -> Duration {
        if self.max_rows_per_second == 0 {
            return Duration::ZERO;
        }
        let due =
            Duration::from_secs_f64(self.window_rows as f64 / self.max_rows_per_second as f64);
        due.saturating_sub(now - self.window_start)
    }

    /// Record a latency sample; returns the back-off to sleep, if any.
    fn latency_delay(&mut self, rows: u64, latency: Duration) -> Option<Duration> {
        let per_row = latency.as_secs_f64() / rows.max(1) as f64;
        match self.baseline {
            None => {
                self.baseline = Some(per_row);
                None
            }
            Some(b) => {
                let slow = per_row > b * self.factor && latency > Duration::from_millis(50);
                // Adopt lasting changes slowly, normal samples faster.
                let alpha = if slow { 0.02 } else { 0.2 };
                self.baseline = Some(b + alpha * (per_row - b));
                slow.then(|| (latency * 2).min(Duration::from_secs(5)))
            }
        }
    }

    /// Call after each chunk with its row count and its slowest query time.
    pub async fn after_chunk(&mut self, rows: u64, latency: Duration) -> Pace {
        self.window_rows += rows;
        let mut pace = Pace::Go;
        if let Some(d) = self.latency_delay(rows, latency) {
            self.backoffs += 1;
            tracing::debug!(?latency, backoff = ?d, "validator backing off: backend latency rose");
            tokio::time::sleep(d).await;
            pace = Pace::BackedOff;
        }
        let d = self.rate_delay(Instant::now());
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        // Keep the rate window short so a pause does not allow a later burst.
        if self.window_start.elapsed() > Duration::from_secs(10) {
            self.window_start = Instant::now();
            self.window_rows = 0;
        }
        pace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_adapts_within_bounds() {
        let cfg = ValidationConfig {
            chunk_min_rows: 100,
            chunk_max_rows: 5000,
            chunk_target_ms: 500,
            ..Default::default()
        };
        let mut s = ChunkSizer::new(&cfg);
        assert_eq!(s.size(), 1000);
        s.observe(1000, Duration::from_millis(100)); // fast: grow 2x at most
        assert_eq!(s.size(), 2000);
        s.observe(2000, Duration::from_millis(500));
        assert_eq!(s.size(), 2000);
        s.observe(10, Duration::from_secs(10)); // short chunk: ignored
        assert_eq!(s.size(), 2000);
        for _ in 0..10 {
            s.observe(s.size(), Duration::from_secs(5));
        }
        assert_eq!(s.size(), 100);
        for _ in 0..10 {
            s.observe(s.size(), Duration::from_millis(1));
        }
        assert_eq!(s.size(), 5000);
    }

    #[test]
    fn rate_cap_and_latency_backoff() {
        let cfg = ValidationConfig {
            max_rows_per_second: 1000,
            ..Default::default()
        };
        let mut t = Throttle::new(&cfg);
        t.window_rows = 500;
        let d = t.rate_delay(t.window_start);
        assert_eq!(d, Duration::from_millis(500));
        assert!(t.latency_delay(1000, Duration::from_millis(100)).is_none()); // baseline
        assert!(t.latency_delay(1000, Duration::from_millis(120)).is_none());
        assert!(t.latency_delay(1000, Duration::from_millis(900)).is_some());
        // tiny absolute latencies never back off
        assert!(t.latency_delay(1, Duration::from_millis(10)).is_none());
    }
}
