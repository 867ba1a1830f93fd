//! Session alignment (issue #19): every backend connection of a session
//! interprets statement text with the same session semantics.
//!
//! The first backend connection a session opens (the primary, at login,
//! before any client statement — so the read is invisible to the client) is
//! the session's **reference**: its effective values of the variables that
//! change what a statement stores or how it parses are read with one query.
//! Every connection opened later (the mirror; a reconnect; the other side
//! after an authority switch) gets them with one `SET SESSION …` before the
//! client's own SETs are replayed on top. The reference is never re-read, so a
//! session's `@@time_zone` and `NOW()` stay the same across an authority
//! switch; new sessions take the then-primary side's values.
//!
//! Variables (MySQL "Server System Variables" / MariaDB "Server System
//! Variables" pages, all session-scoped on MySQL 5.7+/8.0 and MariaDB 10.x):
//! [`SEMANTIC`] always; [`DDL_DEFAULTS`] only with
//! `[mirror] ddl_defaults = "primary"` (the default). A `time_zone` of
//! `SYSTEM` is sent as the reference's current UTC offset (`+HH:MM`): the
//! other host's SYSTEM zone may differ.

use tracing::{debug, warn};

use super::backends::Conn;
use crate::command;
use crate::config::DdlDefaults;
use crate::error::BackendError;
use crate::pattern::Side;
use crate::response::ResponseKind;

/// Variables that change what a statement stores or how it parses. Charset
/// before collation: setting a charset resets its collation.
pub const SEMANTIC: &[&str] = &[
    "sql_mode",
    "time_zone",
    "character_set_client",
    "character_set_connection",
    "collation_connection",
    "character_set_results",
    "div_precision_increment",
    "explicit_defaults_for_timestamp",
    "auto_increment_increment",
    "auto_increment_offset",
];

/// Variables that give DDL its implicit defaults (CREATE DATABASE charset,
/// table engine); aligned only when `ddl_defaults = "primary"`.
pub const DDL_DEFAULTS: &[&str] = &[
    "character_set_server",
    "collation_server",
    "character_set_database",
    "collation_database",
    "default_storage_engine",
];

/// The session's reference values (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Alignment {
    reference: Option<Reference>,
}

#[derive(Debug)]
struct Reference {
    side: Side,
    /// `SET SESSION …` giving a connection the reference values; `None` when
    /// the reference could not be read (logged, counted once).
    set_sql: Option<String>,
}

impl Alignment {
    /// Hook for a freshly logged-in connection, before session-state replay:
    /// the first one becomes the reference, later ones are aligned to it.
    ///
    /// # Errors
    /// A broken connection. A server refusing the read or a SET is logged
    /// and counted (`cutover_session_align_failures_total`), not an error.
    pub async fn on_open(&mut self, conn: &mut Conn, ddl: DdlDefaults) -> Result<(), BackendError> {
        match &self.reference {
            None => {
                let set_sql = read_reference(conn, ddl).await?;
                self.reference = Some(Reference {
                    side: conn.side,
                    set_sql,
                });
                Ok(())
            }
            Some(r) => match &r.set_sql {
                Some(sql) => apply(conn, sql).await,
                None => Ok(()),
            },
        }
    }

    /// COM_RESET_CONNECTION put every open connection back to its server's
    /// defaults: queue the reference values again (sent with the next
    /// command, answers consumed by the proxy).
    pub fn after_reset<'a>(&self, conns: impl Iterator<Item = &'a mut Conn>) {
        let Some(Reference {
            set_sql: Some(sql),
            side,
        }) = &self.reference
        else {
            return;
        };
        for conn in conns.filter(|c| c.side != *side) {
            conn.queue_silent(&command::query(sql.as_bytes()));
        }
    }
}

fn variables(ddl: DdlDefaults) -> Vec<&'static str> {
    let mut v = SEMANTIC.to_vec();
    if ddl == DdlDefaults::Primary {
        v.extend_from_slice(DDL_DEFAULTS);
    }
    v
}

/// The one query reading the reference values (plus the current UTC offset
/// in minutes, for `time_zone = SYSTEM`).
fn read_sql(vars: &[&str]) -> String {
    let cols: Vec<String> = vars.iter().map(|v| format!("@@session.{v}")).collect();
    format!(
        "SELECT {}, TIMESTAMPDIFF(MINUTE, UTC_TIMESTAMP(), NOW())",
        cols.join(", ")
    )
}

async fn read_reference(conn: &mut Conn, ddl: DdlDefaults) -> Result<Option<String>, BackendError> {
    let vars = variables(ddl);
    let row = match conn.query_row(&read_sql(&vars)).await? {
        Ok(Some(row)) if row.len() == vars.len() + 1 => row,
        Ok(_) => {
            failed(
                conn.side,
                "reading the session's reference values returned no row",
            );
            return Ok(None);
        }
        Err(e) => {
            failed(
                conn.side,
                &format!("reading the session's reference values: {}", e.message),
            );
            return Ok(None);
        }
    };
    let offset = row[vars.len()]
        .as_deref()
        .and_then(|m| m.parse::<i64>().ok());
    let sql = set_sql(&vars, &row[..vars.len()], offset);
    debug!(side = %conn.side, "session reference values read");
    Ok(sql)
}

