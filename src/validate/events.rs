//! Inconsistency events, durable in an append-only JSONL journal (a file
//! under `data_dir` by default, see `storage.rs`).
//!
//! `<data_dir>/inconsistencies.jsonl` holds one record per line:
//! `{"event": {id, table, pk, kind, direction, detected_at, run_id, status}}`
//! when a difference is found, and `{"status": {id, status, at}}` when its
//! status changes. Nothing is ever rewritten: a crash can at worst leave a
//! torn last line, which is skipped (with a warning) when the file is loaded.
//! Each batch of appends is `fsync`ed before the run moves on.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::storage::{DataDir, ValidationStorage};
use super::{now_ms, utc_text, RunId, ValidateError};

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The row is in the base (authoritative side) but not in the target.
    TargetMissing,
    /// The row is in the target but not in the base.
    BaseMissing,
    /// The row is on both sides with different values.
    Neq,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TargetMissing => "target_missing",
            Kind::BaseMissing => "base_missing",
            Kind::Neq => "neq",
        }
    }
}

/// Lifecycle of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Open,
    /// The fixer made the target equal to the base.
    Fixed,
    /// On re-check the two sides were already equal (or the row gone from both).
    Obsolete,
}

impl std::str::FromStr for EventStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(EventStatus::Open),
            "fixed" => Ok(EventStatus::Fixed),
            "obsolete" => Ok(EventStatus::Obsolete),
            _ => Err(format!("unknown status `{s}` (open, fixed, obsolete)")),
        }
    }
}

/// Which side was authoritative when the difference was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Base = source (src_only, src_first).
    #[serde(rename = "SRC")]
    Src,
    /// Base = destination (dst_first, dst_only).
    #[serde(rename = "DST")]
    Dst,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Src => "SRC",
            Direction::Dst => "DST",
        }
    }
}

/// One difference between the two databases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inconsistency {
    pub id: u64,
    pub table: String,
    /// `{"key column": value, …}`.
    pub pk: Json,
    pub kind: Kind,
    pub direction: Direction,
    /// UTC, RFC 3339 with milliseconds.
    pub detected_at: String,
    pub run_id: RunId,
    pub status: EventStatus,
}

/// A finding before it gets an id.
#[derive(Debug, Clone)]
pub struct Finding {
    pub table: String,
    pub pk: Json,
    pub kind: Kind,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Event(Inconsistency),
    Status {
        id: u64,
        status: EventStatus,
        at: String,
    },
}

/// The in-memory view of the event journal plus where it is appended.
///
/// One writer per journal: the default storage ([`DataDir`]) takes an
/// exclusive lock on `<data_dir>/lock` (an OS file lock, released when the
/// process exits, so a crash leaves nothing stale) holding the owner's pid;
/// a fleet's storage accepts writes from its elected leader only.
pub struct EventStore {
    storage: Arc<dyn ValidationStorage>,
    events: Vec<Inconsistency>,
    by_id: HashMap<u64, usize>,
    /// (table, canonical pk) → id of its open event, for de-duplication.
    open: HashMap<(String, String), u64>,
    next_id: u64,
}

fn dedupe_key(table: &str, pk: &Json) -> (String, String) {
    (table.to_string(), pk.to_string())
}

impl EventStore {
    /// Create `dir` if needed, lock it and load `dir/inconsistencies.jsonl`.
    ///
    /// # Errors
    /// [`ValidateError::DataDirLocked`] when another store (this process or
    /// another) holds the directory; [`ValidateError::Io`].
    pub fn open(dir: &Path) -> Result<EventStore, ValidateError> {
        EventStore::load_from(Arc::new(DataDir::open(dir)?))
    }

    /// Load every event of `storage`'s journal.
    ///
    /// # Errors
    /// [`ValidateError::Io`] when the journal cannot be read.
    pub fn load_from(storage: Arc<dyn ValidationStorage>) -> Result<EventStore, ValidateError> {
        let mut store = EventStore {
            storage,
            events: Vec::new(),
            by_id: HashMap::new(),
            open: HashMap::new(),
            next_id: 1,
        };
        store.load()?;
        Ok(store)
    }

    fn io_err(&self, e: std::io::Error) -> ValidateError {
        ValidateError::Io {
            path: self.storage.describe(),
            source: e,
        }
    }

