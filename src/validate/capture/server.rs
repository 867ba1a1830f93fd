//! The authoritative server as change capture talks to it: prerequisites,
//! positions, and opening a binlog stream as a replica.
//!
//! Registration follows MariaDB's documented replica sequence (KB
//! "5-Replica Registration"): `SET @master_heartbeat_period` (ns),
//! `SET @master_binlog_checksum` (mysql_async), `SET
//! @mariadb_slave_capability = 4` (GTID-aware events), and for a GTID start
//! `SET @slave_connect_state = '<domain-server-seq,…>'`,
//! `@slave_gtid_strict_mode = 0`, `@slave_gtid_ignore_duplicates = 0`, then
//! COM_REGISTER_SLAVE and COM_BINLOG_DUMP (empty file name: the server
//! starts after the GTID state). Other servers (MySQL) start by file and
//! position (COM_BINLOG_DUMP with both).

use mysql_async::prelude::*;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn, Opts, OptsBuilder};

use super::position::{GtidState, Position};
use super::CaptureError;
use crate::config::BackendConfig;
use crate::pattern::Side;
use crate::validate::db::{text, Db};

/// Heartbeat from the server when the binlog is idle (nanoseconds).
const HEARTBEAT_NS: u64 = 1_000_000_000;

/// Where to start reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// MariaDB: after this GTID state.
    Gtid(GtidState),
    /// At this file and byte offset.
    File(String, u64),
}

impl Start {
    pub fn from_position(p: &Position, mariadb: bool) -> Start {
        if mariadb && !p.gtid.is_empty() {
            Start::Gtid(p.gtid.clone())
        } else {
            Start::File(p.file.clone(), p.pos)
        }
    }
}

/// The authoritative server as the reader sees it.
#[derive(Debug, Clone)]
pub struct Server {
    pub side: Side,
    /// `host:port`.
    pub address: String,
    pub user: String,
    pub opts: Opts,
    pub database: String,
    pub mariadb: bool,
    /// `@@binlog_checksum` is not NONE: the first (fake) ROTATE carries one.
    pub checksums: bool,
}

impl Server {
    pub fn new(side: Side, cfg: &BackendConfig, database: String) -> Server {
        let opts = OptsBuilder::default()
            .ip_or_hostname(cfg.host.clone())
            .tcp_port(cfg.port)
            .user(Some(cfg.user.clone()))
            .pass(Some(cfg.password.clone()))
            .prefer_socket(false);
        Server {
            side,
            address: cfg.address(),
            user: cfg.user.clone(),
            opts: Opts::from(opts),
            database,
            mariadb: false,
            checksums: true,
        }
    }

    fn wrap(&self, what: &str, e: mysql_async::Error) -> CaptureError {
        CaptureError::Server {
            side: self.side,
            server: self.address.clone(),
            what: what.to_string(),
            source: Box::new(e),
        }
    }

    /// Check what reading the binlog needs (log_bin, ROW format, privileges)
    /// and learn the server's flavour.
    ///
    /// # Errors
    /// [`CaptureError::BinlogOff`], [`CaptureError::NotRowFormat`],
    /// [`CaptureError::Privilege`] with the fix in the message; a failing
    /// connection or query.
    pub async fn check(&mut self) -> Result<(), CaptureError> {
        let mut c = Conn::new(self.opts.clone())
            .await
            .map_err(|e| self.wrap("connect", e))?;
        let row: Option<(String, i64, String, String, String)> = c
            .query_first(
                "SELECT VERSION(), @@GLOBAL.log_bin, @@GLOBAL.binlog_format, \
                 @@GLOBAL.binlog_row_image, @@GLOBAL.binlog_checksum",
            )
            .await
            .map_err(|e| self.wrap("read server variables", e))?;
        let (version, log_bin, format, image, checksum) = row.unwrap_or_default();
        self.mariadb = version.contains("MariaDB");
        self.checksums = !checksum.eq_ignore_ascii_case("NONE");
        if log_bin == 0 {
            return Err(CaptureError::BinlogOff {
                side: self.side,
                server: self.address.clone(),
            });
        }
        if !format.eq_ignore_ascii_case("ROW") {
            return Err(CaptureError::NotRowFormat {
                side: self.side,
                server: self.address.clone(),
                format,
            });
        }
        if image.eq_ignore_ascii_case("MINIMAL") {
            tracing::warn!(side = %self.side, "binlog_row_image=MINIMAL: keys are taken from the before image; FULL or NOBLOB is recommended");
        }
        if let Err(e) = c.query_drop("SHOW BINARY LOGS").await {
            return Err(self.privilege(e, "REPLICATION CLIENT (BINLOG MONITOR on MariaDB ≥ 10.5)"));
        }
        let _ = c.disconnect().await;
        Ok(())
    }