/// `SET SESSION a=…, b=…` for the values read; values that cannot be written
/// back safely (a quote or backslash) are left out with a warning.
pub fn set_sql(
    vars: &[&str],
    values: &[Option<String>],
    utc_offset_minutes: Option<i64>,
) -> Option<String> {
    let mut parts = Vec::with_capacity(vars.len());
    for (var, value) in vars.iter().zip(values) {
        let literal = match value.as_deref() {
            None => "NULL".to_string(),
            Some(v) if *var == "time_zone" && v.eq_ignore_ascii_case("SYSTEM") => {
                match utc_offset_minutes {
                    Some(m) => format!("'{}'", offset_literal(m)),
                    None => continue,
                }
            }
            Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v.to_string(),
            Some(v) if v.contains(['\'', '\\']) => {
                warn!(
                    variable = var,
                    "session value not aligned: it contains a quote or backslash"
                );
                continue;
            }
            Some(v) => format!("'{v}'"),
        };
        parts.push(format!("{var}={literal}"));
    }
    (!parts.is_empty()).then(|| format!("SET SESSION {}", parts.join(", ")))
}

/// A UTC offset in minutes as MySQL's `time_zone` literal: `+02:00`, `-05:30`.
pub fn offset_literal(minutes: i64) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.abs();
    format!("{sign}{:02}:{:02}", m / 60, m % 60)
}

/// Give `conn` the reference values: one SET; if the server refuses it
/// (a variable not settable there), each assignment alone so the others
/// still apply.
async fn apply(conn: &mut Conn, sql: &str) -> Result<(), BackendError> {
    let s = conn
        .run(&command::query(sql.as_bytes()), ResponseKind::Query)
        .await?;
    let Some(err) = s.err else {
        return Ok(());
    };
    debug!(side = %conn.side, code = err.code, "aligning in one SET failed: {}", err.message);
    let body = sql.strip_prefix("SET SESSION ").unwrap_or(sql);
    for part in split_assignments(body) {
        let one = format!("SET SESSION {part}");
        let s = conn
            .run(&command::query(one.as_bytes()), ResponseKind::Query)
            .await?;
        if let Some(err) = s.err {
            failed(conn.side, &format!("{one}: {}", err.message));
        }
    }
    Ok(())
}

/// Split `a='x,y', b=2` at commas outside quotes.
fn split_assignments(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in body.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            ',' if !quoted => {
                out.push(body[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(body[start..].trim());
    out
}

fn failed(side: Side, what: &str) {
    warn!(%side, "session alignment: {what}");
    metrics::counter!("cutover_session_align_failures_total", "backend" => side.as_str())
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_sql_quotes_numbers_nulls_and_system_zone() {
        let vars = [
            "time_zone",
            "sql_mode",
            "auto_increment_increment",
            "character_set_results",
        ];
        let vals = [
            Some("SYSTEM".to_string()),
            Some("STRICT_TRANS_TABLES,NO_ZERO_DATE".to_string()),
            Some("2".to_string()),
            None,
        ];
        assert_eq!(
            set_sql(&vars, &vals, Some(-330)).unwrap(),
            "SET SESSION time_zone='-05:30', sql_mode='STRICT_TRANS_TABLES,NO_ZERO_DATE', \
             auto_increment_increment=2, character_set_results=NULL"
        );
    }

    #[test]
    fn unsafe_values_are_left_out() {
        let vars = ["time_zone", "sql_mode"];
        let vals = [Some("it's".to_string()), Some(String::new())];
        assert_eq!(
            set_sql(&vars, &vals, None).unwrap(),
            "SET SESSION sql_mode=''"
        );
        assert_eq!(set_sql(&vars[..1], &vals[..1], None), None);
    }

    #[test]
    fn assignments_split_outside_quotes() {
        assert_eq!(
            split_assignments("sql_mode='A,B', time_zone='+02:00', x=1"),
            vec!["sql_mode='A,B'", "time_zone='+02:00'", "x=1"]
        );
        assert_eq!(offset_literal(120), "+02:00");
        assert_eq!(offset_literal(0), "+00:00");
    }

    #[test]
    fn read_sql_reads_every_variable_and_the_offset_in_one_query() {
        let vars = variables(DdlDefaults::Primary);
        let sql = read_sql(&vars);
        assert!(
            sql.contains("@@session.time_zone") && sql.contains("@@session.default_storage_engine")
        );
        assert!(!variables(DdlDefaults::Own).contains(&"character_set_server"));
    }
}
