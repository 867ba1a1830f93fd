//! Runs cutover in-process on 127.0.0.1:0 against a real MariaDB pair.
#![allow(dead_code)]

pub mod raw;

use std::sync::Arc;

use cutover::config::Config;
use cutover::listener::Listener;
use cutover::pattern::{Pattern, PatternHandle};
use cutover::stats::{DataPathStats, StatsSnapshot};
use tokio_util::sync::CancellationToken;

use crate::support::Pair;

pub struct TestProxy {
    pub port: u16,
    pub pattern: PatternHandle,
    pub stats: Arc<DataPathStats>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

pub fn config_text(pair: &Pair, pattern: Pattern, extra: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ninitial_pattern = \"{pattern}\"\nconnect_timeout_ms = 1000\n\
         secondary_backoff_min_ms = 100\nsecondary_backoff_max_ms = 400\n{extra}\n\
         [source]\nurl = \"{}\"\n[destination]\nurl = \"{}\"\n",
        pair.source.url("shop"),
        pair.destination.url("shop"),
    )
}

impl TestProxy {
    pub async fn start(pair: &Pair, pattern: Pattern) -> TestProxy {
        Self::start_with(pair, pattern, "").await
    }

    /// `extra`: more top-level TOML keys.
    pub async fn start_with(pair: &Pair, pattern: Pattern, extra: &str) -> TestProxy {
        let cfg = Config::parse(&config_text(pair, pattern, extra)).expect("valid test config");
        Self::from_config(cfg).await
    }

    pub async fn from_config(cfg: Config) -> TestProxy {
        let pattern = PatternHandle::new(cfg.initial_pattern);
        Self::attach(cfg, pattern, DataPathStats::new()).await
    }

    /// A proxy sharing the pattern handle and counters of a control plane.
    pub async fn attach(
        cfg: Config,
        pattern: PatternHandle,
        stats: Arc<DataPathStats>,
    ) -> TestProxy {
        let proxy = Listener::bind(Arc::new(cfg), pattern.clone(), stats.clone())
            .await
            .expect("bind");
        let port = proxy.local_addr().port();
        proxy.probe_backends().await;
        let stop = CancellationToken::new();
        let task = tokio::spawn(proxy.run(stop.clone()));
        TestProxy {
            port,
            pattern,
            stats,
            stop,
            task,
        }
    }

    pub fn opts(&self) -> mysql_async::OptsBuilder {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some("app"))
            .pass(Some("app"))
            .db_name(Some("shop"))
            .prefer_socket(false)
            .stmt_cache_size(0)
    }

    pub async fn conn(&self) -> mysql_async::Conn {
        mysql_async::Conn::new(self.opts())
            .await
            .expect("connect through cutover")
    }

    pub fn set_pattern(&self, p: Pattern) {
        self.pattern.swap(p);
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The server error code of a mysql_async error (panics on other errors).
pub fn server_code(e: &mysql_async::Error) -> u16 {
    match e {
        mysql_async::Error::Server(s) => s.code,
        other => panic!("expected a server error, got {other:?}"),
    }
}