    /// ER_SPECIFIC_ACCESS_DENIED_ERROR (1227) / ER_ACCESS_DENIED_ERROR → a
    /// privilege error naming what to grant; anything else as it is.
    pub fn privilege(&self, e: mysql_async::Error, privilege: &str) -> CaptureError {
        match &e {
            mysql_async::Error::Server(s) if s.code == 1227 || s.code == 1045 || s.code == 1044 => {
                CaptureError::Privilege {
                    side: self.side,
                    server: self.address.clone(),
                    user: self.user.clone(),
                    privilege: privilege.to_string(),
                    source: Box::new(e),
                }
            }
            _ => self.wrap("check privileges", e),
        }
    }

    /// The position the server is at now.
    ///
    /// # Errors
    /// A failing query.
    pub async fn current(&self, db: &Db) -> Result<Position, CaptureError> {
        let rows = db
            .text_rows("SHOW MASTER STATUS")
            .await
            .map_err(CaptureError::Validate)?;
        let (file, pos) = rows
            .first()
            .map(|r| {
                (
                    text(r, 0).unwrap_or_default(),
                    text(r, 1).and_then(|p| p.parse().ok()).unwrap_or(4),
                )
            })
            .unwrap_or_default();
        let mut gtid = GtidState::default();
        if self.mariadb {
            let rows = db
                .text_rows("SELECT @@GLOBAL.gtid_binlog_pos")
                .await
                .map_err(CaptureError::Validate)?;
            let text = rows.first().and_then(|r| text(r, 0)).unwrap_or_default();
            gtid = GtidState::parse(&text).unwrap_or_default();
        }
        Ok(Position { file, pos, gtid })
    }

    /// Binlog files and their sizes (`SHOW BINARY LOGS`).
    ///
    /// # Errors
    /// A failing query.
    pub async fn files(&self, db: &Db) -> Result<Vec<(String, u64)>, CaptureError> {
        let rows = db
            .text_rows("SHOW BINARY LOGS")
            .await
            .map_err(CaptureError::Validate)?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((text(r, 0)?, text(r, 1)?.parse().ok()?)))
            .collect())
    }

    /// Connect, register as a replica and request the binlog from `start`.
    ///
    /// # Errors
    /// Connection, registration (a missing REPLICATION SLAVE privilege is
    /// [`CaptureError::Privilege`]) or dump request failures.
    pub async fn open(&self, start: &Start, server_id: u32) -> Result<BinlogStream, CaptureError> {
        let mut c = Conn::new(self.opts.clone())
            .await
            .map_err(|e| self.wrap("connect", e))?;
        let mut setup = vec![format!("SET @master_heartbeat_period = {HEARTBEAT_NS}")];
        if self.mariadb {
            setup.push("SET @mariadb_slave_capability = 4".into());
        }
        if let Start::Gtid(state) = start {
            setup.push(format!("SET @slave_connect_state = '{state}'"));
            setup.push("SET @slave_gtid_strict_mode = 0".into());
            setup.push("SET @slave_gtid_ignore_duplicates = 0".into());
        }
        for sql in &setup {
            c.query_drop(sql).await.map_err(|e| self.wrap(sql, e))?;
        }
        let req = BinlogStreamRequest::new(server_id);
        let stream = match start {
            Start::Gtid(_) => c.get_binlog_stream(req).await,
            Start::File(file, pos) => {
                c.get_binlog_stream(req.with_filename(file.as_bytes()).with_pos(*pos))
                    .await
            }
        };
        stream.map_err(|e| self.privilege(e, "REPLICATION SLAVE"))
    }
}
