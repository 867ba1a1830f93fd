//! DDL defaults on the mirror (issue #19 item 2): a mirrored
//! `CREATE TABLE … (…)` that relies on its database's default character set
//! and collation gets the **primary's** values written out explicitly
//! (`DEFAULT CHARSET=… COLLATE=…` after the column list), so both sides
//! define the same table even when their databases' defaults differ.
//!
//! The engine default (`default_storage_engine`) and CREATE DATABASE's
//! defaults (`character_set_server`, `collation_server`) are session
//! variables and already aligned by `align`. Applies only with
//! `[mirror] ddl_defaults = "primary"` (the default).
//!
//! The primary's database defaults are read on a separate, short-lived
//! connection (never the client's session connection, whose ROW_COUNT(),
//! warnings and FOUND_ROWS() the client may read next), from
//! information_schema.SCHEMATA (MySQL Reference Manual, "The INFORMATION_SCHEMA
//! SCHEMATA Table").

use std::borrow::Cow;
use std::sync::Arc;

use tracing::{debug, warn};

use super::backends::Backends;
use crate::backend::{Backend, ConnectParams};
use crate::classify::Class;
use crate::command::Com;
use crate::config::DdlDefaults;
use crate::lexer::{Lexer, Tok};
use crate::pattern::Side;
use crate::shared::Shared;

/// Where a `CREATE TABLE` with a column list and no explicit charset or
/// collation can take table options.
#[derive(Debug, PartialEq, Eq)]
pub struct CreateTable {
    /// The qualifier of the table name, if written (`db`.t).
    pub schema: Option<String>,
    /// Byte offset in the SQL text just past the column list's `)`.
    pub insert_at: usize,
}

/// What the rewrite needs from the session, owned (the session's
/// `Backends` is not `Sync`).
pub(super) struct DdlContext {
    shared: Arc<Shared>,
    params: ConnectParams,
    database: Option<String>,
}

/// The context for mirroring a statement of `class`; `None` when no rewrite
/// can apply (not DDL, or `ddl_defaults = "own"`).
pub(super) fn context(up: &Backends, class: Class) -> Option<DdlContext> {
    (class == Class::Ddl && up.shared().config.mirror.ddl_defaults == DdlDefaults::Primary).then(
        || DdlContext {
            shared: up.shared().clone(),
            params: up.connect_params(),
            database: up.state.database.clone(),
        },
    )
}

/// The mirror's payload for `payload` (a command the primary ran): a CREATE
/// TABLE that relies on database defaults gets the primary's written out.
/// Anything else, or a failed lookup (logged and counted), is sent as is.
pub(super) async fn for_mirror<'a>(
    ctx: DdlContext,
    mirror: Side,
    payload: Cow<'a, [u8]>,
) -> Cow<'a, [u8]> {
    if payload.first() != Some(&(Com::COM_QUERY as u8)) {
        return payload;
    }
    let Some(target) = create_table(&payload[1..]) else {
        return payload;
    };
    let Some(schema) = target.schema.clone().or_else(|| ctx.database.clone()) else {
        return payload;
    };
    match primary_defaults(&ctx, mirror.other(), &schema).await {
        Ok(Some((charset, collation))) => {
            let at = 1 + target.insert_at;
            let mut out = Vec::with_capacity(payload.len() + 64);
            out.extend_from_slice(&payload[..at]);
            out.extend_from_slice(
                format!(" DEFAULT CHARSET={charset} COLLATE={collation}").as_bytes(),
            );
            out.extend_from_slice(&payload[at..]);
            debug!(%mirror, %schema, %charset, %collation, "CREATE TABLE made explicit on the mirror");
            Cow::Owned(out)
        }
        Ok(None) => payload,
        Err(e) => {
            warn!(%mirror, %schema, "DDL defaults not aligned: {e}");
            metrics::counter!("cutover_session_align_failures_total", "backend" => mirror.as_str())
                .increment(1);
            payload
        }
    }
}

