//! The binlog reader: streams the authoritative server's binlog (opened by
//! `server.rs`) and queues the primary key of every changed row.
//!
//! Transactions: a MariaDB GTID event (or `BEGIN`) opens one, XID or
//! `COMMIT` (or, for a GTID marked standalone, the single DDL event that
//! follows) ends it; its keys are queued with the position it started at,
//! which is where a restart resumes until all of them are re-verified.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::binlog::events::{
    EventData, QueryEvent, RotateEvent, RowsEventData, TableMapEvent,
};
use mysql_async::BinlogStream;
use tokio_util::sync::CancellationToken;

use super::keys::{self, TableKeys};
use super::position::Position;
use super::queue::Queue;
use super::server::Server;
use super::status::Counters;
use super::CaptureError;
use crate::pattern::Side;
use crate::validate::db::Db;
use crate::validate::keyset::Key;

/// Keys buffered per transaction before a partial flush (a huge transaction
/// is queued in pieces; it stays the resume point until all are checked).
const TXN_FLUSH: usize = 10_000;

pub(super) const ROTATE: u8 = 4;
const QUERY: u8 = 2;
const XID: u8 = 16;
const HEARTBEAT: u8 = 27;
/// MariaDB GTID_EVENT: seq_no (8), domain_id (4), flags (1), …
const MARIADB_GTID: u8 = 162;
/// MariaDB GTID flag: the transaction is the single event that follows.
const FL_STANDALONE: u8 = 1;

/// Why a reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Stopped,
    /// The pattern moved authority to the other side.
    AuthorityMoved,
}

/// A transaction being read.
#[derive(Debug)]
struct Txn {
    resume: Position,
    gtid: Option<(u32, u32, u64)>,
    standalone: bool,
    keys: Vec<(String, Key)>,
}

/// Live reader state others read (`/status`, the lag probe).
#[derive(Debug, Default)]
pub struct Live {
    /// End of the last event read.
    pub position: Position,
    /// Commit time (Unix seconds) of the last event read.
    pub last_event_ts: u32,
    /// A heartbeat arrived after the last event: the reader is at the end.
    pub idle: bool,
}

/// Streams one server's binlog into the queue.
pub struct Reader {
    pub server: Server,
    pub pool: Db,
    pub tables: Option<HashSet<String>>,
    pub queue: Arc<Queue>,
    pub counters: Arc<Counters>,
    /// Bumped on DDL: the verifier re-reads table definitions.
    pub generation: Arc<AtomicU64>,
    pub live: Arc<Mutex<Live>>,
    keys: Option<HashMap<String, TableKeys>>,
    warned: HashSet<String>,
    pos: Position,
    txn: Option<Txn>,
}

