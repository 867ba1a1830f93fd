//! Change capture on the authoritative side, and the re-verification queue.
//!
//! With `[validation] change_capture = "binlog"` cutover reads the
//! authoritative server's binlog as a replica would (`reader.rs`) and queues
//! the primary key of every row any writer changed there — through cutover
//! or around it (cron jobs, other services, a DBA). After
//! `capture_settle_ms` each key is compared with the other side
//! (`verify.rs`); differences become events (repaired with `auto_fix`).
//! Deletes are included (the before image carries the key); no update-time
//! column is needed. The data path's dirty records (mirror mismatches,
//! unsafe statements) go through the same queue ([`DirtyKey`]).
//!
//! - The resume position is checkpointed in
//!   `<data_dir>/capture-checkpoint.json` (`position.rs`); a restart resumes
//!   there. If the server no longer has it (binlog purged: error 1236), that
//!   is logged and shown in `/status` (`fell_back_to_full`), reading starts
//!   at the current position and a full validation run is started.
//! - When the pattern moves authority (src_first → dst_first), the reader
//!   switches to the new authoritative server, starting at its current
//!   position; keys already queued are re-checked in the new direction.
//! - A lost stream is re-opened with back-off from the end of the last
//!   transaction read; queued keys are kept.
//!
//! See docs/VALIDATION.md ("Change capture").

mod keys;
pub mod position;
mod queue;
mod reader;
mod server;
pub mod status;
mod supervise;
mod verify;

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ValidationConfig;
use crate::pattern::Side;

use super::db::Db;
use super::{now_ms, utc_text, RunId, ValidateError, Validator};
use position::{Checkpoint, Position};
use queue::Queue;
use reader::{Live, Reader};
use server::{Server, Start};
use status::Counters;
pub use status::{CaptureStatus, Lag, ReaderState};

/// Why change capture cannot run. Server errors keep their MySQL code.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "change_capture = \"binlog\" needs the binary log on the {side} ({server}), but log_bin is OFF: \
         start it with --log-bin --binlog-format=ROW --server-id=N"
    )]
    BinlogOff { side: Side, server: String },
    #[error(
        "change_capture = \"binlog\" needs binlog_format=ROW on the {side} ({server}), it is {format}: \
         SET GLOBAL binlog_format = 'ROW' (and binlog_format=ROW in the server configuration)"
    )]
    NotRowFormat {
        side: Side,
        server: String,
        format: String,
    },
    #[error(
        "user `{user}` on the {side} ({server}) lacks {privilege}, needed to read the binlog: \
         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'…' ({source})"
    )]
    Privilege {
        side: Side,
        server: String,
        user: String,
        privilege: String,
        #[source]
        source: Box<mysql_async::Error>,
    },
    #[error("the {side} ({server}) cannot resume the binlog from the checkpoint: {message}")]
    Unresumable {
        side: Side,
        server: String,
        message: String,
    },
    #[error("the {side} ({server}) closed the binlog stream")]
    StreamEnded { side: Side, server: String },
    #[error("cannot decode a row event of `{table}`: {message}")]
    Decode { table: String, message: String },
    #[error("{what} on the {side} ({server}): {source}")]
    Server {
        side: Side,
        server: String,
        what: String,
        #[source]
        source: Box<mysql_async::Error>,
    },
    #[error(transparent)]
    Validate(#[from] ValidateError),
}

/// A data-path dirty record as the queue takes it: the table (unqualified)
/// and, when the statement inserted one AUTO_INCREMENT row, its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyKey {
    pub table: String,
    pub key: Option<u64>,
    pub reason: String,
}

/// What `/status` shows besides the counters.
#[derive(Debug, Default)]
struct Shared {
    state: Option<ReaderState>,
    side: Option<Side>,
    server: Option<String>,
    resume_by: Option<&'static str>,
    checkpoint: Option<Position>,
    lag: Lag,
    fell_back: Option<String>,
}

struct Tasks {
    stop: CancellationToken,
    handles: Vec<JoinHandle<()>>,
}

