//! Configuration: a TOML file, overridden by flags / environment.
//!
//! Every problem is reported as one line naming the offending key.

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;
use serde::Deserialize;

use crate::pattern::Pattern;
use crate::tls::server::ClientTlsConfig;
use crate::tls::{BackendTls, BackendTlsKeys};

mod mirror;
mod users;
pub use mirror::{DdlDefaults, MirrorConfig, Pinning as PinningMode};
pub use users::{AuthMode, UserConfig};
mod coordination;
pub use coordination::{Coordination, CoordinationOverrides, EtcdCoordination, OnCoordinatorLoss};

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub admin_listen: String,
    pub initial_pattern: Pattern,
    pub source: BackendConfig,
    pub destination: BackendConfig,
    pub users: Vec<UserConfig>,
    /// How client logins are checked (`auth`: `[[users]]` only, or pass-through).
    pub auth: AuthMode,
    pub limits: Limits,
    pub state_file: PathBuf,
    pub admin_token: Option<String>,
    pub enable_auto_promotion: bool,
    pub promotion_quiet_period_ms: u64,
    /// How long a switch of the authoritative side waits for in-flight
    /// transactions before it is aborted.
    pub switch_drain_timeout_ms: u64,
    /// Pin statement time, AUTO_INCREMENT ids, RAND() seeds and UUID()s so
    /// mirrored writes store the same values on both sides.
    pub deterministic_mirroring: bool,
    /// Where durable control-plane files live (validation events, checkpoints).
    pub data_dir: PathBuf,
    /// The `[validation]` table.
    pub validation: ValidationConfig,
    /// `cutover serve --init-state` (not a file key): start as a fresh
    /// install even when `data_dir` shows an earlier migration.
    pub init_state: bool,
    /// The `[coordination]` table: state file (default) or an etcd fleet.
    pub coordination: Coordination,
    /// `[tls]`: TLS for applications connecting to cutover.
    pub tls: ClientTlsConfig,
    /// The `[mirror]` table (retries, temporary tables, catalog, session
    /// alignment, DDL defaults, intended drift).
    pub mirror: MirrorConfig,
}

/// `[validation]`: the chunked validator, its throttle and the fixer.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationConfig {
    /// Tables to validate; empty means every base table of the source database.
    pub tables: Vec<String>,
    /// Update-time column for incremental mode (BIGINT ms or DATETIME/TIMESTAMP).
    pub utime_column: String,
    /// Chunk size adapts so one chunk's checksum takes about this long.
    pub chunk_target_ms: u64,
    pub chunk_min_rows: u64,
    pub chunk_max_rows: u64,
    /// 0 = unlimited.
    pub max_rows_per_second: u64,
    /// Back off when a chunk's per-row latency exceeds this multiple of the baseline.
    pub latency_backoff_factor: f64,
    /// Repair discrepancies as they are found (full and incremental runs).
    pub auto_fix: bool,
    /// Differing rows are re-read after this delay before being reported
    /// (filters writes that were in flight between the two sides).
    pub recheck_delay_ms: u64,
    /// Each incremental pass re-reads this much before its checkpoint
    /// (late commits, equal timestamps).
    pub incremental_overlap_ms: u64,
    /// At most this many events are recorded per run (the rest are only counted).
    pub max_events_per_run: usize,
    /// The row/chunk hash computed inside both databases (docs/VALIDATION.md).
    pub checksum: Checksum,
    /// A differing chunk with more rows than this (on either side) is split
    /// and re-checksummed before rows are fetched: the memory bound of a
    /// drill-down and of one backfill copy.
    pub drill_down_rows: u64,
    /// Change capture on the authoritative side (re-verifies every changed key).
    pub change_capture: ChangeCapture,
    /// A key changed on the authoritative side is re-verified this long after
    /// the change was read (lets the mirrored write land on the other side).
    pub capture_settle_ms: u64,
    /// Server id cutover registers with when it reads the binlog; must differ
    /// from every server and replica of that replication topology.
    pub capture_server_id: u32,
    /// The re-verification queue holds at most this many keys; beyond it the
    /// binlog reader waits (back-pressure: nothing is dropped, lag grows).
    pub capture_queue_max_keys: usize,
}

