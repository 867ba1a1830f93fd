//! One backend as the validator sees it: a small connection pool, the
//! database name, and timed queries.

use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Row, Value};

use std::sync::Arc;

use crate::config::{BackendConfig, Checksum, DdlDefaults};
use crate::pattern::Side;

use super::ValidateError;

/// A connection from `pool`, retrying a refused login
/// ([`super::tls::retries_access_denied`]) up to
/// [`super::tls::LOGIN_ATTEMPTS`] times in all.
async fn get_conn(pool: &Pool) -> Result<mysql_async::Conn, mysql_async::Error> {
    let mut attempt = 1;
    loop {
        match pool.get_conn().await {
            Err(e)
                if attempt < super::tls::LOGIN_ATTEMPTS
                    && super::tls::retries_access_denied(&e) =>
            {
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// A pooled connection target. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pub side: Side,
    pub pool: Pool,
    pub database: String,
    /// The hash runs on this pair use (`[validation] checksum`).
    pub checksum: Checksum,
    /// Character-set differences between the sides are intended
    /// (`[mirror] ddl_defaults = "own"`): compare converted text.
    pub charset_drift_intended: bool,
    /// Whether the server has `CRC32C()` (MariaDB ≥ 10.8), asked once.
    crc32c: Arc<tokio::sync::OnceCell<bool>>,
    /// `ssl_mode = "preferred"`: the plaintext pool used once the server
    /// turned out not to offer TLS.
    plain: Option<(Pool, std::sync::Arc<std::sync::atomic::AtomicBool>)>,
}

impl Db {
    /// Pools are small (the validator must never starve the application):
    /// one connection per concurrent query plus one for a fixer transaction.
    pub fn open(side: Side, cfg: &BackendConfig) -> Result<Db, ValidateError> {
        let database = cfg.database.clone().ok_or_else(|| {
            ValidateError::Config(format!(
                "{}.url must name a database (mysql://user:pass@host:port/DB)",
                side.as_str()
            ))
        })?;
        let constraints = PoolConstraints::new(0, 4).expect("0 <= 4");
        let opts = OptsBuilder::default()
            .ip_or_hostname(cfg.host.clone())
            .tcp_port(cfg.port)
            .user(Some(cfg.user.clone()))
            .pass(Some(cfg.password.clone()))
            .db_name(Some(database.clone()))
            .prefer_socket(false)
            // TIMESTAMP values are compared and copied as UTC on both sides.
            .init(vec!["SET time_zone = '+00:00'".to_string()])
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_reset_connection(false),
            );
        let plain = (cfg.tls.mode == crate::tls::SslMode::Preferred).then(|| {
            let pool = Pool::new(Opts::from(opts.clone()));
            (pool, Default::default())
        });
        let opts = super::tls::apply(opts, cfg);
        Ok(Db {
            side,
            pool: Pool::new(Opts::from(opts)),
            database,
            checksum: Checksum::default(),
            charset_drift_intended: false,
            crc32c: Arc::default(),
            plain,
        })
    }

    /// The same pool, hashing with `checksum`.
    pub fn with_checksum(mut self, checksum: Checksum) -> Db {
        self.checksum = checksum;
        self
    }

    /// The same pool; character-set-only column differences are compared
    /// as converted text when `ddl` is [`DdlDefaults::Own`].
    pub fn with_ddl_defaults(mut self, ddl: DdlDefaults) -> Db {
        self.charset_drift_intended = ddl == DdlDefaults::Own;
        self
    }

    /// Whether this server has `CRC32C()` (asked once per `Db`).
    ///
    /// # Errors
    /// Connection failures; a server without the function answers
    /// ER_SP_DOES_NOT_EXIST / a syntax error, which is `Ok(false)`.
    pub async fn has_crc32c(&self) -> Result<bool, ValidateError> {
        self.crc32c
            .get_or_try_init(|| async {
                let mut c = self.conn().await?;
                Ok(c.query_drop("SELECT CRC32C('')").await.is_ok())
            })
            .await
            .copied()
    }

    pub fn label(&self) -> &'static str {
        self.side.as_str()
    }

    fn wrap(&self, sql: &str, e: mysql_async::Error) -> ValidateError {
        ValidateError::Query {
            side: self.side,
            sql: truncate(sql),
            source: e,
        }
    }

    pub async fn conn(&self) -> Result<mysql_async::Conn, ValidateError> {
        use std::sync::atomic::Ordering;
        let connect = |source| ValidateError::Connect {
            side: self.side,
            source,
        };
        if let Some((plain, refused)) = &self.plain {
            if refused.load(Ordering::Relaxed) {
                return get_conn(plain).await.map_err(connect);
            }
        }
        match (get_conn(&self.pool).await, &self.plain) {
            (Err(e), Some((plain, refused))) if super::tls::is_tls_not_offered(&e) => {
                refused.store(true, Ordering::Relaxed);
                get_conn(plain).await.map_err(connect)
            }
            (r, _) => r.map_err(connect),
        }
    }

    /// A prepared query (binary protocol: typed values).
    pub async fn rows(&self, sql: &str, params: Vec<Value>) -> Result<Vec<Row>, ValidateError> {
        let mut c = self.conn().await?;
        c.exec(sql, params_of(params))
            .await
            .map_err(|e| self.wrap(sql, e))
    }

    /// Like [`Db::rows`], also returning how long the query took.
    pub async fn timed_rows(
        &self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<(Vec<Row>, Duration), ValidateError> {
        let mut c = self.conn().await?;
        let t = Instant::now();
        let r = c
            .exec(sql, params_of(params))
            .await
            .map_err(|e| self.wrap(sql, e))?;
        Ok((r, t.elapsed()))
    }

    /// A plain text query (information_schema).
    pub async fn text_rows(&self, sql: &str) -> Result<Vec<Row>, ValidateError> {
        let mut c = self.conn().await?;
        c.query(sql).await.map_err(|e| self.wrap(sql, e))
    }

    pub async fn disconnect(self) {
        if let Some((plain, _)) = self.plain {
            let _ = plain.disconnect().await;
        }
        let _ = self.pool.disconnect().await;
    }
}

pub fn params_of(v: Vec<Value>) -> Params {
    if v.is_empty() {
        Params::Empty
    } else {
        Params::Positional(v)
    }
}

pub fn truncate(sql: &str) -> String {
    if sql.len() <= 300 {
        sql.to_string()
    } else {
        let mut end = 300;
        while !sql.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &sql[..end])
    }
}

/// Column `i` of a row as a string (information_schema rows).
pub fn text(row: &Row, i: usize) -> Option<String> {
    match row.as_ref(i)? {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => Some(super::keyset::value_text(other)),
    }
}

/// Column `i` as an unsigned integer (counts, checksums).
pub fn uint(row: &Row, i: usize) -> u64 {
    match row.as_ref(i) {
        Some(Value::Int(v)) => *v as u64,
        Some(Value::UInt(v)) => *v,
        Some(Value::Bytes(b)) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
        Some(Value::Double(d)) => *d as u64,
        _ => 0,
    }
}

/// Every value of a row (never panics on holes).
pub fn values(row: &Row) -> Vec<Value> {
    (0..row.len())
        .map(|i| row.as_ref(i).cloned().unwrap_or(Value::NULL))
        .collect()
}
