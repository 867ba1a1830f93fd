//! Resumable full runs: one checkpoint document (by default
//! `<data_dir>/full-checkpoint.json`, rewritten atomically with a temp file +
//! rename), saved after every chunk and removed when the run completes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::events::Direction;
use super::progress::Tally;
use super::storage::ValidationStorage;
use super::{RunId, ValidateError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TableCheckpoint {
    pub done: bool,
    /// The last key validated (JSON array in key order); None = not started.
    pub after: Option<Json>,
    pub tally: Tally,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub run_id: RunId,
    pub direction: Direction,
    pub fix: bool,
    /// The tables the run was asked for (None = all).
    pub requested: Option<Vec<String>>,
    pub started_at: String,
    pub tables: BTreeMap<String, TableCheckpoint>,
}

pub fn load(store: &dyn ValidationStorage) -> Option<Checkpoint> {
    let bytes = match store.read_checkpoint() {
        Ok(b) => b?,
        Err(e) => {
            tracing::warn!(store = %store.describe(), "cannot read the checkpoint: {e}");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(store = %store.describe(), "ignoring unreadable checkpoint: {e}");
            None
        }
    }
}

pub fn save(store: &dyn ValidationStorage, c: &Checkpoint) -> Result<(), ValidateError> {
    let text = serde_json::to_vec_pretty(c).expect("checkpoint serializes");
    store
        .write_checkpoint(Some(&text))
        .map_err(|e| ValidateError::Io {
            path: format!("{} (checkpoint)", store.describe()),
            source: e,
        })
}

pub fn remove(store: &dyn ValidationStorage) {
    if let Err(e) = store.write_checkpoint(None) {
        tracing::warn!(store = %store.describe(), "cannot remove the checkpoint: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::validate::storage::DataDir::open(dir.path()).unwrap();
        let path = dir.path().join("full-checkpoint.json");
        assert!(load(&store).is_none());
        let mut tables = BTreeMap::new();
        tables.insert(
            "t".to_string(),
            TableCheckpoint {
                done: false,
                after: Some(serde_json::json!([42, "b"])),
                tally: Tally {
                    rows_checked: 10,
                    neq: 1,
                    ..Default::default()
                },
            },
        );
        let c = Checkpoint {
            run_id: RunId(5),
            direction: Direction::Dst,
            fix: true,
            requested: Some(vec!["t".into()]),
            started_at: "x".into(),
            tables,
        };
        save(&store, &c).unwrap();
        assert_eq!(load(&store).unwrap(), c);
        std::fs::write(&path, "{not json").unwrap();
        assert!(load(&store).is_none(), "unreadable checkpoint is ignored");
        remove(&store);
        assert!(!path.exists());
    }
}