impl Reader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: Server,
        pool: Db,
        tables: Option<HashSet<String>>,
        queue: Arc<Queue>,
        counters: Arc<Counters>,
        generation: Arc<AtomicU64>,
        live: Arc<Mutex<Live>>,
        from: Position,
    ) -> Reader {
        Reader {
            server,
            pool,
            tables,
            queue,
            counters,
            generation,
            live,
            keys: None,
            warned: HashSet::new(),
            pos: from,
            txn: None,
        }
    }

    /// Read until stopped, the authority moves, or the stream fails.
    ///
    /// # Errors
    /// Stream errors (1236 when the start position is gone is
    /// [`CaptureError::Unresumable`]); failing key lookups.
    pub async fn read(
        &mut self,
        mut stream: BinlogStream,
        stop: &CancellationToken,
        authority: impl Fn() -> Side,
    ) -> Result<Exit, CaptureError> {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => Err(Exit::Stopped),
                _ = tick.tick() => {
                    if authority() == self.server.side {
                        continue;
                    }
                    Err(Exit::AuthorityMoved)
                }
                ev = stream.next() => Ok(ev),
            };
            let ev = match ev {
                Ok(ev) => ev,
                Err(exit) => {
                    // release the server's dump thread (and its binlog file) now
                    let _ = stream.close().await;
                    return Ok(exit);
                }
            };
            let ev = match ev {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => return Err(self.stream_error(e)),
                None => {
                    return Err(CaptureError::StreamEnded {
                        side: self.server.side,
                        server: self.server.address.clone(),
                    })
                }
            };
            self.handle(&stream, &ev).await?;
        }
    }

    pub fn stream_error(&self, e: mysql_async::Error) -> CaptureError {
        match &e {
            // ER_MASTER_FATAL_ERROR_READING_BINLOG: purged, or not in this server's binlog.
            mysql_async::Error::Server(s) if s.code == 1236 => CaptureError::Unresumable {
                side: self.server.side,
                server: self.server.address.clone(),
                message: s.message.clone(),
            },
            _ => self.server.privilege(e, "REPLICATION SLAVE"),
        }
    }

    pub async fn handle(
        &mut self,
        stream: &BinlogStream,
        ev: &mysql_async::binlog::events::Event,
    ) -> Result<(), CaptureError> {
        let h = ev.header();
        let ty = h.event_type_raw();
        let end = u64::from(h.log_pos());
        match ty {
            ROTATE => {
                if let Ok(r) = ev.read_event::<RotateEvent<'_>>() {
                    let mut name = r.name_raw().to_vec();
                    // The first (fake) ROTATE precedes the format description, so
                    // its CRC32 was not stripped.
                    if end == 0 && self.server.checksums && name.len() > 4 {
                        name.truncate(name.len() - 4);
                    }
                    self.pos.file = String::from_utf8_lossy(&name).into_owned();
                    self.pos.pos = r.position();
                    self.idle_position();
                }
                return Ok(());
            }
            MARIADB_GTID => {
                let d = ev.data();
                if d.len() >= 13 {
                    let seq = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
                    let domain = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
                    let standalone = d[12] & FL_STANDALONE != 0;
                    self.begin(Some((domain, h.server_id(), seq)), standalone)
                        .await;
                }
            }
            QUERY => self.query(ev, end).await?,
            XID => {
                self.advance(end);
                self.commit().await;
            }
            HEARTBEAT => {
                let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                live.idle = true;
                drop(live);
                self.idle_position();
                return Ok(());
            }
            _ => {
                if let Ok(Some(EventData::RowsEvent(rows))) = ev.read_data() {
                    if let Some(tme) = stream.get_tme(rows.table_id()) {
                        self.rows(&rows, tme).await?;
                    }
                }
            }
        }
        self.advance(end);
        if h.timestamp() > 0 {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.last_event_ts = h.timestamp();
            live.idle = false;
        }
        Ok(())
    }

    fn advance(&mut self, end: u64) {
        if end > 0 {
            self.pos.pos = end;
            self.live.lock().unwrap_or_else(|p| p.into_inner()).position = self.pos.clone();
        }
    }

    /// With no transaction open, the current position is a safe resume point.
    fn idle_position(&mut self) {
        if self.txn.is_none() {
            self.queue
                .push_txn(self.pos.clone(), Some(self.pos.clone()), Vec::new());
            self.live.lock().unwrap_or_else(|p| p.into_inner()).position = self.pos.clone();
        }
    }

    async fn begin(&mut self, gtid: Option<(u32, u32, u64)>, standalone: bool) {
        if self.txn.is_some() {
            self.commit().await; // an unterminated transaction (should not happen)
        }
        self.txn = Some(Txn {
            resume: self.pos.clone(),
            gtid,
            standalone,
            keys: Vec::new(),
        });
    }

    async fn commit(&mut self) {
        let Some(txn) = self.txn.take() else {
            return;
        };
        if let Some((d, s, n)) = txn.gtid {
            self.pos.gtid.set(d, s, n);
        }
        Counters::add(&self.counters.transactions_read, 1);
        self.queue.wait_room().await;
        self.queue
            .push_txn(txn.resume, Some(self.pos.clone()), txn.keys);
        self.live.lock().unwrap_or_else(|p| p.into_inner()).position = self.pos.clone();
    }

    async fn query(
        &mut self,
        ev: &mysql_async::binlog::events::Event,
        end: u64,
    ) -> Result<(), CaptureError> {
        let Ok(q) = ev.read_event::<QueryEvent<'_>>() else {
            return Ok(());
        };
        let sql = q.query();
        let word = sql
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match word.as_str() {
            "BEGIN" => self.begin(None, false).await,
            "COMMIT" => {
                self.advance(end);
                self.commit().await;
            }
            "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" => {
                // Statement format (a session changed binlog_format): the rows are unknown.
                Counters::add(&self.counters.statement_events, 1);
                if self.warned.insert(format!("statement:{}", q.schema())) {
                    tracing::warn!(schema = %q.schema(), "statement-format change in the binlog: its rows cannot be re-verified (binlog_format must stay ROW)");
                }
            }
            _ => {
                // DDL (or other statements): table definitions may have changed.
                self.keys = None;
                self.generation.fetch_add(1, Ordering::Relaxed);
                if self.txn.as_ref().is_none_or(|t| t.standalone) {
                    self.advance(end);
                    self.commit().await;
                }
            }
        }
        Ok(())
    }

    async fn rows(
        &mut self,
        rows: &RowsEventData<'_>,
        tme: &TableMapEvent<'_>,
    ) -> Result<(), CaptureError> {
        if tme.database_name() != self.server.database.as_str() {
            return Ok(());
        }
        let table = tme.table_name().into_owned();
        if self.tables.as_ref().is_some_and(|t| !t.contains(&table)) {
            return Ok(());
        }
        let columns = tme.columns_count() as usize;
        let layout = match self.layout(&table, columns).await? {
            Some(l) => l,
            None => {
                let n = rows.rows(tme).count() as u64;
                Counters::add(&self.counters.unkeyed_changes, n);
                Counters::add(&self.counters.changes_read, n);
                return Ok(());
            }
        };
        let before: Option<Vec<bool>> = rows
            .columns_before_image()
            .map(|b| (0..columns).map(|i| b.get(i).is_some_and(|x| *x)).collect());
        let after: Option<Vec<bool>> = rows
            .columns_after_image()
            .map(|b| (0..columns).map(|i| b.get(i).is_some_and(|x| *x)).collect());
        let mut found = Vec::new();
        let mut unkeyed = 0u64;
        let mut n = 0u64;
        for row in rows.rows(tme) {
            let (b, a) = row.map_err(|e| CaptureError::Decode {
                table: table.clone(),
                message: e.to_string(),
            })?;
            n += 1;
            for (img, bits) in [(b, &before), (a, &after)] {
                let (Some(img), Some(bits)) = (img, bits) else {
                    continue;
                };
                match layout.key(bits, &img) {
                    Some(k) => found.push(k),
                    None => unkeyed += 1,
                }
            }
        }
        Counters::add(&self.counters.changes_read, n);
        Counters::add(&self.counters.unkeyed_changes, unkeyed);
        metrics::counter!("cutover_capture_changes_total").increment(n);
        if self.txn.is_none() {
            self.begin(None, true).await;
        }
        if let Some(txn) = self.txn.as_mut() {
            txn.keys
                .extend(found.into_iter().map(|k| (table.clone(), k)));
            if txn.keys.len() >= TXN_FLUSH {
                let keys = std::mem::take(&mut txn.keys);
                let resume = txn.resume.clone();
                self.queue.wait_room().await;
                self.queue.push_txn(resume, None, keys);
            }
        }
        Ok(())
    }

    /// The key layout of `table` (re-read once when the TABLE_MAP's column
    /// count disagrees); `None` when its key cannot be taken.
    async fn layout(
        &mut self,
        table: &str,
        columns: usize,
    ) -> Result<Option<TableKeys>, CaptureError> {
        for attempt in 0..2 {
            if self.keys.is_none() || attempt == 1 {
                self.keys = Some(
                    keys::load(&self.pool)
                        .await
                        .map_err(CaptureError::Validate)?,
                );
            }
            let got = self.keys.as_ref().and_then(|k| k.get(table)).cloned();
            match got {
                Some(l) if l.columns == columns => {
                    if l.conv.contains(&keys::Conv::Unsupported)
                        && self.warned.insert(format!("charset:{table}"))
                    {
                        tracing::warn!(%table, "primary key in a character set capture cannot match (use utf8mb4/latin1/ascii/binary); its changes are re-checked by full runs only");
                    }
                    return Ok(Some(l));
                }
                Some(_) if attempt == 0 => continue,
                Some(l) => {
                    if self.warned.insert(format!("columns:{table}")) {
                        tracing::warn!(%table, binlog = columns, schema = l.columns, "table definition differs from the binlog's; changes counted as unkeyed");
                    }
                    return Ok(None);
                }
                None => {
                    if self.warned.insert(format!("nopk:{table}")) {
                        tracing::warn!(%table, "changed rows of a table without a primary key: only full runs compare it");
                    }
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }
}