/// Change capture and the re-verification queue of one validator.
pub struct Capture {
    queue: Arc<Queue>,
    counters: Arc<Counters>,
    generation: Arc<AtomicU64>,
    live: Arc<Mutex<Live>>,
    shared: Arc<Mutex<Shared>>,
    verifier: Mutex<Option<Tasks>>,
    reader: Mutex<Option<Tasks>>,
    run_id: RunId,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("run_id", &self.run_id)
            .finish()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Capture {
    pub fn new(cfg: &ValidationConfig) -> Capture {
        Capture {
            queue: Arc::new(Queue::new(
                cfg.capture_queue_max_keys,
                Duration::from_millis(cfg.capture_settle_ms),
            )),
            counters: Arc::default(),
            generation: Arc::default(),
            live: Arc::default(),
            shared: Arc::default(),
            verifier: Mutex::new(None),
            reader: Mutex::new(None),
            run_id: RunId(now_ms().max(0) as u64),
        }
    }

    /// `validation_detail.change_capture`; also sets the capture gauges.
    pub fn status(&self) -> CaptureStatus {
        let s = lock(&self.shared);
        let c = &self.counters;
        let depth = self.queue.depth() as u64;
        metrics::gauge!("cutover_capture_queue_depth").set(depth as f64);
        CaptureStatus {
            state: s.state.unwrap_or(ReaderState::Off),
            side: s.side,
            server: s.server.clone(),
            resume_by: s.resume_by,
            position: s.side.map(|_| lock(&self.live).position.clone()),
            checkpoint: s.checkpoint.clone(),
            lag_seconds: s.lag.seconds,
            lag_events: s.lag.events,
            lag_bytes: s.lag.bytes,
            queue_depth: depth,
            oldest_pending_seconds: self.queue.oldest_wait().as_secs_f64(),
            keys_reverified_total: Counters::get(&c.keys_reverified),
            keys_reverified_per_second: c.rate(),
            differences_total: Counters::get(&c.differences),
            repaired_total: Counters::get(&c.repaired),
            changes_read_total: Counters::get(&c.changes_read),
            transactions_read_total: Counters::get(&c.transactions_read),
            unkeyed_changes_total: Counters::get(&c.unkeyed_changes),
            statement_events_total: Counters::get(&c.statement_events),
            dirty_records_total: Counters::get(&c.dirty_records),
            keys_skipped_total: Counters::get(&c.keys_skipped),
            fell_back_to_full: s.fell_back.clone(),
            last_error: lock(&c.last_error).clone(),
        }
    }

    pub(super) fn set_state(&self, st: ReaderState) {
        lock(&self.shared).state = Some(st);
    }
}

/// Start the verifier if it is not running (it serves dirty records even
/// without binlog capture).
fn ensure_verifier(v: &Validator) {
    let c = &v.inner.capture;
    let mut slot = lock(&c.verifier);
    if slot.is_some() {
        return;
    }
    let tx = CancellationToken::new();
    let h = tokio::spawn(verify::run(
        v.inner.clone(),
        c.queue.clone(),
        c.counters.clone(),
        c.generation.clone(),
        c.run_id,
        tx.clone(),
    ));
    *slot = Some(Tasks {
        stop: tx,
        handles: vec![h],
    });
}

/// Queue dirty records for a re-check (see [`Validator::enqueue_dirty`]).
pub(crate) fn enqueue_dirty(v: &Validator, records: Vec<DirtyKey>) {
    let c = &v.inner.capture;
    let delay = Duration::from_millis(v.inner.cfg.validation.recheck_delay_ms);
    let mut n = 0;
    for r in records {
        match r.key {
            Some(k) => {
                n += 1;
                c.queue
                    .push(r.table, vec![vec![Value::UInt(k)]], None, 0, delay);
            }
            None => tracing::info!(table = %r.table, reason = %r.reason,
                "a mirrored statement may have diverged this table; the next full validation re-checks it"),
        }
    }
    Counters::add(&c.counters.dirty_records, n);
    if n > 0 {
        ensure_verifier(v);
    }
}

pub(super) fn server_for(v: &Validator, side: Side) -> Result<(Server, Db), CaptureError> {
    let cfg = &v.inner.cfg;
    let bc = match side {
        Side::Source => &cfg.source,
        Side::Destination => &cfg.destination,
    };
    let pool = Db::open(side, bc)?;
    Ok((Server::new(side, bc, pool.database.clone()), pool))
}

/// The checkpoint of this side and server, if any.
fn checkpoint_for(v: &Validator, server: &Server) -> Option<Checkpoint> {
    let cp = position::load(&v.inner.data_dir)?;
    if cp.side == server.side && cp.server == server.address {
        Some(cp)
    } else {
        tracing::info!(checkpoint_side = %cp.side, checkpoint_server = %cp.server,
            "capture checkpoint belongs to another server; starting at the current position");
        None
    }
}

/// Open a stream at `start` and read it until it is positioned: a server
/// that lost the position sends its error 1236 after the stream's preamble
/// (fake ROTATE, FORMAT_DESCRIPTION, GTID list); a fake GTID_LIST (MariaDB
/// GTID start), a heartbeat or any other event means reading has begun.
async fn open_checked(
    reader: &mut Reader,
    start: &Start,
    server_id: u32,
) -> Result<mysql_async::BinlogStream, CaptureError> {
    const FDE: u8 = 15;
    const BINLOG_CHECKPOINT: u8 = 161;
    const GTID_LIST: u8 = 163;
    let mut stream = reader.server.open(start, server_id).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let ev = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Ok(stream), // quiet: positioned, nothing new yet
            Ok(Some(Ok(ev))) => ev,
            Ok(Some(Err(e))) => return Err(reader.stream_error(e)),
            Ok(None) => {
                return Err(CaptureError::StreamEnded {
                    side: reader.server.side,
                    server: reader.server.address.clone(),
                })
            }
        };
        reader.handle(&stream, &ev).await?;
        let h = ev.header();
        let preamble = match h.event_type_raw() {
            reader::ROTATE | FDE | BINLOG_CHECKPOINT => true,
            GTID_LIST => h.timestamp() != 0,
            _ => false,
        };
        if !preamble {
            return Ok(stream);
        }
    }
}

