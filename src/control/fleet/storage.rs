//! Validation in a fleet: it runs on the leader only, and what it must leave
//! for the next leader lives in etcd (docs/FLEET.md, "Where validation state
//! lives").
//!
//! - [`EtcdStorage`]: the validator's checkpoint (`validation/checkpoint`)
//!   and its event journal (`validation/events/<seq>`, one key per append of
//!   at most 256 KiB) in etcd; every write applies only while the leader key
//!   still carries the term it was opened with, so a deposed leader cannot
//!   write. The validator calls it synchronously (where it used to write its
//!   files), so it talks to etcd from a thread of its own.
//! - [`LeaderValidation`]: the [`ValidationService`] of a fleet member: the
//!   real validator while this member leads (opened on its journal when the
//!   leadership is won, stopped when it is lost), nothing otherwise (other
//!   members forward every validation request to the leader).

use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::keys::Keys;
use crate::config::{Config, EtcdCoordination};
use crate::control::validation::{
    BoxFuture, EventQuery, FullRequest, FullRun, IncrRequest, ValidationError, ValidationService,
};
use crate::pattern::PatternHandle;
use crate::stats::DirtyRecord;
use crate::validate::storage::ValidationStorage;
use crate::validate::{self, FixReport, Inconsistency, Validator};

/// Largest journal value (etcd's default request limit is 1.5 MiB).
const CHUNK: usize = 256 * 1024;
/// Journal keys per read.
const PAGE: i64 = 4;

enum Op {
    ReadCheckpoint,
    WriteCheckpoint(Option<Vec<u8>>),
    ReadJournal,
    Append(Vec<u8>),
}

type Job = (Op, mpsc::SyncSender<io::Result<Option<Vec<u8>>>>);

/// The validator's storage in etcd (see the module docs).
pub struct EtcdStorage {
    describe: String,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl EtcdStorage {
    /// Open for the leader of `term` (its own connection, on its own thread).
    pub fn open(cfg: &EtcdCoordination, term: i64) -> EtcdStorage {
        let (tx, rx) = mpsc::channel::<Job>();
        let worker = Worker {
            cfg: cfg.clone(),
            keys: Keys::new(&cfg.prefix),
            term,
            client: None,
            next_seq: 1,
        };
        let spawned = std::thread::Builder::new()
            .name("cutover-etcd-storage".into())
            .spawn(move || worker.run(rx));
        if let Err(e) = spawned {
            tracing::error!("cannot start the etcd storage thread: {e}");
        }
        EtcdStorage {
            describe: format!("etcd {}/validation", cfg.prefix),
            jobs: Mutex::new(tx),
        }
    }

    fn call(&self, op: Op) -> io::Result<Option<Vec<u8>>> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((op, tx))
            .map_err(|_| io::Error::other("etcd storage thread stopped"))?;
        rx.recv()
            .map_err(|_| io::Error::other("etcd storage thread stopped"))?
    }
}

impl ValidationStorage for EtcdStorage {
    fn describe(&self) -> String {
        self.describe.clone()
    }
    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        self.call(Op::ReadCheckpoint)
    }
    fn write_checkpoint(&self, doc: Option<&[u8]>) -> io::Result<()> {
        self.call(Op::WriteCheckpoint(doc.map(<[u8]>::to_vec)))
            .map(|_| ())
    }
    fn read_journal(&self) -> io::Result<Vec<u8>> {
        self.call(Op::ReadJournal).map(Option::unwrap_or_default)
    }
    fn append_journal(&self, lines: &[u8]) -> io::Result<()> {
        self.call(Op::Append(lines.to_vec())).map(|_| ())
    }
}

