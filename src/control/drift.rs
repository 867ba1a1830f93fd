//! Server drift (issue #19): the two servers' semantics-relevant globals and
//! each migrated table's definition, compared at start and on every health
//! refresh. Shown in `/status` (`drift`), `cutover ctl status` and
//! `cutover_drift{kind}` / `cutover_drift_blocking`; a *blocking* difference
//! is a named blocker of every guarded authority move (see `guard`) unless
//! `[mirror] intended_drift` lists it.
//!
//! Read on separate connections (never a client's session), as the
//! configured users, from `@@global.*` and information_schema.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::config::{BackendConfig, Config, DdlDefaults, MirrorConfig};
use crate::pattern::Side;

/// A compared global: its name and whether a difference can make stored
/// data differ (blocking) or is informational.
const VARIABLES: &[(&str, bool)] = &[
    ("time_zone", true),
    ("sql_mode", true),
    ("character_set_server", true),
    ("collation_server", true),
    ("default_storage_engine", true),
    ("lower_case_table_names", true),
    ("explicit_defaults_for_timestamp", true),
    ("div_precision_increment", true),
    ("auto_increment_increment", true),
    ("auto_increment_offset", true),
    ("innodb_autoinc_lock_mode", true),
    // Sessions through cutover are aligned to the primary's (session/align.rs).
    ("character_set_client", false),
    ("character_set_connection", false),
    ("collation_connection", false),
    ("character_set_results", false),
    ("binlog_format", false),
    ("version", false),
];

/// Globals that are DDL defaults: with `ddl_defaults = "own"` their
/// difference is intended.
const DDL_VARIABLES: &[&str] = &[
    "character_set_server",
    "collation_server",
    "default_storage_engine",
];

/// One difference between the two servers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftItem {
    /// `variable` or `table`.
    pub kind: &'static str,
    /// The variable name, or `db.table` (with the differing part).
    pub name: String,
    pub source: String,
    pub destination: String,
    /// Declared in `[mirror] intended_drift` (or implied by `ddl_defaults = "own"`).
    pub intended: bool,
    /// Blocks guarded authority moves (can make data differ and not intended).
    pub blocking: bool,
}

/// The last drift check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DriftReport {
    /// RFC 3339 time of the check; `None` before the first one finished.
    pub checked_at: Option<String>,
    pub items: Vec<DriftItem>,
    /// Why the check could not run (a side unreachable): no items then.
    pub error: Option<String>,
}

impl DriftReport {
    /// The blocking items as guard blockers, in words.
    pub fn blockers(&self) -> Vec<String> {
        self.items
            .iter()
            .filter(|i| i.blocking)
            .map(|i| {
                format!(
                    "no server drift in {} {} (source: {}; destination: {}) — align the servers, or declare it in [mirror] intended_drift",
                    i.kind, i.name, i.source, i.destination
                )
            })
            .collect()
    }
}

/// Runs drift checks and keeps the last report.
pub struct DriftMonitor {
    backends: [BackendConfig; 2],
    mirror: MirrorConfig,
    timeout: Duration,
    last: Mutex<Option<(Instant, DriftReport)>>,
    /// The last report, readable without waiting (the guard runs under the scheduler's lock).
    snapshot: std::sync::Mutex<DriftReport>,
}

impl DriftMonitor {
    pub fn new(cfg: &Config) -> Self {
        DriftMonitor {
            backends: [cfg.source.clone(), cfg.destination.clone()],
            mirror: cfg.mirror.clone(),
            timeout: Duration::from_millis(cfg.limits.connect_timeout_ms.max(1000)),
            last: Mutex::new(None),
            snapshot: std::sync::Mutex::new(DriftReport::default()),
        }
    }

