//! Pass-through authentication (`auth = "passthrough"`): a user that is not
//! in `[[users]]` is checked against the authoritative backend's own
//! account of that name, so accounts created on the server at run time can
//! log in through cutover without a config change.
//!
//! cutover reads the account's stored `mysql_native_password` hash
//! (`SHA1(SHA1(password))`, in `mysql.user`) with the backend URL's account,
//! checks the client's answer against it and recovers `SHA1(password)`
//! (see [`crate::auth::native`]), with which it then logs in to each
//! backend *as the client's user* — the backend checks the login once more
//! (host rules, locked accounts) and its grants apply. The password itself
//! is never known to cutover — except when a client logs in with
//! caching_sha2_password over TLS and sends it (full authentication): it is
//! checked against the same stored hash and then answers whatever plugin
//! the backends' accounts use.
//!
//! Requirements: the URL account may read `mysql.user` (`SELECT` on
//! `mysql.*`), and the authoritative backend's account uses
//! `mysql_native_password`. With only the hash (native answers), the
//! accounts must use `mysql_native_password` on both backends with the same
//! password; other plugins (ed25519, caching_sha2_password) are refused
//! with an error naming the plugin.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{OptsBuilder, Pool, PoolConstraints, PoolOpts};
use tracing::warn;

use crate::config::BackendConfig;

use crate::pattern::Side;

/// A `mysql_native_password` account's stored password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// `SHA1(SHA1(password))`.
    Hash([u8; 20]),
    /// No password (the client answers with nothing).
    Empty,
}

/// The stored native-password hashes of accounts on one backend, read with
/// the URL's account through a small pool (at most 2 connections).
pub struct Directory {
    pools: [Pool; 2],
    timeout: Duration,
}

impl Directory {
    /// Pools for both backends' URL accounts (connections open lazily).
    pub fn new(source: &BackendConfig, destination: &BackendConfig, timeout: Duration) -> Self {
        Directory {
            pools: [pool(source), pool(destination)],
            timeout,
        }
    }

    /// The stored password of every `mysql_native_password` account named
    /// `user` on `side` (one per host pattern). Empty when there is none, or
    /// when the lookup fails (logged: a backend down, no `SELECT` on
    /// `mysql.user`): the login is then denied.
    pub async fn hashes(&self, side: Side, user: &str) -> Vec<Stored> {
        let pool = &self.pools[side.index()];
        let lookup = async {
            let mut conn = pool.get_conn().await?;
            conn.exec::<String, _, _>(
                "SELECT authentication_string FROM mysql.user \
                 WHERE User = ? AND plugin = 'mysql_native_password'",
                (user,),
            )
            .await
        };
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(rows)) => rows
                .iter()
                .filter_map(|h| match h.as_str() {
                    "" => Some(Stored::Empty),
                    h => crate::auth::native::parse_stored_hash(h).map(Stored::Hash),
                })
                .collect(),
            Ok(Err(e)) => {
                warn!(%side, user, "pass-through: cannot read mysql.user with the URL account: {e}");
                Vec::new()
            }
            Err(_) => {
                warn!(%side, user, "pass-through: reading mysql.user timed out");
                Vec::new()
            }
        }
    }
}

fn pool(cfg: &BackendConfig) -> Pool {
    let opts = OptsBuilder::default()
        .ip_or_hostname(cfg.host.clone())
        .tcp_port(cfg.port)
        .user(Some(cfg.user.clone()))
        .pass(Some(cfg.password.clone()))
        .prefer_socket(false)
        .stmt_cache_size(0)
        .pool_opts(
            PoolOpts::default()
                .with_constraints(PoolConstraints::new(0, 2).expect("0 <= 2"))
                .with_reset_connection(false),
        );
    Pool::new(opts)
}
