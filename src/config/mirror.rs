//! `[mirror]`: how the non-authoritative side is kept equal — retries of
//! mirror-only lock conflicts, temporary tables and the stored-routine
//! catalog (issues #20, #9), the primary's session semantics and DDL
//! defaults (issue #19) — and which server differences the operator
//! declared intended.

use serde::Deserialize;

use super::{key_err, ConfigError};

/// `[mirror] ddl_defaults`: whose server defaults mirrored DDL gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DdlDefaults {
    /// The primary session's `character_set_server`/`collation_server`,
    /// database charset and `default_storage_engine` are applied to the
    /// mirror's session too, so DDL relying on defaults defines the same
    /// objects on both sides (the default).
    #[default]
    Primary,
    /// Each side keeps its own defaults (migrating *to* new defaults); the
    /// resulting differences count as intended drift.
    Own,
}

impl DdlDefaults {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DdlDefaults::Primary => "primary",
            DdlDefaults::Own => "own",
        }
    }
}

/// `[mirror] pinning`: which mirrored writes carry a pin (issue #17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pinning {
    /// Every mirrored write is pinned (`timestamp`, `rand_seed1/2`, the
    /// mirror's `insert_id`): the same values on both sides whatever the
    /// schema (the default).
    #[default]
    Always,
    /// Only what a write can read: the clock when its text calls a time
    /// function or a table it names has a column whose default or
    /// `ON UPDATE` takes the clock (or is generated, or system-versioned,
    /// or has triggers); the RNG when its text calls RAND(); `insert_id` on
    /// the mirror for an INSERT/REPLACE/LOAD into a table with an
    /// AUTO_INCREMENT column; anything that calls a stored function, writes
    /// a table the catalog has not seen (created since its last read, or
    /// temporary), runs while the session holds temporary tables, or that
    /// cutover cannot read is pinned whole. The schema comes from the
    /// catalog (`catalog_refresh_ms`), re-read at once after DDL through
    /// cutover: a table altered *directly* on the server to take the clock
    /// in a default can get writes unpinned until the next re-read, and
    /// those rows then differ by their timestamps (the validator finds and
    /// repairs them). Saves one command per pinned prepared write on each
    /// side.
    WhenNeeded,
}

impl Pinning {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Pinning::Always => "always",
            Pinning::WhenNeeded => "when_needed",
        }
    }
}

/// The `[mirror]` table, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    /// Replays of the mirror's statement (autocommit) or transaction share
    /// after a mirror-only ER_LOCK_DEADLOCK / ER_LOCK_WAIT_TIMEOUT before it
    /// counts as a failure; 0 disables retrying (at most 100).
    pub retries: u32,
    /// Bytes of one transaction's mirrored statements kept for a replay;
    /// a larger transaction is not replayed (its transient errors count).
    pub replay_max_bytes: usize,
    /// Bytes of a session's temporary table copied to a mirror connection
    /// opened later; a larger table is not copied (counted as unsafe).
    pub temporary_table_max_bytes: usize,
    /// How often the stored-routine and trigger catalog is re-read, in ms
    /// (DDL through cutover that changes routines re-reads it at once; at
    /// least 100).
    pub catalog_refresh_ms: u64,
    /// Whose DDL defaults the mirror gets.
    pub ddl_defaults: DdlDefaults,
    /// Which mirrored writes carry a pin.
    pub pinning: Pinning,
    /// Drift items declared intended: a global variable name
    /// (`"time_zone"`, `"character_set_server"`) or `"table:db.name"`.
    /// Intended drift is still reported but never blocks an authority move.
    pub intended_drift: Vec<String>,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            retries: 3,
            replay_max_bytes: 1 << 20,
            temporary_table_max_bytes: 16 << 20,
            catalog_refresh_ms: 30_000,
            ddl_defaults: DdlDefaults::default(),
            pinning: Pinning::default(),
            intended_drift: Vec::new(),
        }
    }
}

impl MirrorConfig {
    /// Whether the drift item `item` (variable name or `table:db.name`) was
    /// declared intended (case-insensitive).
    pub fn is_intended(&self, item: &str) -> bool {
        self.intended_drift
            .iter()
            .any(|i| i.eq_ignore_ascii_case(item))
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirror {
    retries: Option<u32>,
    replay_max_bytes: Option<usize>,
    temporary_table_max_bytes: Option<usize>,
    catalog_refresh_ms: Option<u64>,
    ddl_defaults: Option<String>,
    pinning: Option<String>,
    intended_drift: Option<Vec<String>>,
}

impl RawMirror {
    pub(super) fn into_config(self) -> Result<MirrorConfig, ConfigError> {
        let d = MirrorConfig::default();
        let retries = self.retries.unwrap_or(d.retries);
        if retries > 100 {
            return Err(key_err("mirror.retries", "must be at most 100"));
        }
        let catalog_refresh_ms = self.catalog_refresh_ms.unwrap_or(d.catalog_refresh_ms);
        if catalog_refresh_ms < 100 {
            return Err(key_err("mirror.catalog_refresh_ms", "must be at least 100"));
        }
        let ddl_defaults = match self.ddl_defaults.as_deref() {
            None | Some("primary") => DdlDefaults::Primary,
            Some("own") => DdlDefaults::Own,
            Some(other) => {
                return Err(key_err(
                    "mirror.ddl_defaults",
                    format!("must be \"primary\" or \"own\", not {other:?}"),
                ))
            }
        };
        let pinning = match self.pinning.as_deref() {
            None | Some("always") => Pinning::Always,
            Some("when_needed") => Pinning::WhenNeeded,
            Some(other) => {
                return Err(key_err(
                    "mirror.pinning",
                    format!("must be \"always\" or \"when_needed\", not {other:?}"),
                ))
            }
        };
        let intended_drift = self.intended_drift.unwrap_or_default();
        if let Some(i) = intended_drift.iter().position(|s| s.trim().is_empty()) {
            return Err(key_err(
                &format!("mirror.intended_drift[{i}]"),
                "must not be empty",
            ));
        }
        Ok(MirrorConfig {
            retries,
            pinning,
            replay_max_bytes: self.replay_max_bytes.unwrap_or(d.replay_max_bytes),
            temporary_table_max_bytes: self
                .temporary_table_max_bytes
                .unwrap_or(d.temporary_table_max_bytes),
            catalog_refresh_ms,
            ddl_defaults,
            intended_drift,
        })
    }
}