/// `[validation] checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksum {
    /// Per row CRC32 and CRC32C of the row's bytes (two independent 32-bit
    /// CRCs), summed per chunk with the row count. Default.
    #[default]
    Crc32,
    /// Per row MD5 (128 bits), XOR-folded per chunk: slower, for paranoid runs.
    Md5,
}

impl Checksum {
    pub fn as_str(self) -> &'static str {
        match self {
            Checksum::Crc32 => "crc32",
            Checksum::Md5 => "md5",
        }
    }
}

/// `[validation] change_capture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChangeCapture {
    /// No capture (full and incremental runs only). Default.
    #[default]
    Off,
    /// Read the authoritative side's binlog (ROW format) and re-verify every
    /// primary key it changes.
    Binlog,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            tables: Vec::new(),
            utime_column: "utime".into(),
            chunk_target_ms: 500,
            chunk_min_rows: 100,
            chunk_max_rows: 2_000_000,
            max_rows_per_second: 0,
            latency_backoff_factor: 3.0,
            auto_fix: false,
            recheck_delay_ms: 200,
            incremental_overlap_ms: 2_000,
            max_events_per_run: 100_000,
            checksum: Checksum::Crc32,
            drill_down_rows: 10_000,
            change_capture: ChangeCapture::Off,
            capture_settle_ms: 500,
            capture_server_id: 1_129_665_584,
            capture_queue_max_keys: 1_000_000,
        }
    }
}

/// Data-path limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Client connections beyond this get ERR 1040.
    pub max_connections: usize,
    /// Client packets larger than this get ERR 1153.
    pub max_allowed_packet: usize,
    /// How long to wait for a backend TCP connect + handshake.
    pub connect_timeout_ms: u64,
    /// On SIGTERM, how long in-flight statements may run before exit.
    pub shutdown_timeout_ms: u64,
    /// First back-off after a failed connect to the non-authoritative side.
    pub secondary_backoff_min_ms: u64,
    /// Longest back-off after repeated failures.
    pub secondary_backoff_max_ms: u64,
    /// A client that has not completed authentication this long after it
    /// connected is disconnected (MySQL's `connect_timeout`).
    pub handshake_timeout_ms: u64,
    /// At most this many of the `max_connections` may be still
    /// authenticating; beyond it new connections get ERR 1040, so idle or
    /// slow unauthenticated sockets cannot take every slot.
    pub max_unauthenticated_connections: usize,
    /// Consecutive failed logins from one client address before each further
    /// failure is answered late (MySQL's `connection_control`); 0 = off.
    pub failed_login_threshold: u32,
    /// The delay of the first failure past the threshold; it grows by this
    /// much per further failure.
    pub failed_login_delay_min_ms: u64,
    /// The longest delay.
    pub failed_login_delay_max_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_allowed_packet: 64 * 1024 * 1024,
            connect_timeout_ms: 3000,
            shutdown_timeout_ms: 10_000,
            secondary_backoff_min_ms: 200,
            secondary_backoff_max_ms: 10_000,
            handshake_timeout_ms: 10_000,
            max_unauthenticated_connections: 512,
            failed_login_threshold: 3,
            failed_login_delay_min_ms: 1_000,
            failed_login_delay_max_ms: 10_000,
        }
    }
}

/// Where one backend database lives and how cutover logs into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub database: Option<String>,
    /// `ssl_mode`, `ssl_ca`, `ssl_cert`, `ssl_key`, `server_public_key`.
    pub tls: BackendTls,
}