    /// The last report (default before the first check).
    pub fn snapshot(&self) -> DriftReport {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Check again if the last check is older than `max_age`; concurrent
    /// callers wait for one check. Sets the drift gauges.
    pub async fn check(&self, max_age: Duration) -> DriftReport {
        let mut last = self.last.lock().await;
        if let Some((at, r)) = last.as_ref() {
            if at.elapsed() <= max_age {
                return r.clone();
            }
        }
        let report = match tokio::time::timeout(self.timeout * 4, self.compare()).await {
            Ok(Ok(items)) => DriftReport {
                checked_at: Some(super::status::now_rfc3339()),
                items,
                error: None,
            },
            Ok(Err(e)) => failed(e),
            Err(_) => failed(format!(
                "no answer within {} ms",
                (self.timeout * 4).as_millis()
            )),
        };
        set_gauges(&report);
        if let Ok(mut s) = self.snapshot.lock() {
            *s = report.clone();
        }
        *last = Some((Instant::now(), report.clone()));
        report
    }

    async fn compare(&self) -> Result<Vec<DriftItem>, String> {
        let (s, d) = tokio::try_join!(self.read(Side::Source), self.read(Side::Destination))?;
        let mut items = Vec::new();
        for (name, blocking) in VARIABLES {
            let (a, b) = (s.vars.get(*name), d.vars.get(*name));
            if a != b {
                let intended = self.mirror.is_intended(name)
                    || (self.mirror.ddl_defaults == DdlDefaults::Own
                        && DDL_VARIABLES.contains(name));
                items.push(item(
                    "variable",
                    name.to_string(),
                    a,
                    b,
                    intended,
                    *blocking,
                ));
            }
        }
        for (table, sdef) in &s.tables {
            let Some(ddef) = d.tables.get(table) else {
                continue;
            };
            for (part, (a, b)) in ["options", "columns", "keys"]
                .iter()
                .zip(sdef.iter().zip(ddef))
            {
                if a == b {
                    continue;
                }
                let own_charset = self.mirror.ddl_defaults == DdlDefaults::Own
                    && strip_collations(a) == strip_collations(b);
                let intended = own_charset || self.mirror.is_intended(&format!("table:{table}"));
                items.push(item(
                    "table",
                    format!("{table} {part}"),
                    Some(a),
                    Some(b),
                    intended,
                    true,
                ));
            }
        }
        Ok(items)
    }

    async fn read(&self, side: Side) -> Result<SideFacts, String> {
        let cfg = &self.backends[side.index()];
        let opts = OptsBuilder::default()
            .ip_or_hostname(cfg.host.clone())
            .tcp_port(cfg.port)
            .user(Some(cfg.user.clone()))
            .pass(Some(cfg.password.clone()))
            .prefer_socket(false);
        let mut c = Conn::new(opts).await.map_err(|e| format!("{side}: {e}"))?;
        let r = read_facts(&mut c, cfg.database.as_deref()).await;
        let _ = c.disconnect().await;
        r.map_err(|e| format!("{side}: {e}"))
    }
}

fn failed(error: String) -> DriftReport {
    tracing::warn!(%error, "drift check failed");
    DriftReport {
        checked_at: Some(super::status::now_rfc3339()),
        items: Vec::new(),
        error: Some(error),
    }
}

fn item(
    kind: &'static str,
    name: String,
    a: Option<&String>,
    b: Option<&String>,
    intended: bool,
    can_differ: bool,
) -> DriftItem {
    let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(absent)".into());
    DriftItem {
        kind,
        name,
        source: show(a),
        destination: show(b),
        intended,
        blocking: can_differ && !intended,
    }
}

/// Remove `collation=…` / per-column collation words for the `own` comparison.
fn strip_collations(def: &str) -> String {
    def.split([' ', ','])
        .filter(|w| !is_collation(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_collation(w: &str) -> bool {
    let w = w.trim_start_matches("collation=");
    ["_ci", "_cs", "_bin", "_general", "_unicode"]
        .iter()
        .any(|s| w.contains(s))
}

fn set_gauges(r: &DriftReport) {
    for kind in crate::metric_catalog::DRIFT_KINDS {
        let n = r.items.iter().filter(|i| i.kind == *kind).count();
        ::metrics::gauge!("cutover_drift", "kind" => *kind).set(n as f64);
    }
    let blocking = r.items.iter().filter(|i| i.blocking).count();
    ::metrics::gauge!("cutover_drift_blocking").set(blocking as f64);
}

struct SideFacts {
    vars: BTreeMap<String, String>,
    /// `db.table` → [options, columns, keys].
    tables: BTreeMap<String, [String; 3]>,
}

async fn read_facts(c: &mut Conn, db: Option<&str>) -> Result<SideFacts, mysql_async::Error> {
    let cols: Vec<String> = VARIABLES
        .iter()
        .map(|(v, _)| match *v {
            "time_zone" => "IF(@@global.time_zone = 'SYSTEM', CONCAT('SYSTEM (', @@system_time_zone, ')'), @@global.time_zone)".to_string(),
            "version" => "@@version".to_string(),
            "lower_case_table_names" | "innodb_autoinc_lock_mode" => format!("@@{v}"),
            _ => format!("@@global.{v}"),
        })
        .map(|e| format!("CAST({e} AS CHAR)"))
        .collect();
    let row: Option<mysql_async::Row> =
        c.query_first(format!("SELECT {}", cols.join(", "))).await?;
    let mut vars = BTreeMap::new();
    if let Some(row) = row {
        for (i, (name, _)) in VARIABLES.iter().enumerate() {
            let v: Option<String> = row.get_opt(i).and_then(|r| r.ok()).flatten();
            vars.insert(name.to_string(), v.unwrap_or_else(|| "NULL".into()));
        }
    }
    let tables = match db {
        Some(db) => read_tables(c, db).await?,
        None => BTreeMap::new(),
    };
    Ok(SideFacts { vars, tables })
}

/// Each base table of `db`: table options, columns (type, charset, collation,
/// nullability), keys — as comparable text. Keyed by `table` name only: the
/// two sides' configured databases are the migrated pair.
async fn read_tables(
    c: &mut Conn,
    db: &str,
) -> Result<BTreeMap<String, [String; 3]>, mysql_async::Error> {
    c.query_drop("SET SESSION group_concat_max_len = 1048576")
        .await?;
    let opts: Vec<(String, Option<String>, Option<String>)> = c
        .exec(
            "SELECT TABLE_NAME, TABLE_COLLATION, ENGINE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
            (db,),
        )
        .await?;
    let columns: Vec<(String, String)> = c
        .exec(
            "SELECT TABLE_NAME, GROUP_CONCAT(CONCAT_WS(' ', COLUMN_NAME, COLUMN_TYPE, \
             IFNULL(COLLATION_NAME, '-'), IS_NULLABLE) ORDER BY ORDINAL_POSITION SEPARATOR ', ') \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? GROUP BY TABLE_NAME",
            (db,),
        )
        .await?;
    let keys: Vec<(String, String)> = c
        .exec(
            "SELECT TABLE_NAME, GROUP_CONCAT(CONCAT(INDEX_NAME, IF(NON_UNIQUE = 0, ' unique', ''), ' ', \
             COLUMN_NAME) ORDER BY INDEX_NAME, SEQ_IN_INDEX SEPARATOR ', ') \
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? GROUP BY TABLE_NAME",
            (db,),
        )
        .await?;
    let mut out = BTreeMap::new();
    let cols: BTreeMap<_, _> = columns.into_iter().collect();
    let keys: BTreeMap<_, _> = keys.into_iter().collect();
    for (t, collation, engine) in opts {
        let o = format!(
            "collation={} engine={}",
            collation.unwrap_or_default(),
            engine.unwrap_or_default()
        );
        let c = cols.get(&t).cloned().unwrap_or_default();
        let k = keys.get(&t).cloned().unwrap_or_default();
        out.insert(t, [o, c, k]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blockers_name_only_blocking_items() {
        let r = DriftReport {
            checked_at: None,
            error: None,
            items: vec![
                item(
                    "variable",
                    "time_zone".into(),
                    Some(&"+02:00".into()),
                    Some(&"+00:00".into()),
                    false,
                    true,
                ),
                item(
                    "variable",
                    "version".into(),
                    Some(&"10.11".into()),
                    Some(&"8.0".into()),
                    false,
                    false,
                ),
                item(
                    "variable",
                    "sql_mode".into(),
                    Some(&"A".into()),
                    Some(&"".into()),
                    true,
                    true,
                ),
            ],
        };
        let b = r.blockers();
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(
            b[0].contains("variable time_zone") && b[0].contains("+02:00"),
            "{b:?}"
        );
    }

    #[test]
    fn collation_only_differences_are_recognised() {
        assert_eq!(
            strip_collations("collation=latin1_swedish_ci engine=InnoDB"),
            strip_collations("collation=utf8mb4_general_ci engine=InnoDB")
        );
        assert_ne!(
            strip_collations("id int(11) - NO, s varchar(10) latin1_swedish_ci YES"),
            strip_collations("id bigint(20) - NO, s varchar(10) utf8mb4_general_ci YES")
        );
    }
}
