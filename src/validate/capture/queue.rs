//! The re-verification queue: rows that may now differ between the sides,
//! each re-checked once its settle delay has passed.
//!
//! Sources: every primary key the binlog reader sees changed on the
//! authoritative side (owned by the transaction that changed it), the data
//! path's dirty records (mirror mismatches, unsafe statements), and rows that
//! still differed on a first re-check (re-checked once more before they are
//! reported).
//!
//! - **De-duplication**: one entry per (table, key). A key changed again
//!   before its re-check is re-settled (but never postponed beyond
//!   `MAX_WAIT_FACTOR` × settle after it was first queued, so a hot row is
//!   still checked); one changed while its re-check runs is checked again.
//! - **Watermark**: each binlog transaction with keys is tracked until all
//!   its keys are re-checked; the resume position is the start of the oldest
//!   such transaction (or, with none, the end of the last transaction read).
//!   A restart re-reads from there: nothing re-checked is lost, a few keys
//!   are checked twice.
//! - **Bounded**: at most `capture_queue_max_keys` entries; the reader waits
//!   for room (back-pressure), nothing is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::position::Position;
use crate::validate::diff::KEY_BATCH;
use crate::validate::keyset::{key_id, Key};

/// A changed key is re-checked at the latest this many settle delays after it
/// was first queued, however often it changes meanwhile.
const MAX_WAIT_FACTOR: u32 = 10;

type Id = (String, String);

#[derive(Debug)]
struct Entry {
    key: Key,
    due: Instant,
    first_seen: Instant,
    /// Re-checks done that found a difference.
    attempts: u8,
    /// The binlog transaction whose re-verification this entry holds back.
    owner: Option<u64>,
    inflight: bool,
    /// Queued again while its re-check was running: (attempts, delay) of
    /// the check to do after it.
    touched: Option<(u8, Duration)>,
    seq: u64,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Id, Entry>,
    due: BTreeSet<(Instant, u64, Id)>,
    /// Open transactions: id → (resume position, keys not yet re-checked).
    txns: BTreeMap<u64, (Position, u64)>,
    next_seq: u64,
    next_txn: u64,
    /// End of the last transaction read completely.
    read_pos: Option<Position>,
}

/// One table's keys taken for re-checking.
#[derive(Debug)]
pub struct Batch {
    pub table: String,
    /// (key, re-checks that already found it different).
    pub keys: Vec<(Key, u8)>,
    /// The oldest transaction among the keys (owner of follow-up re-checks).
    pub owner: Option<u64>,
}

/// How a re-check of one key ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Checked (equal, reported or repaired): leaves the queue.
    Checked,
    /// Not checked (a backend failed): try again after this delay.
    Retry(Duration),
}

/// The queue (shared by the reader, the data path's dirty-record consumer
/// and the verifier).
#[derive(Debug)]
pub struct Queue {
    state: Mutex<State>,
    work: Notify,
    room: Notify,
    cap: usize,
    settle: Duration,
}

impl Queue {
    pub fn new(cap: usize, settle: Duration) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            work: Notify::new(),
            room: Notify::new(),
            cap,
            settle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue the keys one binlog transaction changed. `resume` is where
    /// reading must restart to see this transaction again; `end`, when the
    /// transaction is complete, the position after it.
    pub fn push_txn(&self, resume: Position, end: Option<Position>, keys: Vec<(String, Key)>) {
        let mut s = self.lock();
        let txn = (!keys.is_empty()).then(|| {
            s.next_txn += 1;
            let t = s.next_txn;
            s.txns.insert(t, (resume, 0));
            t
        });
        for (table, key) in keys {
            s.add(table, key, txn, 0, self.settle, true);
        }
        s.drop_finished_txns();
        if let Some(end) = end {
            s.read_pos = Some(end);
        }
        drop(s);
        self.work.notify_one();
    }

    /// Queue keys that belong to no binlog transaction (dirty records,
    /// follow-up re-checks). `attempts` > 0 marks a key that already differed.
    pub fn push(
        &self,
        table: String,
        keys: Vec<Key>,
        owner: Option<u64>,
        attempts: u8,
        delay: Duration,
    ) {
        let mut s = self.lock();
        let owner = owner.filter(|o| s.txns.contains_key(o));
        for key in keys {
            s.add(table.clone(), key, owner, attempts, delay, false);
        }
        drop(s);
        self.work.notify_one();
    }

    /// The position after the last complete transaction read (reconnects
    /// continue from here; the queue keeps what is pending).
    pub fn read_pos(&self) -> Option<Position> {
        self.lock().read_pos.clone()
    }

    /// Where a restarted reader must resume (see the module docs).
    pub fn watermark(&self) -> Option<Position> {
        let s = self.lock();
        s.txns
            .values()
            .next()
            .map(|(p, _)| p.clone())
            .or_else(|| s.read_pos.clone())
    }