impl BackendConfig {
    /// Parse `mysql://user:password@host:port/database`.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        if parsed.scheme() != "mysql" && parsed.scheme() != "mariadb" {
            return Err(format!(
                "scheme must be mysql:// (got {}://)",
                parsed.scheme()
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("missing host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let user = decode(parsed.username());
        if user.is_empty() {
            return Err("missing user (mysql://USER:PASSWORD@host:port/db)".into());
        }
        let password = decode(parsed.password().unwrap_or(""));
        let database = parsed
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .map(decode)
            .filter(|d| !d.is_empty());
        Ok(BackendConfig {
            url: url.to_string(),
            host,
            port: parsed.port().unwrap_or(3306),
            user,
            password,
            database,
            tls: BackendTls::default(),
        })
    }

    /// `host:port` for connecting and for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Command-line / environment overrides (they win over the file).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
    /// `CUTOVER_ADMIN_TOKEN`: keeps the token out of the config file (a
    /// Kubernetes Secret, a systemd `EnvironmentFile`). Empty means unset.
    pub admin_token: Option<String>,
    /// `--init-state`: see [`Config::init_state`].
    pub init_state: bool,
    /// `CUTOVER_COORDINATION_*` (a pod template sets `member_id` from the pod name).
    pub coordination: CoordinationOverrides,
}

/// A configuration problem: always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

pub(crate) fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    admin_listen: Option<String>,
    initial_pattern: Option<String>,
    source: Option<RawBackend>,
    destination: Option<RawBackend>,
    #[serde(default)]
    users: Vec<UserConfig>,
    auth: Option<String>,
    max_connections: Option<usize>,
    max_allowed_packet: Option<usize>,
    connect_timeout_ms: Option<u64>,
    shutdown_timeout_ms: Option<u64>,
    secondary_backoff_min_ms: Option<u64>,
    secondary_backoff_max_ms: Option<u64>,
    handshake_timeout_ms: Option<u64>,
    max_unauthenticated_connections: Option<usize>,
    failed_login_threshold: Option<u32>,
    failed_login_delay_min_ms: Option<u64>,
    failed_login_delay_max_ms: Option<u64>,
    state_file: Option<PathBuf>,
    admin_token: Option<String>,
    enable_auto_promotion: Option<bool>,
    promotion_quiet_period_ms: Option<u64>,
    switch_drain_timeout_ms: Option<u64>,
    deterministic_mirroring: Option<bool>,
    data_dir: Option<PathBuf>,
    validation: Option<RawValidation>,
    coordination: Option<coordination::RawCoordination>,
    tls: Option<RawTls>,
    mirror: Option<mirror::RawMirror>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    require: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawValidation {
    tables: Option<Vec<String>>,
    utime_column: Option<String>,
    chunk_target_ms: Option<u64>,
    chunk_min_rows: Option<u64>,
    chunk_max_rows: Option<u64>,
    max_rows_per_second: Option<u64>,
    latency_backoff_factor: Option<f64>,
    auto_fix: Option<bool>,
    recheck_delay_ms: Option<u64>,
    incremental_overlap_ms: Option<u64>,
    max_events_per_run: Option<usize>,
    checksum: Option<String>,
    drill_down_rows: Option<u64>,
    change_capture: Option<String>,
    capture_settle_ms: Option<u64>,
    capture_server_id: Option<u32>,
    capture_queue_max_keys: Option<usize>,
}

impl RawValidation {
    fn into_config(self) -> Result<ValidationConfig, ConfigError> {
        let d = ValidationConfig::default();
        let v = ValidationConfig {
            tables: self.tables.unwrap_or(d.tables),
            utime_column: self.utime_column.unwrap_or(d.utime_column),
            chunk_target_ms: self.chunk_target_ms.unwrap_or(d.chunk_target_ms),
            chunk_min_rows: self.chunk_min_rows.unwrap_or(d.chunk_min_rows),
            chunk_max_rows: self.chunk_max_rows.unwrap_or(d.chunk_max_rows),
            max_rows_per_second: self.max_rows_per_second.unwrap_or(d.max_rows_per_second),
            latency_backoff_factor: self
                .latency_backoff_factor
                .unwrap_or(d.latency_backoff_factor),
            auto_fix: self.auto_fix.unwrap_or(d.auto_fix),
            recheck_delay_ms: self.recheck_delay_ms.unwrap_or(d.recheck_delay_ms),
            incremental_overlap_ms: self
                .incremental_overlap_ms
                .unwrap_or(d.incremental_overlap_ms),
            max_events_per_run: self.max_events_per_run.unwrap_or(d.max_events_per_run),
            checksum: match self.checksum.as_deref() {
                None => d.checksum,
                Some("crc32") => Checksum::Crc32,
                Some("md5") => Checksum::Md5,
                Some(other) => {
                    return Err(key_err(
                        "validation.checksum",
                        format!("unknown `{other}` (crc32, md5)"),
                    ))
                }
            },
            drill_down_rows: self.drill_down_rows.unwrap_or(d.drill_down_rows),
            change_capture: match self.change_capture.as_deref() {
                None => d.change_capture,
                Some("off") => ChangeCapture::Off,
                Some("binlog") => ChangeCapture::Binlog,
                Some(other) => {
                    return Err(key_err(
                        "validation.change_capture",
                        format!("unknown `{other}` (off, binlog)"),
                    ))
                }
            },
            capture_settle_ms: self.capture_settle_ms.unwrap_or(d.capture_settle_ms),
            capture_server_id: self.capture_server_id.unwrap_or(d.capture_server_id),
            capture_queue_max_keys: self
                .capture_queue_max_keys
                .unwrap_or(d.capture_queue_max_keys),
        };
        if v.drill_down_rows < 10 {
            return Err(key_err("validation.drill_down_rows", "must be at least 10"));
        }
        if v.capture_server_id == 0 {
            return Err(key_err(
                "validation.capture_server_id",
                "must be 1 ..= 4294967295 (0 is refused by the binlog protocol)",
            ));
        }
        if v.capture_queue_max_keys < 1000 {
            return Err(key_err(
                "validation.capture_queue_max_keys",
                "must be at least 1000",
            ));
        }
        for (i, t) in v.tables.iter().enumerate() {
            if t.is_empty() || t.contains('`') || t.contains('.') {
                return Err(key_err(
                    &format!("validation.tables[{i}]"),
                    "must be a plain table name (no `.` or backquote)",
                ));
            }
        }
        if v.utime_column.is_empty() || v.utime_column.contains('`') {
            return Err(key_err(
                "validation.utime_column",
                "must be a plain column name",
            ));
        }
        if v.chunk_target_ms == 0 {
            return Err(key_err("validation.chunk_target_ms", "must be at least 1"));
        }
        if v.chunk_min_rows == 0 {
            return Err(key_err("validation.chunk_min_rows", "must be at least 1"));
        }
        if v.chunk_min_rows > v.chunk_max_rows {
            return Err(key_err(
                "validation.chunk_min_rows",
                "must not exceed validation.chunk_max_rows",
            ));
        }
        if v.latency_backoff_factor.is_nan() || v.latency_backoff_factor < 1.0 {
            return Err(key_err(
                "validation.latency_backoff_factor",
                "must be at least 1.0",
            ));
        }
        Ok(v)
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    url: Option<String>,
    ssl_mode: Option<String>,
    ssl_ca: Option<PathBuf>,
    ssl_cert: Option<PathBuf>,
    ssl_key: Option<PathBuf>,
    server_public_key: Option<PathBuf>,
}

impl RawBackend {
    fn tls_keys(&self) -> BackendTlsKeys {
        BackendTlsKeys {
            ssl_mode: self.ssl_mode.clone(),
            ssl_ca: self.ssl_ca.clone(),
            ssl_cert: self.ssl_cert.clone(),
            ssl_key: self.ssl_key.clone(),
            server_public_key: self.server_public_key.clone(),
        }
    }
}

/// Load a backend's TLS files; errors name `side.key`.
fn backend_tls(side: &str, raw: Option<&RawBackend>) -> Result<BackendTls, ConfigError> {
    let keys = raw.map(RawBackend::tls_keys).unwrap_or_default();
    BackendTls::load(&keys).map_err(|e| key_err(&format!("{side}.{}", e.key), e.message))
}

/// `[tls]`: both files or neither; `require` needs them; they must load.
fn client_tls(raw: Option<RawTls>) -> Result<ClientTlsConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let cfg = ClientTlsConfig {
        cert: raw.cert,
        key: raw.key,
        require: raw.require.unwrap_or(false),
    };
    match (&cfg.cert, &cfg.key) {
        (Some(_), None) => return Err(key_err("tls.key", "missing (tls.cert is set)")),
        (None, Some(_)) => return Err(key_err("tls.cert", "missing (tls.key is set)")),
        (None, None) if cfg.require => {
            return Err(key_err("tls.require", "needs tls.cert and tls.key"))
        }
        _ => {}
    }
    crate::tls::server::ServerTls::load(&cfg).map_err(|m| key_err("tls.cert", m))?;
    Ok(cfg)
}

impl Config {
    /// Read `path` (missing file is allowed only when the overrides supply
    /// both backend URLs), apply overrides, validate.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if overrides.source.is_none() {
                    return Err(ConfigError::File {
                        path: path.display().to_string(),
                        message: "not found (pass --config PATH, or --source/--destination URLs)"
                            .into(),
                    });
                }
                None
            }
            Err(e) => {
                return Err(ConfigError::File {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        let raw: RawConfig = match text {
            Some(t) => toml::from_str(&t).map_err(|e| ConfigError::File {
                path: path.display().to_string(),
                message: one_line_toml_error(&e, &t),
            })?,
            None => RawConfig::default(),
        };
        let mut cfg = Config::parse_raw(raw, overrides)?;
        cfg.apply(overrides)?;
        Ok(cfg)
    }

    /// Parse TOML text (no overrides).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::File {
            path: String::new(),
            message: one_line_toml_error(&e, text),
        })?;
        Config::parse_raw(raw, &Overrides::default())
    }

    fn parse_raw(raw: RawConfig, overrides: &Overrides) -> Result<Config, ConfigError> {
        let defaults = Limits::default();
        let source_tls = backend_tls("source", raw.source.as_ref())?;
        let destination_tls = backend_tls("destination", raw.destination.as_ref())?;
        let source_url = overrides
            .source
            .clone()
            .or_else(|| raw.source.and_then(|s| s.url))
            .ok_or_else(|| key_err("source.url", "missing"))?;
        let destination_url = overrides
            .destination
            .clone()
            .or_else(|| raw.destination.and_then(|s| s.url))
            .ok_or_else(|| key_err("destination.url", "missing"))?;
        let mut source =
            BackendConfig::from_url(&source_url).map_err(|m| key_err("source.url", m))?;
        let mut destination =
            BackendConfig::from_url(&destination_url).map_err(|m| key_err("destination.url", m))?;
        source.tls = source_tls;
        destination.tls = destination_tls;
        let initial_pattern = match raw.initial_pattern {
            Some(p) => p.parse().map_err(|e: crate::pattern::UnknownPattern| {
                key_err("initial_pattern", e.to_string())
            })?,
            None => Pattern::SrcOnly,
        };
        let users = users::with_defaults(raw.users, &source, &destination)?;
        let auth = AuthMode::parse(raw.auth.as_deref())?;
        let max_connections = raw.max_connections.unwrap_or(defaults.max_connections);
        let limits = Limits {
            max_connections,
            max_allowed_packet: raw
                .max_allowed_packet
                .unwrap_or(defaults.max_allowed_packet),
            connect_timeout_ms: raw
                .connect_timeout_ms
                .unwrap_or(defaults.connect_timeout_ms),
            shutdown_timeout_ms: raw
                .shutdown_timeout_ms
                .unwrap_or(defaults.shutdown_timeout_ms),
            secondary_backoff_min_ms: raw
                .secondary_backoff_min_ms
                .unwrap_or(defaults.secondary_backoff_min_ms),
            secondary_backoff_max_ms: raw
                .secondary_backoff_max_ms
                .unwrap_or(defaults.secondary_backoff_max_ms),
            handshake_timeout_ms: raw
                .handshake_timeout_ms
                .unwrap_or(defaults.handshake_timeout_ms),
            max_unauthenticated_connections: raw
                .max_unauthenticated_connections
                .unwrap_or((max_connections / 2).max(1)),
            failed_login_threshold: raw
                .failed_login_threshold
                .unwrap_or(defaults.failed_login_threshold),
            failed_login_delay_min_ms: raw
                .failed_login_delay_min_ms
                .unwrap_or(defaults.failed_login_delay_min_ms),
            failed_login_delay_max_ms: raw
                .failed_login_delay_max_ms
                .unwrap_or(defaults.failed_login_delay_max_ms),
        };
        check_login_limits(&limits)?;
        if limits.max_connections == 0 {
            return Err(key_err("max_connections", "must be at least 1"));
        }
        if limits.max_allowed_packet < 1024 || limits.max_allowed_packet > 1 << 30 {
            return Err(key_err(
                "max_allowed_packet",
                "must be between 1024 and 1073741824",
            ));
        }
        if limits.connect_timeout_ms == 0 {
            return Err(key_err("connect_timeout_ms", "must be at least 1"));
        }
        if limits.secondary_backoff_min_ms > limits.secondary_backoff_max_ms {
            return Err(key_err(
                "secondary_backoff_min_ms",
                "must not exceed secondary_backoff_max_ms",
            ));
        }
        let validation = raw.validation.unwrap_or_default().into_config()?;
        let listen = overrides
            .listen
            .clone()
            .or(raw.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:6033".into());
        let mut raw_coordination = raw.coordination.unwrap_or_default();
        raw_coordination.apply(&overrides.coordination);
        let coordination = raw_coordination.into_config(&listen)?;
        if matches!(coordination, Coordination::Etcd(_))
            && validation.change_capture == ChangeCapture::Binlog
        {
            // The capture's binlog position is checkpointed in data_dir, and
            // a fleet's validation moves between members (docs/FLEET.md).
            return Err(key_err(
                "validation.change_capture",
                "\"binlog\" is not supported with [coordination] backend = \"etcd\" yet; use \"off\"",
            ));
        }
        let tls = client_tls(raw.tls)?;
        if let Some(i) = users
            .iter()
            .position(|u| u.require_tls && tls.cert.is_none())
        {
            let why = "needs [tls] cert and key (without them no client can use TLS)";
            return Err(key_err(&format!("users[{i}].require_tls"), why));
        }
        let mirror = raw.mirror.unwrap_or_default().into_config()?;
        let state_file = raw
            .state_file
            .unwrap_or_else(|| PathBuf::from("./cutover-state.json"));
        let data_dir = match raw.data_dir {
            Some(d) if d.as_os_str().is_empty() => {
                return Err(key_err("data_dir", "must not be empty"))
            }
            Some(d) => d,
            None => match state_file.parent() {
                Some(p) if !p.as_os_str().is_empty() && p != Path::new(".") => p.to_path_buf(),
                _ => PathBuf::from("./cutover-data"),
            },
        };
        let cfg = Config {
            listen: raw.listen.unwrap_or_else(|| "127.0.0.1:6033".into()),
            admin_listen: raw.admin_listen.unwrap_or_else(|| "127.0.0.1:9033".into()),
            initial_pattern,
            source,
            destination,
            users,
            auth,
            limits,
            state_file,
            admin_token: raw.admin_token.filter(|t| !t.is_empty()),
            enable_auto_promotion: raw.enable_auto_promotion.unwrap_or(false),
            promotion_quiet_period_ms: raw.promotion_quiet_period_ms.unwrap_or(60_000),
            switch_drain_timeout_ms: raw.switch_drain_timeout_ms.unwrap_or(2_000),
            deterministic_mirroring: raw.deterministic_mirroring.unwrap_or(true),
            data_dir,
            validation,
            init_state: false,
            coordination,
            tls,
            mirror,
        };
        check_addr("listen", &cfg.listen)?;
        check_addr("admin_listen", &cfg.admin_listen)?;
        Ok(cfg)
    }

    /// Apply flag / environment overrides.
    pub fn apply(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        if let Some(l) = &o.listen {
            check_addr("listen", l)?;
            self.listen = l.clone();
        }
        if let Some(l) = &o.admin_listen {
            check_addr("admin_listen", l)?;
            self.admin_listen = l.clone();
        }
        // A URL override keeps the file's TLS settings for that side.
        if let Some(u) = &o.source {
            let tls = std::mem::take(&mut self.source.tls);
            self.source = BackendConfig::from_url(u).map_err(|m| key_err("source.url", m))?;
            self.source.tls = tls;
        }
        if let Some(u) = &o.destination {
            let tls = std::mem::take(&mut self.destination.tls);
            self.destination =
                BackendConfig::from_url(u).map_err(|m| key_err("destination.url", m))?;
            self.destination.tls = tls;
        }
        if let Some(t) = o.admin_token.as_ref().filter(|t| !t.is_empty()) {
            self.admin_token = Some(t.clone());
        }
        self.init_state |= o.init_state;
        Ok(())
    }

    /// Look up an application login.
    pub fn user(&self, name: &[u8]) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name.as_bytes() == name)
    }
}