struct Worker {
    cfg: EtcdCoordination,
    keys: Keys,
    term: i64,
    client: Option<Client>,
    next_seq: u64,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("etcd storage runtime: {e}");
                return;
            }
        };
        while let Ok((op, reply)) = rx.recv() {
            let t = Duration::from_millis(self.cfg.request_timeout_ms * 4);
            let result = rt.block_on(async {
                match tokio::time::timeout(t, self.serve(op)).await {
                    Ok(r) => r,
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "etcd did not answer",
                    )),
                }
            });
            let _ = reply.send(result);
        }
    }

    async fn client(&mut self) -> io::Result<Client> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = Client::connect(&self.cfg.endpoints, None)
            .await
            .map_err(io::Error::other)?;
        self.client = Some(c.clone());
        Ok(c)
    }

    async fn serve(&mut self, op: Op) -> io::Result<Option<Vec<u8>>> {
        let mut c = self.client().await?;
        match op {
            Op::ReadCheckpoint => {
                let r = c
                    .get(self.keys.checkpoint(), None)
                    .await
                    .map_err(io::Error::other)?;
                Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
            }
            Op::WriteCheckpoint(doc) => {
                let key = self.keys.checkpoint();
                let op = match doc {
                    Some(d) => TxnOp::put(key, d, None),
                    None => TxnOp::delete(key, None),
                };
                self.guarded(&mut c, vec![op]).await.map(|_| None)
            }
            Op::ReadJournal => self.read_journal(&mut c).await.map(Some),
            Op::Append(lines) => {
                for chunk in chunks(&lines) {
                    let key = self.keys.event(self.next_seq);
                    let put = TxnOp::put(key.clone(), chunk.to_vec(), None);
                    self.guarded_new(&mut c, key, put).await?;
                    self.next_seq += 1;
                }
                Ok(None)
            }
        }
    }

    async fn read_journal(&mut self, c: &mut Client) -> io::Result<Vec<u8>> {
        let prefix = self.keys.events();
        let end = prefix_end(&prefix);
        let mut from = prefix.clone().into_bytes();
        let mut out = Vec::new();
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            let r = c
                .get(from.clone(), Some(opts))
                .await
                .map_err(io::Error::other)?;
            for kv in r.kvs() {
                out.extend_from_slice(kv.value());
                if let Some(seq) = kv
                    .key_str()
                    .ok()
                    .and_then(|k| k.strip_prefix(&prefix))
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    self.next_seq = self.next_seq.max(seq + 1);
                }
                from = kv.key().to_vec();
                from.push(0);
            }
            if !r.more() {
                return Ok(out);
            }
        }
    }

    fn leader_guard(&self) -> Compare {
        Compare::create_revision(self.keys.leader(), CompareOp::Equal, self.term)
    }

    async fn guarded(&self, c: &mut Client, ops: Vec<TxnOp>) -> io::Result<()> {
        let r = c
            .txn(Txn::new().when([self.leader_guard()]).and_then(ops))
            .await
            .map_err(io::Error::other)?;
        if r.succeeded() {
            Ok(())
        } else {
            Err(io::Error::other(
                "this member is no longer the fleet's leader; the validator's writes are refused",
            ))
        }
    }

    /// Append one journal key, never overwriting one.
    async fn guarded_new(&self, c: &mut Client, key: String, put: TxnOp) -> io::Result<()> {
        let r = c
            .txn(
                Txn::new()
                    .when([
                        self.leader_guard(),
                        Compare::create_revision(key, CompareOp::Equal, 0),
                    ])
                    .and_then([put]),
            )
            .await
            .map_err(io::Error::other)?;
        if r.succeeded() {
            Ok(())
        } else {
            Err(io::Error::other(
                "journal append refused: this member is no longer the fleet's leader",
            ))
        }
    }
}

