//! `[mirror]`: how the mirror side is brought to the primary's semantics
//! (issue #19) and which server differences the operator declared intended.

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

/// The `[mirror]` table, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MirrorConfig {
    /// Whose DDL defaults the mirror gets.
    pub ddl_defaults: DdlDefaults,
    /// Drift items declared intended: a global variable name
    /// (`"time_zone"`, `"character_set_server"`) or `"table:db.name"`.
    /// Intended drift is still reported but never blocks an authority move.
    pub intended_drift: Vec<String>,
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
    ddl_defaults: Option<String>,
    intended_drift: Option<Vec<String>>,
}

impl RawMirror {
    pub(super) fn into_config(self) -> Result<MirrorConfig, ConfigError> {
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
        let intended_drift = self.intended_drift.unwrap_or_default();
        if let Some(i) = intended_drift.iter().position(|s| s.trim().is_empty()) {
            return Err(key_err(
                &format!("mirror.intended_drift[{i}]"),
                "must not be empty",
            ));
        }
        Ok(MirrorConfig {
            ddl_defaults,
            intended_drift,
        })
    }
}