    /// Forget binlog transactions and the read position (the authority
    /// moved to the other server: its binlog is another stream). Pending
    /// keys stay queued.
    pub fn reset_stream(&self) {
        let mut s = self.lock();
        s.txns.clear();
        s.read_pos = None;
        for e in s.entries.values_mut() {
            e.owner = None;
        }
    }

    /// Wait until the queue has room (back-pressure for the reader).
    pub async fn wait_room(&self) {
        loop {
            let notified = self.room.notified();
            if self.lock().entries.len() < self.cap {
                return;
            }
            // (a short timeout also covers a wake-up that raced the check)
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Wait until something may be due (a push, or the earliest due time).
    pub async fn wait_work(&self) {
        let notified = self.work.notified();
        let next = self.lock().due.iter().next().map(|(d, _, _)| *d);
        let sleep = next.map_or(Duration::from_secs(1), |d| {
            d.saturating_duration_since(Instant::now())
        });
        if sleep.is_zero() {
            return;
        }
        let _ = tokio::time::timeout(sleep.min(Duration::from_secs(1)), notified).await;
    }

    /// Take up to `max` due keys, grouped per table in batches of at most
    /// [`KEY_BATCH`]. They stay queued (in flight) until [`Queue::finish`].
    pub fn take_due(&self, max: usize) -> Vec<Batch> {
        let now = Instant::now();
        let mut s = self.lock();
        let mut by_table: BTreeMap<String, Vec<(Key, u8, Option<u64>)>> = BTreeMap::new();
        let mut n = 0;
        while n < max {
            let Some(first) = s.due.first().cloned() else {
                break;
            };
            if first.0 > now {
                break;
            }
            s.due.remove(&first);
            let id = first.2;
            if let Some(e) = s.entries.get_mut(&id) {
                e.inflight = true;
                by_table.entry(id.0.clone()).or_default().push((
                    e.key.clone(),
                    e.attempts,
                    e.owner,
                ));
                n += 1;
            }
        }
        let mut out = Vec::new();
        for (table, keys) in by_table {
            for chunk in keys.chunks(KEY_BATCH) {
                out.push(Batch {
                    table: table.clone(),
                    keys: chunk.iter().map(|(k, a, _)| (k.clone(), *a)).collect(),
                    owner: chunk.iter().filter_map(|(_, _, o)| *o).min(),
                });
            }
        }
        out
    }

    /// A taken key's re-check ended.
    pub fn finish(&self, table: &str, key: &Key, done: Done) {
        let id = (table.to_string(), key_id(key));
        let mut s = self.lock();
        let Some(e) = s.entries.get_mut(&id) else {
            return;
        };
        e.inflight = false;
        let resched = match done {
            Done::Retry(delay) => Some(Instant::now() + delay),
            Done::Checked if e.touched.is_some() => {
                let (attempts, delay) = e.touched.take().unwrap_or_default();
                e.attempts = attempts;
                e.first_seen = Instant::now();
                Some(Instant::now() + delay)
            }
            Done::Checked => None,
        };
        match resched {
            Some(due) => {
                e.due = due;
                let seq = e.seq;
                s.due.insert((due, seq, id));
            }
            None => {
                let owner = s.entries.remove(&id).and_then(|e| e.owner);
                s.release(owner);
                s.drop_finished_txns();
                drop(s);
                self.room.notify_waiters();
            }
        }
    }

    /// Keys queued (including those being re-checked).
    pub fn depth(&self) -> usize {
        self.lock().entries.len()
    }

    /// Age of the oldest entry still waiting (approximate: by due time).
    pub fn oldest_wait(&self) -> Duration {
        let s = self.lock();
        s.due
            .iter()
            .next()
            .map(|(due, _, _)| {
                let first = due.checked_sub(self.settle).unwrap_or(*due);
                Instant::now().saturating_duration_since(first)
            })
            .unwrap_or_default()
    }
}

impl State {
    /// Queue a key. `fresh`: a new change by transaction `owner` (takes over
    /// the entry, checked afresh); otherwise a dirty record or follow-up
    /// (`owner` only holds the watermark of a new entry).
    fn add(
        &mut self,
        table: String,
        key: Key,
        owner: Option<u64>,
        attempts: u8,
        delay: Duration,
        fresh: bool,
    ) {
        let now = Instant::now();
        let id = (table, key_id(&key));
        if let Some(e) = self.entries.get_mut(&id) {
            let (old_owner, old_due, seq) = (e.owner, e.due, e.seq);
            // A change is checked afresh; a follow-up keeps its count.
            let attempts = if fresh { 0 } else { e.attempts.max(attempts) };
            let owner = if fresh { owner } else { old_owner };
            e.owner = owner;
            let mut moved = false;
            if e.inflight {
                let prev = e.touched.map_or(attempts, |(a, _)| a.min(attempts));
                e.touched = Some((prev, delay));
            } else {
                e.attempts = attempts;
                let latest = e.first_seen + delay.max(Duration::from_millis(1)) * MAX_WAIT_FACTOR;
                let due = (now + delay).min(latest).max(old_due.min(now + delay));
                if due != old_due {
                    e.due = due;
                    moved = true;
                }
            }
            if moved {
                self.due.remove(&(old_due, seq, id.clone()));
                self.due.insert((self.entries[&id].due, seq, id.clone()));
            }
            if owner != old_owner {
                self.release(old_owner);
                self.hold(owner);
            }
            return;
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let due = now + delay;
        self.due.insert((due, seq, id.clone()));
        self.entries.insert(
            id,
            Entry {
                key,
                due,
                first_seen: now,
                attempts,
                owner,
                inflight: false,
                touched: None,
                seq,
            },
        );
        self.hold(owner);
    }

    fn hold(&mut self, owner: Option<u64>) {
        if let Some(t) = owner.and_then(|o| self.txns.get_mut(&o)) {
            t.1 += 1;
        }
    }

    fn release(&mut self, owner: Option<u64>) {
        if let Some(t) = owner.and_then(|o| self.txns.get_mut(&o)) {
            t.1 = t.1.saturating_sub(1);
        }
    }

    fn drop_finished_txns(&mut self) {
        self.txns.retain(|_, (_, remaining)| *remaining > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::Value;

    fn pos(p: u64) -> Position {
        Position {
            file: "b.1".into(),
            pos: p,
            gtid: Default::default(),
        }
    }

    fn k(i: i64) -> Key {
        vec![Value::Int(i)]
    }

    #[test]
    fn watermark_follows_the_oldest_unchecked_transaction() {
        let q = Queue::new(1000, Duration::ZERO);
        q.push_txn(
            pos(4),
            Some(pos(10)),
            vec![("t".into(), k(1)), ("t".into(), k(2))],
        );
        q.push_txn(pos(10), Some(pos(20)), vec![("t".into(), k(3))]);
        q.push_txn(pos(20), Some(pos(30)), vec![]); // another table's txn: no keys
        assert_eq!(q.watermark(), Some(pos(4)));
        assert_eq!(q.depth(), 3);
        let batches = q.take_due(100);
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].keys.len(), 3);
        q.finish("t", &k(1), Done::Checked);
        assert_eq!(q.watermark(), Some(pos(4)), "key 2 of txn 1 still pending");
        q.finish("t", &k(2), Done::Checked);
        assert_eq!(q.watermark(), Some(pos(10)));
        q.finish("t", &k(3), Done::Retry(Duration::ZERO));
        assert_eq!(q.watermark(), Some(pos(10)), "a failed re-check holds it");
        let again = q.take_due(100);
        assert_eq!(again[0].keys, vec![(k(3), 0)]);
        q.finish("t", &k(3), Done::Checked);
        assert_eq!(q.watermark(), Some(pos(30)));
        assert_eq!(q.depth(), 0);
    }

    #[test]
    fn a_key_changed_again_moves_to_the_newer_transaction() {
        let q = Queue::new(1000, Duration::ZERO);
        q.push_txn(pos(4), Some(pos(10)), vec![("t".into(), k(1))]);
        q.push_txn(pos(10), Some(pos(20)), vec![("t".into(), k(1))]);
        assert_eq!(q.depth(), 1);
        assert_eq!(
            q.watermark(),
            Some(pos(10)),
            "txn 1 has nothing pending any more"
        );
        // changed while in flight: checked once more
        let b = q.take_due(10);
        q.push_txn(pos(20), Some(pos(30)), vec![("t".into(), k(1))]);
        q.finish(&b[0].table, &k(1), Done::Checked);
        assert_eq!(q.depth(), 1);
        assert_eq!(q.watermark(), Some(pos(20)));
        let b = q.take_due(10);
        q.finish(&b[0].table, &k(1), Done::Checked);
        assert_eq!((q.depth(), q.watermark()), (0, Some(pos(30))));
    }

    #[test]
    fn batches_are_per_table_and_bounded() {
        let q = Queue::new(10_000, Duration::ZERO);
        q.push(
            "a".into(),
            (0..450).map(k).collect(),
            None,
            0,
            Duration::ZERO,
        );
        q.push("b".into(), vec![k(1)], None, 1, Duration::ZERO);
        let b = q.take_due(10_000);
        let sizes: Vec<(String, usize)> =
            b.iter().map(|b| (b.table.clone(), b.keys.len())).collect();
        assert_eq!(
            sizes,
            vec![
                ("a".into(), 200),
                ("a".into(), 200),
                ("a".into(), 50),
                ("b".into(), 1)
            ]
        );
        assert_eq!(b[3].keys[0].1, 1, "attempts carried");
        assert!(q.take_due(10).is_empty(), "in flight");
    }

    #[test]
    fn settle_delay_and_room() {
        let q = Queue::new(1000, Duration::from_secs(60));
        q.push_txn(pos(4), None, vec![("t".into(), k(1))]);
        assert!(q.take_due(10).is_empty(), "not due before the settle delay");
        assert_eq!(q.read_pos(), None, "transaction not complete");
    }
}