/// Split at line ends into pieces of at most [`CHUNK`] bytes (a longer line stays whole).
fn chunks(lines: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < lines.len() {
        let mut end = (start + CHUNK).min(lines.len());
        if end < lines.len() {
            end = match lines[start..end].iter().rposition(|b| *b == b'\n') {
                Some(p) => start + p + 1,
                None => lines[end..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(lines.len(), |p| end + p + 1),
            };
        }
        out.push(&lines[start..end]);
        start = end;
    }
    out
}

/// The end of the key range of `prefix` (its last byte + 1).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The validation seam of a fleet member (see the module docs).
pub struct LeaderValidation {
    cfg: Arc<Config>,
    etcd: EtcdCoordination,
    pattern: PatternHandle,
    inner: RwLock<Option<Validator>>,
}

fn not_leader() -> ValidationError {
    ValidationError::Backend(
        "this member is not the fleet's leader (any more); validation runs on the leader — retry"
            .into(),
    )
}

impl LeaderValidation {
    pub fn new(cfg: Arc<Config>, etcd: EtcdCoordination, pattern: PatternHandle) -> Self {
        LeaderValidation {
            cfg,
            etcd,
            pattern,
            inner: RwLock::new(None),
        }
    }

    fn current(&self) -> Option<Validator> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// This member leads (term `term`): open the validator on the fleet's journal.
    pub async fn activate(&self, term: i64) {
        self.deactivate().await;
        let (cfg, etcd, pattern) = (
            Arc::clone(&self.cfg),
            self.etcd.clone(),
            self.pattern.clone(),
        );
        let opened = tokio::task::spawn_blocking(move || {
            let storage = Arc::new(EtcdStorage::open(&etcd, term));
            Validator::with_storage(cfg, pattern, storage)
        })
        .await;
        match opened {
            Ok(Ok(v)) => {
                tracing::info!(
                    open = v.open_count(),
                    "validator opened on the fleet's event journal"
                );
                *self.inner.write().unwrap_or_else(|e| e.into_inner()) = Some(v);
            }
            Ok(Err(e)) => tracing::error!("cannot open the validator on the fleet's journal: {e}"),
            Err(e) => tracing::error!("opening the validator: {e}"),
        }
    }

    /// This member no longer leads: stop its runs (checkpoints stay) and close.
    pub async fn deactivate(&self) {
        let v = self.inner.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(v) = v {
            v.stop_full_run().await;
            let _ = validate::Validator::stop_incremental(&v).await;
        }
    }
}

impl ValidationService for LeaderValidation {
    fn start_full(&self, req: FullRequest) -> BoxFuture<'_, Result<FullRun, ValidationError>> {
        Box::pin(async move {
            let v = self.current().ok_or_else(not_leader)?;
            ValidationService::start_full(&v, req).await
        })
    }
    fn stop_full(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(v) = self.current() {
                v.stop_full_run().await;
            }
        })
    }
    fn start_incremental(&self, req: IncrRequest) -> BoxFuture<'_, Result<u64, ValidationError>> {
        Box::pin(async move {
            let v = self.current().ok_or_else(not_leader)?;
            ValidationService::start_incremental(&v, req).await
        })
    }
    fn stop_incremental(&self) -> BoxFuture<'_, Result<(), ValidationError>> {
        Box::pin(async move {
            let v = self.current().ok_or_else(not_leader)?;
            ValidationService::stop_incremental(&v).await
        })
    }
    fn fix_open(&self) -> BoxFuture<'_, Result<FixReport, ValidationError>> {
        Box::pin(async move {
            let v = self.current().ok_or_else(not_leader)?;
            ValidationService::fix_open(&v).await
        })
    }
    fn inconsistencies(&self, q: EventQuery) -> Result<Vec<Inconsistency>, ValidationError> {
        let v = self.current().ok_or_else(not_leader)?;
        ValidationService::inconsistencies(&v, q)
    }
    fn open_inconsistencies(&self) -> u64 {
        self.current().map_or(0, |v| v.open_count())
    }
    fn detail(&self) -> Option<validate::ValidationStatus> {
        self.current().map(|v| v.status())
    }
    fn recheck_dirty(&self, records: Vec<DirtyRecord>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(v) = self.current() {
                ValidationService::recheck_dirty(&v, records).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_chunks_end_at_line_ends() {
        let line = vec![b'x'; 1000];
        let mut text = Vec::new();
        for _ in 0..600 {
            text.extend_from_slice(&line);
            text.push(b'\n');
        }
        let parts = chunks(&text);
        assert!(parts.len() >= 3, "{}", parts.len());
        assert!(parts.iter().all(|p| p.len() <= CHUNK && p.ends_with(b"\n")));
        assert_eq!(parts.concat(), text);
        assert_eq!(prefix_end("/p/events/"), b"/p/events0".to_vec());
    }
}
