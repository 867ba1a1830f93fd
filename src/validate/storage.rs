//! Where the validator keeps what must outlive a run: the full run's
//! checkpoint and the append-only inconsistency journal.
//!
//! [`DataDir`] is the single-process default (files under `data_dir`, one
//! writer per directory); a fleet plugs in its coordinator's store
//! (`control::fleet`), so a new leader resumes from the last checkpoint and
//! every member reads the same events (docs/FLEET.md).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::ValidateError;

/// Durable storage of the validator. Methods block (file or network I/O);
/// they are called where the validator used to write its files.
pub trait ValidationStorage: Send + Sync + 'static {
    /// For logs and error messages (`file /var/lib/cutover/…`, `etcd /cutover/shop/…`).
    fn describe(&self) -> String;
    /// The saved checkpoint document, if any.
    ///
    /// # Errors
    /// The store cannot be read.
    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>>;
    /// Replace (`Some`) or remove (`None`) the checkpoint; durable on `Ok`.
    ///
    /// # Errors
    /// The store cannot be written (a fleet: this member is no longer the leader).
    fn write_checkpoint(&self, doc: Option<&[u8]>) -> io::Result<()>;
    /// Every journal line appended so far (JSON lines, oldest first).
    ///
    /// # Errors
    /// The store cannot be read.
    fn read_journal(&self) -> io::Result<Vec<u8>>;
    /// Append whole JSON lines (each ends with `\n`); durable on `Ok`.
    ///
    /// # Errors
    /// The store cannot be written.
    fn append_journal(&self, lines: &[u8]) -> io::Result<()>;
}

/// `<data_dir>/full-checkpoint.json` and `<data_dir>/inconsistencies.jsonl`,
/// with an exclusive OS lock on `<data_dir>/lock` (holding the owner's pid)
/// for the store's lifetime: one writer per directory.
pub struct DataDir {
    dir: PathBuf,
    journal: Mutex<File>,
    _lock: File,
}

impl DataDir {
    /// Create `dir` if needed and take its lock; a torn last journal line (a
    /// crash mid-append) is terminated so it cannot swallow the next record.
    ///
    /// # Errors
    /// [`ValidateError::DataDirLocked`] when another store (this process or
    /// another) holds the directory; [`ValidateError::Io`].
    pub fn open(dir: &Path) -> Result<DataDir, ValidateError> {
        std::fs::create_dir_all(dir).map_err(|e| ValidateError::io(dir, e))?;
        let lock = lock_dir(dir)?;
        let path = dir.join("inconsistencies.jsonl");
        let mut journal = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| ValidateError::io(&path, e))?;
        let len = journal.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 0 {
            let mut last = [0u8; 1];
            let mut f = File::open(&path).map_err(|e| ValidateError::io(&path, e))?;
            f.seek(SeekFrom::End(-1))
                .and_then(|_| f.read_exact(&mut last))
                .map_err(|e| ValidateError::io(&path, e))?;
            if last[0] != b'\n' {
                journal
                    .write_all(b"\n")
                    .map_err(|e| ValidateError::io(&path, e))?;
            }
        }
        Ok(DataDir {
            dir: dir.to_path_buf(),
            journal: Mutex::new(journal),
            _lock: lock,
        })
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.dir.join("full-checkpoint.json")
    }

    fn journal_path(&self) -> PathBuf {
        self.dir.join("inconsistencies.jsonl")
    }
}

impl ValidationStorage for DataDir {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.checkpoint_path()) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_checkpoint(&self, doc: Option<&[u8]>) -> io::Result<()> {
        let path = self.checkpoint_path();
        match doc {
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Some(doc) => {
                let tmp = self.dir.join("full-checkpoint.json.tmp");
                std::fs::write(&tmp, doc).and_then(|_| std::fs::rename(&tmp, &path))
            }
        }
    }

    fn read_journal(&self) -> io::Result<Vec<u8>> {
        std::fs::read(self.journal_path())
    }

    fn append_journal(&self, lines: &[u8]) -> io::Result<()> {
        let mut f = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(lines).and_then(|_| f.sync_data())
    }
}

/// Take `<dir>/lock` exclusively and write our pid into it.
fn lock_dir(dir: &Path) -> Result<File, ValidateError> {
    let path = dir.join("lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| ValidateError::io(&path, e))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(ValidateError::DataDirLocked {
                path: dir.display().to_string(),
                holder: if holder.is_empty() {
                    "lock held".into()
                } else {
                    holder.to_string()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(ValidateError::io(&path, e)),
    }
    let me = format!("pid {}", std::process::id());
    f.set_len(0)
        .and_then(|_| f.seek(SeekFrom::Start(0)))
        .and_then(|_| f.write_all(me.as_bytes()))
        .and_then(|_| f.sync_data())
        .map_err(|e| ValidateError::io(&path, e))?;
    Ok(f)
}