fn reader_for(v: &Validator, server: Server, pool: &Db, from: Position) -> Reader {
    let c = &v.inner.capture;
    let t = &v.inner.cfg.validation.tables;
    let tables = (!t.is_empty()).then(|| t.iter().cloned().collect::<HashSet<String>>());
    Reader::new(
        server,
        pool.clone(),
        tables,
        c.queue.clone(),
        c.counters.clone(),
        c.generation.clone(),
        c.live.clone(),
        from,
    )
}

/// Prepare a reader for the current authoritative side: check the server,
/// pick the start (`resume`, else the checkpoint, else the current
/// position), open the stream. An unresumable position falls back to the
/// current one and a full run ([`fall_back`]).
pub(super) async fn connect(
    v: &Validator,
    resume: Option<Position>,
) -> Result<(Reader, mysql_async::BinlogStream), CaptureError> {
    let c = &v.inner.capture;
    let side = v.inner.pattern.load().primary();
    let (mut server, pool) = server_for(v, side)?;
    server.check().await?;
    let from = match resume {
        Some(p) => Some(p),
        None => checkpoint_for(v, &server).map(|cp| cp.position),
    };
    let fresh = from.is_none();
    let from = match from {
        Some(p) => p,
        None => server.current(&pool).await?,
    };
    {
        let mut s = lock(&c.shared);
        s.side = Some(side);
        s.server = Some(server.address.clone());
    }
    let start = Start::from_position(&from, server.mariadb);
    let server_id = v.inner.cfg.validation.capture_server_id;
    let mut reader = reader_for(v, server.clone(), &pool, from.clone());
    let stream = match open_checked(&mut reader, &start, server_id).await {
        Ok(s) => s,
        Err(CaptureError::Unresumable { message, .. }) if !fresh => {
            let why = format!("binlog position {from} is gone from the {side} ({message}); reading from the current position and running a full validation instead");
            let (r, s) = fall_back(v, server, &pool, why).await?;
            reader = r;
            s
        }
        Err(e) => return Err(e),
    };
    lock(&c.shared).resume_by = Some(match start {
        Start::Gtid(_) => "gtid",
        Start::File(..) => "file",
    });
    if c.queue.read_pos().is_none() {
        c.queue.push_txn(from.clone(), Some(from), Vec::new());
    }
    save_checkpoint(v, &reader.server);
    Ok((reader, stream))
}

/// The checkpoint cannot be resumed (binlog purged past it): say so, read
/// from the current position, and start a full validation run (with
/// `auto_fix` when set) to cover what was missed.
async fn fall_back(
    v: &Validator,
    server: Server,
    pool: &Db,
    why: String,
) -> Result<(Reader, mysql_async::BinlogStream), CaptureError> {
    let c = &v.inner.capture;
    tracing::warn!("{why}");
    position::remove(&v.inner.data_dir);
    lock(&c.shared).fell_back = Some(why);
    c.queue.reset_stream(); // old transactions' positions are gone too
    let now = server.current(pool).await?;
    let start = Start::from_position(&now, server.mariadb);
    let server_id = v.inner.cfg.validation.capture_server_id;
    let mut reader = reader_for(v, server, pool, now.clone());
    let stream = open_checked(&mut reader, &start, server_id).await?;
    c.queue.push_txn(now.clone(), Some(now), Vec::new());
    match v.start_full(None, false, false).await {
        Ok(run) => tracing::info!(%run, "full validation started (capture fell back)"),
        Err(e) => tracing::warn!("full validation after the capture fallback: {e}"),
    }
    Ok((reader, stream))
}

