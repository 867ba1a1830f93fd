//! Where the migration state survives restarts.
//!
//! [`StateStore`] is deliberately small so a store shared by many sidecars can
//! replace [`FileStateStore`] later. The file store writes atomically (temp
//! file in the same directory, fsync, rename, fsync of the directory) and
//! treats an existing file it cannot read or parse as fatal: falling back to
//! `src_only` while peers read from the destination would lose writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state_machine::State;
use super::status::{MigrationStats, Transition};
use crate::pattern::Pattern;

/// Version of the state file format.
pub const FORMAT_VERSION: u32 = 1;

/// Everything that must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    pub version: u32,
    pub state: State,
    /// Always `state.pattern()`; kept so an operator can read the file.
    pub pattern: Pattern,
    pub migration_stats: MigrationStats,
    /// Most recent last; bounded by the scheduler.
    pub history: Vec<Transition>,
}

impl PersistedState {
    pub fn fresh(state: State) -> Self {
        PersistedState {
            version: FORMAT_VERSION,
            state,
            pattern: state.pattern(),
            migration_stats: MigrationStats {
                current_state: Some(state),
                ..MigrationStats::default()
            },
            history: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state file {path} exists but cannot be read: {source}; refusing to start (fix or remove it deliberately)")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("state file {path} is corrupt: {message}; refusing to start (fix or remove it deliberately)")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot write state file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Durable storage for [`PersistedState`].
///
/// Methods block (file or network I/O); async callers run them on
/// `spawn_blocking`.
pub trait StateStore: Send + Sync + 'static {
    /// `Ok(None)` only when nothing was ever saved; anything unreadable is an error.
    fn load(&self) -> Result<Option<PersistedState>, StoreError>;
    /// Replace the stored state; when this returns `Ok` the state is durable.
    fn save(&self, state: &PersistedState) -> Result<(), StoreError>;
    /// For logs and messages.
    fn describe(&self) -> String;
}

/// A JSON file on local disk.
#[derive(Debug, Clone)]
pub struct FileStateStore {
    path: PathBuf,
}

impl FileStateStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStateStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn temp_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "cutover-state.json".into());
        name.push(format!(".tmp.{}", std::process::id()));
        self.path.with_file_name(name)
    }

    fn write_err(&self, source: io::Error) -> StoreError {
        StoreError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

impl StateStore for FileStateStore {
    fn load(&self) -> Result<Option<PersistedState>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Unreadable {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        let corrupt = |message: String| StoreError::Corrupt {
            path: self.path.clone(),
            message,
        };
        let state: PersistedState =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if state.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {} (this build reads version {FORMAT_VERSION})",
                state.version
            )));
        }
        if state.pattern != state.state.pattern() {
            return Err(corrupt(format!(
                "state {} must have pattern {}, file says {}",
                state.state,
                state.state.pattern(),
                state.pattern
            )));
        }
        Ok(Some(state))
    }

    fn save(&self, state: &PersistedState) -> Result<(), StoreError> {
        let mut json =
            serde_json::to_vec_pretty(state).map_err(|e| self.write_err(io::Error::other(e)))?;
        json.push(b'\n');
        let tmp = self.temp_path();
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            sync_dir(&self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(self.write_err(e));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

/// fsync the directory holding `path` so the rename itself is durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}
