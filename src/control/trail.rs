//! The migration's trail in `data_dir`, so that a lost state file is
//! noticed instead of silently resetting the migration.
//!
//! Every saved state is also recorded in `<data_dir>/migration-state.json`
//! (best effort). When the state file is missing at start-up but `data_dir`
//! shows the migration had moved on — that record naming a state with
//! another pattern than a fresh install would start in, validation events,
//! a full-run checkpoint — cutover refuses to start as a fresh install
//! unless told to (`cutover serve --init-state`): a sidecar that forgot it
//! is in `dst_first` and routes to the source loses writes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state_machine::State;
use super::store::{PersistedState, StateStore, StoreError};

/// The record's file name inside `data_dir`.
pub const RECORD: &str = "migration-state.json";

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    state: State,
    state_file: String,
    saved_at_ms: u64,
}

/// A [`StateStore`] that also records each saved state in `data_dir`.
pub struct Trailed {
    inner: Arc<dyn StateStore>,
    record: PathBuf,
}

impl Trailed {
    /// Wrap `inner`; the record goes to `<data_dir>/migration-state.json`.
    pub fn new(inner: Arc<dyn StateStore>, data_dir: &Path) -> Self {
        Trailed {
            inner,
            record: data_dir.join(RECORD),
        }
    }

    fn write_record(&self, state: State) -> std::io::Result<()> {
        if let Some(dir) = self.record.parent() {
            fs::create_dir_all(dir)?;
        }
        let record = Record {
            state,
            state_file: self.inner.describe(),
            saved_at_ms: now_ms(),
        };
        let tmp = self.record.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, &self.record)
    }
}

impl StateStore for Trailed {
    fn load(&self) -> Result<Option<PersistedState>, StoreError> {
        self.inner.load()
    }

    fn save(&self, state: &PersistedState) -> Result<(), StoreError> {
        self.inner.save(state)?;
        if let Err(e) = self.write_record(state.state) {
            tracing::warn!(path = %self.record.display(), "cannot record the migration state in data_dir: {e}");
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// What `data_dir` shows of a migration that went further than a fresh
/// install starting in `fresh` would know, if anything (for the refusal).
pub fn evidence(data_dir: &Path, fresh: State) -> Option<String> {
    let mut found = Vec::new();
    if let Ok(bytes) = fs::read(data_dir.join(RECORD)) {
        if let Ok(r) = serde_json::from_slice::<Record>(&bytes) {
            // `initial` is itself a fresh install: nothing happened yet.
            if r.state != State::Initial && r.state.pattern() != fresh.pattern() {
                found.push(format!(
                    "{RECORD}: the last saved state was {} ({})",
                    r.state, r.state_file
                ));
            }
        }
    }
    let events = data_dir.join("inconsistencies.jsonl");
    if fs::metadata(&events).is_ok_and(|m| m.len() > 0) {
        found.push("validation events (inconsistencies.jsonl)".into());
    }
    if data_dir.join("full-checkpoint.json").exists() {
        found.push("a full-validation checkpoint (full-checkpoint.json)".into());
    }
    (!found.is_empty()).then(|| found.join("; "))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::store::FileStateStore;

    #[test]
    fn records_each_save_and_reports_a_state_beyond_a_fresh_install() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(FileStateStore::new(dir.path().join("state.json")));
        let store = Trailed::new(file, &dir.path().join("data"));
        assert_eq!(evidence(&dir.path().join("data"), State::Initial), None);
        store.save(&PersistedState::fresh(State::Initial)).unwrap();
        assert_eq!(
            evidence(&dir.path().join("data"), State::DstFirst),
            None,
            "a recorded fresh install is no history"
        );
        store.save(&PersistedState::fresh(State::SrcOnly)).unwrap();
        assert_eq!(
            evidence(&dir.path().join("data"), State::Initial),
            None,
            "src_only routes like a fresh install"
        );
        store.save(&PersistedState::fresh(State::DstFirst)).unwrap();
        let why = evidence(&dir.path().join("data"), State::Initial).unwrap();
        assert!(why.contains("dst_first"), "{why}");
        assert!(why.contains("state.json"), "{why}");
        assert_eq!(evidence(&dir.path().join("data"), State::DstFirst), None);
    }

    #[test]
    fn validation_files_are_evidence() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("inconsistencies.jsonl"), "").unwrap();
        assert_eq!(evidence(dir.path(), State::Initial), None, "empty log");
        fs::write(dir.path().join("inconsistencies.jsonl"), "{}\n").unwrap();
        fs::write(dir.path().join("full-checkpoint.json"), "{}").unwrap();
        let why = evidence(dir.path(), State::Initial).unwrap();
        assert!(
            why.contains("events") && why.contains("checkpoint"),
            "{why}"
        );
    }
}
