//! Binlog positions and the durable capture checkpoint.
//!
//! `<data_dir>/capture-checkpoint.json` holds where reading resumes after a
//! restart: the start of the oldest transaction that still has a key
//! waiting for re-verification (or, with nothing pending, the end of the
//! last transaction read). It is written atomically (temp file, fsync,
//! rename, fsync of the directory) at most twice a second and when capture
//! stops.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pattern::Side;

/// Where a binlog reader is: file name and byte offset, plus (MariaDB) the
/// GTID state — for each replication domain the last transaction read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub file: String,
    pub pos: u64,
    /// MariaDB GTID state, `domain-server-seq[,…]` (empty on MySQL or before
    /// the first GTID).
    #[serde(default, skip_serializing_if = "GtidState::is_empty")]
    pub gtid: GtidState,
}

/// MariaDB GTID state: domain id → (server id, sequence number).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct GtidState(pub BTreeMap<u32, (u32, u64)>);

impl GtidState {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parse `0-1-100,1-5-7` (what `@@gtid_binlog_pos` prints).
    ///
    /// # Errors
    /// A part that is not three dash-separated integers.
    pub fn parse(s: &str) -> Result<GtidState, String> {
        let mut m = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let f: Vec<&str> = part.split('-').collect();
            let bad = || format!("not a MariaDB GTID: `{part}`");
            if f.len() != 3 {
                return Err(bad());
            }
            let d = f[0].parse().map_err(|_| bad())?;
            let srv = f[1].parse().map_err(|_| bad())?;
            let seq = f[2].parse().map_err(|_| bad())?;
            m.insert(d, (srv, seq));
        }
        Ok(GtidState(m))
    }

    pub fn set(&mut self, domain: u32, server: u32, seq: u64) {
        self.0.insert(domain, (server, seq));
    }

    /// Transactions in `ahead` that this state has not reached (summed over
    /// domains; sequence numbers grow per domain).
    pub fn behind(&self, ahead: &GtidState) -> u64 {
        ahead
            .0
            .iter()
            .map(|(d, (_, seq))| {
                let ours = self.0.get(d).map_or(0, |(_, s)| *s);
                seq.saturating_sub(ours)
            })
            .sum()
    }
}

impl std::fmt::Display for GtidState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(d, (s, n))| format!("{d}-{s}-{n}"))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl From<GtidState> for String {
    fn from(g: GtidState) -> String {
        g.to_string()
    }
}

impl TryFrom<String> for GtidState {
    type Error = String;
    fn try_from(s: String) -> Result<GtidState, String> {
        GtidState::parse(&s)
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if !self.gtid.is_empty() {
            write!(f, " (gtid {})", self.gtid)?;
        }
        Ok(())
    }
}

/// The durable resume point of change capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The authoritative side the binlog belongs to.
    pub side: Side,
    /// `host:port` of that server (a checkpoint of another server is ignored).
    pub server: String,
    pub position: Position,
    /// UTC, RFC 3339.
    pub saved_at: String,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("capture-checkpoint.json")
}

/// The checkpoint, if one exists and is readable (an unreadable one is
/// logged and ignored: capture then starts at the current position).
pub fn load(dir: &Path) -> Option<Checkpoint> {
    let p = path(dir);
    let text = fs::read_to_string(&p).ok()?;
    match serde_json::from_str(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(file = %p.display(), "ignoring unreadable capture checkpoint: {e}");
            None
        }
    }
}

/// Write the checkpoint durably (temp file + fsync + rename + directory fsync).
///
/// # Errors
/// Any I/O error, with the path.
pub fn save(dir: &Path, c: &Checkpoint) -> Result<(), crate::validate::ValidateError> {
    let p = path(dir);
    let tmp = dir.join("capture-checkpoint.json.tmp");
    let text = serde_json::to_vec_pretty(c).expect("checkpoint serializes");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        fs::rename(&tmp, &p)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| crate::validate::ValidateError::io(&p, e))
}

pub fn remove(dir: &Path) {
    let _ = fs::remove_file(path(dir));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_state_round_trip_and_distance() {
        let g = GtidState::parse("0-1-100, 3-7-5").unwrap();
        assert_eq!(g.to_string(), "0-1-100,3-7-5");
        let ahead = GtidState::parse("0-2-130,3-7-5,4-1-2").unwrap();
        assert_eq!(g.behind(&ahead), 30 + 2);
        assert!(GtidState::parse("0-1").is_err());
        assert!(GtidState::parse("").unwrap().is_empty());
    }

    #[test]
    fn checkpoint_save_load() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_none());
        let c = Checkpoint {
            side: Side::Source,
            server: "127.0.0.1:3307".into(),
            position: Position {
                file: "binlog.000002".into(),
                pos: 1234,
                gtid: GtidState::parse("0-1-9").unwrap(),
            },
            saved_at: "x".into(),
        };
        save(dir.path(), &c).unwrap();
        assert_eq!(load(dir.path()).unwrap(), c);
        let text = fs::read_to_string(path(dir.path())).unwrap();
        assert!(text.contains("\"gtid\": \"0-1-9\""), "{text}");
        fs::write(path(dir.path()), "{").unwrap();
        assert!(load(dir.path()).is_none());
        remove(dir.path());
    }
}