/// Persist the queue's watermark for `server` (when it changed).
pub(super) fn save_checkpoint(v: &Validator, server: &Server) {
    let c = &v.inner.capture;
    let Some(wm) = c.queue.watermark() else {
        return;
    };
    if lock(&c.shared).checkpoint.as_ref() == Some(&wm) {
        return;
    }
    let cp = Checkpoint {
        side: server.side,
        server: server.address.clone(),
        position: wm.clone(),
        saved_at: utc_text(now_ms()),
    };
    match position::save(&v.inner.data_dir, &cp) {
        Ok(()) => lock(&c.shared).checkpoint = Some(wm),
        Err(e) => {
            tracing::warn!("capture checkpoint: {e}");
            c.counters.error(&e);
        }
    }
}

/// Start binlog capture (see [`Validator::start_change_capture`]).
pub(crate) async fn start(v: &Validator) -> Result<(), CaptureError> {
    let c = &v.inner.capture;
    if lock(&c.reader).is_some() {
        return Ok(());
    }
    c.set_state(ReaderState::Starting);
    ensure_verifier(v);
    let (reader, stream) = match connect(v, None).await {
        Ok(x) => x,
        Err(e) => {
            c.set_state(ReaderState::Stopped);
            c.counters.error(&e);
            return Err(e);
        }
    };
    c.set_state(ReaderState::Running);
    let tx = CancellationToken::new();
    let sup = tokio::spawn(supervise::supervise(v.clone(), reader, stream, tx.clone()));
    let up = tokio::spawn(supervise::upkeep(v.clone(), tx.clone()));
    *lock(&c.reader) = Some(Tasks {
        stop: tx,
        handles: vec![sup, up],
    });
    tracing::info!(side = ?lock(&c.shared).side, "change capture started");
    Ok(())
}

/// Stop binlog capture, saving the checkpoint (see [`Validator::stop_change_capture`]).
pub(crate) async fn stop(v: &Validator) {
    let c = &v.inner.capture;
    let tasks = lock(&c.reader).take();
    if let Some(t) = tasks {
        t.stop.cancel();
        for h in t.handles {
            let _ = h.await;
        }
    }
    c.set_state(ReaderState::Stopped);
}

/// Change capture (`[validation] change_capture = "binlog"`) and the
/// re-verification queue; see `capture/mod.rs` and docs/VALIDATION.md.
impl Validator {
    /// Start reading the authoritative side's binlog and re-verifying every
    /// primary key changed there. Resumes from
    /// `<data_dir>/capture-checkpoint.json` when it belongs to that server;
    /// if the server no longer has that position, reads from the current
    /// one and starts a full validation run (shown in `/status`). No-op when
    /// already running.
    ///
    /// # Errors
    /// [`CaptureError`]: log_bin off, binlog_format not ROW, a
    /// missing REPLICATION SLAVE / REPLICATION CLIENT privilege (each with
    /// the fix in its message), or the server unreachable.
    pub async fn start_change_capture(&self) -> Result<(), CaptureError> {
        start(self).await
    }

    /// Stop reading the binlog (the checkpoint is saved; queued keys stay
    /// queued and are still re-verified).
    pub async fn stop_change_capture(&self) {
        stop(self).await
    }

    /// Stop change capture and the re-verification queue's verifier, as a
    /// process exit does (the checkpoint is saved; keys still queued are
    /// re-read from the binlog after a restart, since the checkpoint never
    /// moves past a key that was not re-verified). Afterwards the last clone
    /// of this `Validator` dropped releases `data_dir` (its lock file).
    pub async fn shutdown(&self) {
        stop(self).await;
        let verifier = lock(&self.inner.capture.verifier).take();
        if let Some(t) = verifier {
            t.stop.cancel();
            for h in t.handles {
                let _ = h.await;
            }
        }
    }

    /// `validation_detail.change_capture` of `/status`: reader state, side,
    /// position and checkpoint, lag (seconds, events, bytes), queue depth,
    /// keys re-verified (total and per second), differences, fallback.
    pub fn capture_status(&self) -> CaptureStatus {
        self.inner.capture.status()
    }

    /// Queue the data path's dirty records for a re-check after
    /// `recheck_delay_ms` (the consumer of `DataPathStats::dirty` calls
    /// this). Records without a key are logged: full runs cover them.
    pub fn enqueue_dirty(&self, records: Vec<DirtyKey>) {
        enqueue_dirty(self, records)
    }
}