/// The primary's default charset and collation of `schema`, read on a
/// connection of its own. `Ok(None)`: no such schema or an unsafe name.
async fn primary_defaults(
    ctx: &DdlContext,
    primary: Side,
    schema: &str,
) -> Result<Option<(String, String)>, String> {
    if schema.contains(['\'', '\\']) {
        return Ok(None);
    }
    let mut params = ctx.params.clone();
    params.database = None;
    let cfg = ctx.shared.backend_config(primary);
    let (mut conn, _) = Backend::<()>::connect(cfg, primary, &params)
        .await
        .map_err(|e| e.to_string())?;
    let sql = format!(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
         FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{schema}'"
    );
    let row = conn.query_row(&sql).await;
    conn.quit().await;
    match row.map_err(|e| e.to_string())? {
        Ok(Some(r)) => match (r.first().cloned().flatten(), r.get(1).cloned().flatten()) {
            (Some(cs), Some(co)) if is_name(&cs) && is_name(&co) => Ok(Some((cs, co))),
            _ => Ok(None),
        },
        Ok(None) => Ok(None),
        Err(e) => Err(e.message),
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn ident(t: Tok<'_>) -> Option<String> {
    match t {
        Tok::Word(w) | Tok::Quoted(b'`', w) => Some(String::from_utf8_lossy(w).replace("``", "`")),
        _ => None,
    }
}

/// `CREATE [OR REPLACE] [TEMPORARY] TABLE [IF NOT EXISTS] [db.]t (…) …`
/// without CHARSET / CHARACTER SET / COLLATE anywhere after the column
/// list; `None` for anything else (LIKE, no column list, several statements).
pub fn create_table(sql: &[u8]) -> Option<CreateTable> {
    let mut lx = Lexer::new(sql);
    let mut next = || lx.next().map(|(t, _)| t);
    if !next()?.is(b"CREATE") {
        return None;
    }
    let mut t = next()?;
    if t.is(b"OR") {
        next().filter(|t| t.is(b"REPLACE"))?;
        t = next()?;
    }
    if t.is(b"TEMPORARY") {
        t = next()?;
    }
    if !t.is(b"TABLE") {
        return None;
    }
    let mut t = next()?;
    if t.is(b"IF") {
        next().filter(|t| t.is(b"NOT"))?;
        next().filter(|t| t.is(b"EXISTS"))?;
        t = next()?;
    }
    let first = ident(t)?;
    let (schema, open) = match next()? {
        Tok::Punct(b'.') => {
            ident(next()?)?;
            (Some(first), next()?)
        }
        other => (None, other),
    };
    if open != Tok::Punct(b'(') || next().is_some_and(|t| t.is(b"LIKE")) {
        return None;
    }
    let insert_at = close_paren(&mut lx)?;
    while let Some((t, _)) = lx.next() {
        if t == Tok::Semi || t.is(b"CHARSET") || t.is(b"CHARACTER") || t.is(b"COLLATE") {
            return None;
        }
    }
    Some(CreateTable { schema, insert_at })
}

/// Consume tokens up to the `)` closing a list whose `(` and first token were
/// read; the offset just past it.
fn close_paren(lx: &mut Lexer<'_>) -> Option<usize> {
    let mut depth = 1usize;
    while let Some((t, at)) = lx.next() {
        match t {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            Tok::Semi => return None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(sql: &str) -> Option<(Option<String>, String)> {
        create_table(sql.as_bytes()).map(|c| (c.schema, sql[c.insert_at..].to_string()))
    }

    #[test]
    fn finds_the_end_of_the_column_list() {
        assert_eq!(
            insert("CREATE TABLE mig.x (id INT PRIMARY KEY, s VARCHAR(10))"),
            Some((Some("mig".into()), String::new()))
        );
        assert_eq!(
            insert("create table if not exists `t` (a DECIMAL(5,2), KEY k (a)) ENGINE=InnoDB"),
            Some((None, " ENGINE=InnoDB".into()))
        );
        assert_eq!(
            insert("CREATE OR REPLACE TEMPORARY TABLE t (a INT) AS SELECT 1 AS a"),
            Some((None, " AS SELECT 1 AS a".into()))
        );
    }

    #[test]
    fn explicit_or_copied_definitions_are_left_alone() {
        for sql in [
            "CREATE TABLE t (a INT) DEFAULT CHARSET=utf8mb4",
            "CREATE TABLE t (a INT) CHARACTER SET latin1",
            "CREATE TABLE t (a INT) COLLATE utf8mb4_bin",
            "CREATE TABLE t LIKE u",
            "CREATE TABLE t (LIKE u)",
            "CREATE TABLE t SELECT 1",
            "CREATE TABLE t (a INT); DROP TABLE u",
            "CREATE DATABASE d",
            "CREATE INDEX i ON t (a)",
        ] {
            assert_eq!(create_table(sql.as_bytes()), None, "{sql}");
        }
    }
}
