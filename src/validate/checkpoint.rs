//! Resumable full runs: `<data_dir>/full-checkpoint.json`, rewritten
//! atomically (temp file + rename) after every chunk and removed when the run
//! completes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::events::Direction;
use super::progress::Tally;
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

pub fn path(dir: &Path) -> PathBuf {
    dir.join("full-checkpoint.json")
}

pub fn load(dir: &Path) -> Option<Checkpoint> {
    let p = path(dir);
    let text = std::fs::read_to_string(&p).ok()?;
    match serde_json::from_str(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(file = %p.display(), "ignoring unreadable checkpoint: {e}");
            None
        }
    }
}

pub fn save(dir: &Path, c: &Checkpoint) -> Result<(), ValidateError> {
    let p = path(dir);
    let tmp = dir.join("full-checkpoint.json.tmp");
    let text = serde_json::to_vec_pretty(c).expect("checkpoint serializes");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(|e| ValidateError::io(&p, e))
}

pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(path(dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_none());
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
        save(dir.path(), &c).unwrap();
        assert_eq!(load(dir.path()).unwrap(), c);
        std::fs::write(path(dir.path()), "{not json").unwrap();
        assert!(
            load(dir.path()).is_none(),
            "unreadable checkpoint is ignored"
        );
        remove(dir.path());
        assert!(!path(dir.path()).exists());
    }
}