/// The limits of the login phase (issue 16): handshake timeout, the
/// unauthenticated share, failed-login delays.
fn check_login_limits(l: &Limits) -> Result<(), ConfigError> {
    if l.handshake_timeout_ms == 0 {
        return Err(key_err("handshake_timeout_ms", "must be at least 1"));
    }
    if l.max_unauthenticated_connections == 0
        || l.max_unauthenticated_connections > l.max_connections
    {
        return Err(key_err(
            "max_unauthenticated_connections",
            "must be between 1 and max_connections",
        ));
    }
    if l.failed_login_delay_min_ms > l.failed_login_delay_max_ms {
        return Err(key_err(
            "failed_login_delay_min_ms",
            "must not exceed failed_login_delay_max_ms",
        ));
    }
    Ok(())
}

fn check_addr(key: &str, addr: &str) -> Result<(), ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(key_err(key, format!("`{addr}` is not HOST:PORT"))),
    }
}

fn one_line_toml_error(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [source]
        url = "mysql://app:s%40cret@127.0.0.1:3307/shop"
        [destination]
        url = "mysql://app:app@127.0.0.1:3308/shop"
    "#;

    #[test]
    fn defaults_and_url_parsing() {
        let c = Config::parse(BASE).unwrap();
        assert_eq!(c.listen, "127.0.0.1:6033");
        assert_eq!(c.admin_listen, "127.0.0.1:9033");
        assert_eq!(c.initial_pattern, Pattern::SrcOnly);
        assert_eq!(c.source.password, "s@cret");
        assert_eq!(c.source.port, 3307);
        assert_eq!(c.source.database.as_deref(), Some("shop"));
        assert_eq!(
            c.users,
            vec![UserConfig {
                destination_user: Some("app".into()),
                destination_password: Some("app".into()),
                ..UserConfig::new("app", "s@cret")
            }],
            "without [[users]], the source URL's login, mapped to each side's URL account"
        );
        assert_eq!(c.limits.max_connections, 1024);
    }

    #[test]
    fn mirror_pinning_defaults_to_always() {
        assert_eq!(
            Config::parse(BASE).unwrap().mirror.pinning,
            PinningMode::Always
        );
        let c = Config::parse(&format!("{BASE}\n[mirror]\npinning = \"when_needed\"")).unwrap();
        assert_eq!(c.mirror.pinning, PinningMode::WhenNeeded);
        let e = Config::parse(&format!("{BASE}\n[mirror]\npinning = \"never\"")).unwrap_err();
        assert!(e.to_string().contains("mirror.pinning"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse("[source]\nurl='mysql://a@h/db'\n").unwrap_err();
        assert!(e.to_string().contains("destination.url"), "{e}");
        let e = Config::parse(&format!("{BASE}\ninitial_pattern='sideways'")).unwrap_err();
        assert!(e.to_string().contains("initial_pattern"), "{e}");
        let e = Config::parse(&format!("lisen='x'\n{BASE}")).unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = Config::parse(&format!("listen='nope'\n{BASE}")).unwrap_err();
        assert!(e.to_string().contains("`listen`"), "{e}");
        let e = Config::parse("[source]\nurl='http://x'\n[destination]\nurl='mysql://a@b/c'")
            .unwrap_err();
        assert!(e.to_string().contains("source.url"), "{e}");
    }

    #[test]
    fn validation_defaults_and_keys() {
        let c = Config::parse(BASE).unwrap();
        assert_eq!(c.validation, ValidationConfig::default());
        assert_eq!(c.data_dir, PathBuf::from("./cutover-data"));
        let c = Config::parse(&format!(
            "state_file = '/var/lib/cutover/state.json'\n{BASE}"
        ))
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/cutover"));
        let c = Config::parse(&format!(
            "data_dir = '/d'\n{BASE}\n[validation]\ntables = ['a', 'b']\nutime_column = 'mtime'\n\
             chunk_target_ms = 100\nchunk_min_rows = 10\nchunk_max_rows = 50\nmax_rows_per_second = 7\n\
             latency_backoff_factor = 2.5\nauto_fix = true\nrecheck_delay_ms = 0\n\
             incremental_overlap_ms = 10\nmax_events_per_run = 3\nchecksum = 'md5'\n\
             drill_down_rows = 500\nchange_capture = 'binlog'\ncapture_settle_ms = 50\n\
             capture_server_id = 77\ncapture_queue_max_keys = 5000\n"
        ))
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        let v = &c.validation;
        assert_eq!(v.tables, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(v.utime_column, "mtime");
        assert_eq!(
            (v.chunk_target_ms, v.chunk_min_rows, v.chunk_max_rows),
            (100, 10, 50)
        );
        assert_eq!(v.max_rows_per_second, 7);
        assert_eq!(v.latency_backoff_factor, 2.5);
        assert!(v.auto_fix);
        assert_eq!(
            (
                v.recheck_delay_ms,
                v.incremental_overlap_ms,
                v.max_events_per_run
            ),
            (0, 10, 3)
        );
        assert_eq!(v.checksum, Checksum::Md5);
        assert_eq!(v.change_capture, ChangeCapture::Binlog);
        assert_eq!(
            (
                v.drill_down_rows,
                v.capture_settle_ms,
                v.capture_server_id,
                v.capture_queue_max_keys
            ),
            (500, 50, 77, 5000)
        );
    }

    #[test]
    fn validation_errors_name_the_key() {
        for (extra, key) in [
            ("chunk_size = 5", "chunk_size"),
            ("tables = ['shop.t']", "validation.tables[0]"),
            ("chunk_target_ms = 0", "validation.chunk_target_ms"),
            (
                "chunk_min_rows = 10\nchunk_max_rows = 5",
                "validation.chunk_min_rows",
            ),
            (
                "latency_backoff_factor = 0.5",
                "validation.latency_backoff_factor",
            ),
            ("utime_column = ''", "validation.utime_column"),
            ("checksum = 'sha1'", "validation.checksum"),
            ("change_capture = 'cdc'", "validation.change_capture"),
            ("drill_down_rows = 1", "validation.drill_down_rows"),
            ("capture_server_id = 0", "validation.capture_server_id"),
            (
                "capture_queue_max_keys = 1",
                "validation.capture_queue_max_keys",
            ),
        ] {
            let e = Config::parse(&format!("{BASE}\n[validation]\n{extra}\n")).unwrap_err();
            assert!(e.to_string().contains(key), "{extra}: {e}");
        }
        let e = Config::parse(&format!("data_dir = ''\n{BASE}")).unwrap_err();
        assert!(e.to_string().contains("`data_dir`"), "{e}");
    }

    #[test]
    fn overrides_win() {
        let mut c = Config::parse(BASE).unwrap();
        c.apply(&Overrides {
            listen: Some("0.0.0.0:7000".into()),
            source: Some("mysql://u:p@db1:3310/x".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:7000");
        assert_eq!(c.source.host, "db1");
        assert_eq!(c.admin_token, None);
        c.apply(&Overrides {
            admin_token: Some("s3cret".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("s3cret"));
        c.apply(&Overrides {
            admin_token: Some(String::new()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.admin_token.as_deref(),
            Some("s3cret"),
            "empty keeps the file's"
        );
        // users were defaulted from the file's source URL; overrides do not re-default them
        assert_eq!(c.users[0].name, "app");
    }
}