    fn load(&mut self) -> Result<(), ValidateError> {
        let bytes = self.storage.read_journal().map_err(|e| self.io_err(e))?;
        for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Record>(line) {
                Ok(Record::Event(ev)) => {
                    self.next_id = self.next_id.max(ev.id + 1);
                    self.insert(ev);
                }
                Ok(Record::Status { id, status, .. }) => self.apply_status(id, status),
                Err(e) => tracing::warn!(
                    journal = %self.storage.describe(),
                    line = n + 1,
                    "skipping unreadable event record: {e}"
                ),
            }
        }
        Ok(())
    }

    fn insert(&mut self, ev: Inconsistency) {
        if ev.status == EventStatus::Open {
            self.open.insert(dedupe_key(&ev.table, &ev.pk), ev.id);
        }
        self.by_id.insert(ev.id, self.events.len());
        self.events.push(ev);
    }

    fn apply_status(&mut self, id: u64, status: EventStatus) {
        if let Some(&i) = self.by_id.get(&id) {
            let ev = &mut self.events[i];
            ev.status = status;
            let k = dedupe_key(&ev.table, &ev.pk);
            if status == EventStatus::Open {
                self.open.insert(k, id);
            } else if self.open.get(&k) == Some(&id) {
                self.open.remove(&k);
            }
        }
    }

    fn append(&mut self, records: &[Record]) -> Result<(), ValidateError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).expect("records serialize");
            buf.push(b'\n');
        }
        self.storage
            .append_journal(&buf)
            .map_err(|e| self.io_err(e))
    }

    /// Record findings; a finding for a row that already has an open event is
    /// not recorded again — a repaired one (`status` fixed) closes that
    /// event instead. Returns the new events.
    ///
    /// # Errors
    /// [`ValidateError::Io`] when the file cannot be appended.
    pub fn record(
        &mut self,
        findings: Vec<Finding>,
        direction: Direction,
        run_id: RunId,
        status: EventStatus,
    ) -> Result<Vec<Inconsistency>, ValidateError> {
        let at = utc_text(now_ms());
        let mut new = Vec::new();
        let mut closed = Vec::new();
        for f in findings {
            if let Some(&id) = self.open.get(&dedupe_key(&f.table, &f.pk)) {
                if status != EventStatus::Open {
                    closed.push((id, status));
                }
                continue;
            }
            new.push(Inconsistency {
                id: self.next_id + new.len() as u64,
                table: f.table,
                pk: f.pk,
                kind: f.kind,
                direction,
                detected_at: at.clone(),
                run_id,
                status,
            });
        }
        let records: Vec<Record> = new.iter().cloned().map(Record::Event).collect();
        self.append(&records)?;
        self.next_id += new.len() as u64;
        for ev in &new {
            self.insert(ev.clone());
        }
        self.set_status(&closed)?;
        Ok(new)
    }

    /// Append status changes.
    pub fn set_status(&mut self, changes: &[(u64, EventStatus)]) -> Result<(), ValidateError> {
        let at = utc_text(now_ms());
        let records: Vec<Record> = changes
            .iter()
            .filter(|(id, _)| self.by_id.contains_key(id))
            .map(|&(id, status)| Record::Status {
                id,
                status,
                at: at.clone(),
            })
            .collect();
        self.append(&records)?;
        for &(id, status) in changes {
            self.apply_status(id, status);
        }
        Ok(())
    }

    /// Events with id > `after`, optionally of one status, oldest first.
    pub fn list(
        &self,
        status: Option<EventStatus>,
        limit: usize,
        after: Option<u64>,
    ) -> Vec<Inconsistency> {
        let after = after.unwrap_or(0);
        let start = self.events.partition_point(|e| e.id <= after);
        self.events[start..]
            .iter()
            .filter(|e| status.is_none_or(|s| e.status == s))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn open_events(&self) -> Vec<Inconsistency> {
        self.list(Some(EventStatus::Open), usize::MAX, None)
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    pub fn get(&self, id: u64) -> Option<&Inconsistency> {
        self.by_id.get(&id).map(|&i| &self.events[i])
    }

    /// The open event for a row, if any.
    pub fn open_for(&self, table: &str, pk: &Json) -> Option<u64> {
        self.open.get(&dedupe_key(table, pk)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn finding(id: i64, kind: Kind) -> Finding {
        Finding {
            table: "t".into(),
            pk: json!({ "id": id }),
            kind,
        }
    }

    #[test]
    fn append_reload_dedupe_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = EventStore::open(dir.path()).unwrap();
        let run = RunId(7);
        let new = s
            .record(
                vec![finding(1, Kind::Neq), finding(2, Kind::TargetMissing)],
                Direction::Src,
                run,
                EventStatus::Open,
            )
            .unwrap();
        assert_eq!(new.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 2]);
        // same row again while open: not duplicated
        let again = s
            .record(
                vec![finding(1, Kind::Neq)],
                Direction::Src,
                run,
                EventStatus::Open,
            )
            .unwrap();
        assert!(again.is_empty());
        s.set_status(&[(1, EventStatus::Fixed)]).unwrap();
        // one writer per directory
        let e = EventStore::open(dir.path())
            .err()
            .expect("second store refused");
        assert!(matches!(e, ValidateError::DataDirLocked { .. }), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(s);
        // a torn last line is skipped
        let path = dir.path().join("inconsistencies.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"event\": {\"id\": 9").unwrap();
        drop(f);
        let mut s = EventStore::open(dir.path()).unwrap();
        assert_eq!(s.get(1).unwrap().status, EventStatus::Fixed);
        assert_eq!(s.open_count(), 1);
        assert_eq!(s.list(Some(EventStatus::Open), 10, None)[0].id, 2);
        assert_eq!(s.list(None, 10, Some(1)).len(), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"kind\":\"target_missing\""), "{text}");
        assert!(text.contains("\"direction\":\"SRC\""), "{text}");
        // row 1 is fixed, so a new finding for it is recorded with a new id
        let n = s
            .record(
                vec![finding(1, Kind::Neq)],
                Direction::Dst,
                run,
                EventStatus::Open,
            )
            .unwrap();
        assert_eq!(n[0].id, 3);
    }
}
