//! The session's temporary tables, and giving them to a mirror connection
//! opened later (a pattern change from `src_only`, a mirror reconnect).
//!
//! A temporary table lives in one connection. A statement mirrored to a
//! connection opened after the table was created (`INSERT INTO perm SELECT
//! … FROM staging`) would fail there. So cutover follows `CREATE
//! TEMPORARY TABLE` / `DROP [TEMPORARY] TABLE` / `ALTER TABLE … RENAME` /
//! `RENAME TABLE` that succeed, and before the first statement mirrored to
//! a freshly opened connection it recreates each table there: `SHOW CREATE
//! TABLE` and `SELECT *` on the session's authoritative connection (the only
//! one that sees the table), `CREATE TEMPORARY TABLE` and batched `INSERT`s
//! on the mirror. Values travel as literals of their type: numbers as text,
//! everything else as `_<character_set_results> X'…'` (binary: `X'…'`).
//!
//! Bounded by `[mirror] temporary_table_max_bytes` per table: a larger table
//! is not copied; that is counted as an unsafe statement
//! (`temporary_table_not_copied`), and mirrored statements that need it fail
//! there and are counted as failures (each queued for a re-check).

use tracing::{info, warn};

use super::Session;
use crate::backend::{Captured, ColumnMeta};
use crate::command;
use crate::lexer::{Lexer, Tok};
use crate::pattern::Side;
use crate::response::ResponseKind;

/// Most temporary tables followed per session.
const MAX_TABLES: usize = 256;
/// Largest INSERT sent while copying (bytes of SQL).
const BATCH_BYTES: usize = 1 << 20;

/// The session's temporary tables, as (database, name).
#[derive(Debug, Default)]
pub(super) struct TempTables {
    tables: Vec<(String, String)>,
}

impl TempTables {
    /// Follow a DDL statement that succeeded on the authoritative side
    /// (`db`: the session's default database).
    pub fn observe(&mut self, sql: &[u8], db: Option<&str>) {
        let toks: Vec<Tok<'_>> = {
            let mut lx = Lexer::new(sql);
            std::iter::from_fn(|| lx.next().map(|(t, _)| t))
                .take(64)
                .collect()
        };
        let word = |i: usize| toks.get(i).copied();
        let is = |i: usize, w: &[u8]| word(i).is_some_and(|t| t.is(w));
        if is(0, b"CREATE") {
            let mut i = 1;
            if is(i, b"OR") && is(i + 1, b"REPLACE") {
                i += 2;
            }
            if !(is(i, b"TEMPORARY") && is(i + 1, b"TABLE")) {
                return;
            }
            i += 2;
            if is(i, b"IF") {
                i += 3;
            }
            if let Some((name, _)) = name_at(&toks, i, db) {
                if !self.tables.contains(&name) && self.tables.len() < MAX_TABLES {
                    self.tables.push(name);
                }
            }
        } else if is(0, b"DROP") {
            let mut i = if is(1, b"TEMPORARY") { 3 } else { 2 };
            if !is(i - 1, b"TABLE") && !is(i - 1, b"TABLES") {
                return;
            }
            if is(i, b"IF") {
                i += 2;
            }
            while let Some((name, next)) = name_at(&toks, i, db) {
                self.tables.retain(|t| *t != name);
                if word(next) != Some(Tok::Punct(b',')) {
                    break;
                }
                i = next + 1;
            }
        } else if is(0, b"RENAME") && is(1, b"TABLE") {
            self.rename(&toks, 2, db);
        } else if is(0, b"ALTER") && is(1, b"TABLE") {
            if let Some((from, next)) = name_at(&toks, 2, db) {
                if is(next, b"RENAME") {
                    let to_at = if is(next + 1, b"TO") || is(next + 1, b"AS") {
                        next + 2
                    } else {
                        next + 1
                    };
                    if let Some((to, _)) = name_at(&toks, to_at, db) {
                        self.replace(&from, to);
                    }
                }
            }
        }
    }

    /// `RENAME TABLE a TO b, c TO d` from token `i`.
    fn rename(&mut self, toks: &[Tok<'_>], mut i: usize, db: Option<&str>) {
        while let Some((from, next)) = name_at(toks, i, db) {
            if !toks.get(next).is_some_and(|t| t.is(b"TO")) {
                return;
            }
            let Some((to, after)) = name_at(toks, next + 1, db) else {
                return;
            };
            self.replace(&from, to);
            if toks.get(after) != Some(&Tok::Punct(b',')) {
                return;
            }
            i = after + 1;
        }
    }

    fn replace(&mut self, from: &(String, String), to: (String, String)) {
        if let Some(t) = self.tables.iter_mut().find(|t| *t == from) {
            *t = to;
        }
    }

    /// COM_RESET_CONNECTION / COM_CHANGE_USER: the tables are gone.
    pub fn clear(&mut self) {
        self.tables.clear();
    }

    /// Whether the session has temporary tables.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

/// The table name at token `i` (`name` or `db.name`), with the index of the
/// token after it.
fn name_at(toks: &[Tok<'_>], i: usize, db: Option<&str>) -> Option<((String, String), usize)> {
    let part = |t: Option<&Tok<'_>>| match t {
        Some(Tok::Word(w) | Tok::Quoted(b'`', w)) => {
            Some(String::from_utf8_lossy(w).replace("``", "`"))
        }
        _ => None,
    };
    let first = part(toks.get(i))?;
    if toks.get(i + 1) == Some(&Tok::Punct(b'.')) {
        let second = part(toks.get(i + 2))?;
        return Some(((first, second), i + 3));
    }
    Some(((db?.to_string(), first), i + 1))
}

fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

impl Session {
    /// Before a statement mirrored to `side` runs on the authoritative
    /// side: if `side` has no connection yet and the session has temporary
    /// tables, open it and recreate them there (see the module docs).
    /// Outside transactions only; a side that cannot be opened is left to
    /// the mirror's own accounting.
    pub(super) async fn prepare_mirror(&mut self, side: Side) {
        if self.temps.is_empty()
            || self.backends.is_open(side)
            || self.gate.in_transaction()
            || self.gate.mirror_suspended()
            || self.shared.backoff[side.index()].check().is_err()
            || self.backends.ensure(side).await.is_err()
        {
            return;
        }
        let primary = side.other();
        let limit = self.shared.config.mirror.temporary_table_max_bytes;
        let charset = match self
            .primary_rows(primary, "SELECT @@character_set_results", 4096)
            .await
        {
            Some(c) => c
                .rows
                .first()
                .and_then(|r| r[0].clone())
                .map(|v| String::from_utf8_lossy(&v).into_owned()),
            None => return,
        };
        for (db, name) in self.temps.tables.clone() {
            let copied = self
                .copy_temp(primary, side, &db, &name, charset.as_deref(), limit)
                .await;
            if !copied {
                let table = Some(format!("{db}.{name}"));
                self.secondary
                    .count_unsafe("temporary_table_not_copied", table, "");
            }
        }
    }

    /// A text query on the authoritative connection (`None`: it failed).
    async fn primary_rows(&mut self, side: Side, sql: &str, limit: usize) -> Option<Captured> {
        let b = self.backends.get(side)?;
        match b.query_rows(&command::query(sql), limit).await {
            Ok(c) if c.err.is_none() => Some(c),
            Ok(c) => {
                warn!(%side, err = ?c.err, sql, "reading a temporary table failed");
                None
            }
            Err(e) => {
                warn!(%side, sql, "reading a temporary table failed: {e}");
                None
            }
        }
    }

    /// Recreate one temporary table on `to`; `false` when it was not.
    async fn copy_temp(
        &mut self,
        from: Side,
        to: Side,
        db: &str,
        name: &str,
        charset: Option<&str>,
        limit: usize,
    ) -> bool {
        let qualified = format!("{}.{}", ident(db), ident(name));
        let Some(def) = self
            .primary_rows(from, &format!("SHOW CREATE TABLE {qualified}"), 1 << 20)
            .await
        else {
            return false;
        };
        let Some(create) = def.rows.first().and_then(|r| r.get(1).cloned().flatten()) else {
            return false;
        };
        let Some(create) = qualify_create(&String::from_utf8_lossy(&create), &qualified) else {
            return false;
        };
        let Some(rows) = self
            .primary_rows(from, &format!("SELECT * FROM {qualified}"), limit)
            .await
        else {
            return false;
        };
        if rows.truncated {
            warn!(table = %qualified, limit, "temporary table larger than [mirror] temporary_table_max_bytes; not copied to the mirror");
            return false;
        }
        let mut statements = vec![create];
        statements.extend(inserts(&qualified, &rows, charset));
        let Some(b) = self.backends.get(to) else {
            return false;
        };
        for sql in &statements {
            match b.run(&command::query(sql), ResponseKind::Query).await {
                Ok(s) if s.err.is_none() => {}
                Ok(s) => {
                    warn!(%to, table = %qualified, err = ?s.err, "recreating a temporary table on the mirror failed");
                    return false;
                }
                Err(e) => {
                    warn!(%to, table = %qualified, "recreating a temporary table on the mirror failed: {e}");
                    return false;
                }
            }
        }
        info!(%to, table = %qualified, rows = rows.rows.len(), "temporary table recreated on the mirror connection");
        true
    }
}

/// `CREATE TEMPORARY TABLE `x` (…` → the same with the qualified name.
fn qualify_create(create: &str, qualified: &str) -> Option<String> {
    let head = "CREATE TEMPORARY TABLE ";
    let rest = create.strip_prefix(head)?;
    let mut lx = Lexer::new(rest.as_bytes());
    lx.next()?;
    Some(format!("{head}{qualified}{}", &rest[lx.pos..]))
}

/// MySQL types sent as bare numbers in text rows: DECIMAL, TINY, SHORT,
/// LONG, FLOAT, DOUBLE, LONGLONG, INT24, YEAR, NEWDECIMAL.
const NUMERIC: [u8; 10] = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x08, 0x09, 0x0D, 0xF6];

/// One value as an SQL literal of its type.
fn literal(cell: &Option<Vec<u8>>, col: &ColumnMeta, charset: Option<&str>) -> String {
    let Some(v) = cell else {
        return "NULL".into();
    };
    if NUMERIC.contains(&col.column_type) {
        return String::from_utf8_lossy(v).into_owned();
    }
    let hex: String = v.iter().map(|b| format!("{b:02X}")).collect();
    match charset {
        Some(cs) if col.charset != 63 => format!("_{cs} X'{hex}'"),
        _ => format!("X'{hex}'"),
    }
}

/// Batched `INSERT INTO t VALUES (…), (…)` statements for `rows`.
fn inserts(table: &str, rows: &Captured, charset: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut sql = String::new();
    for row in &rows.rows {
        let values: Vec<String> = row
            .iter()
            .zip(&rows.columns)
            .map(|(c, m)| literal(c, m, charset))
            .collect();
        let tuple = format!("({})", values.join(", "));
        if !sql.is_empty() && sql.len() + tuple.len() > BATCH_BYTES {
            out.push(std::mem::take(&mut sql));
        }
        if sql.is_empty() {
            sql = format!("INSERT INTO {table} VALUES {tuple}");
        } else {
            sql.push_str(", ");
            sql.push_str(&tuple);
        }
    }
    if !sql.is_empty() {
        out.push(sql);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn followed(sqls: &[&str]) -> Vec<(String, String)> {
        let mut t = TempTables::default();
        for s in sqls {
            t.observe(s.as_bytes(), Some("shop"));
        }
        t.tables
    }

    fn pair(db: &str, t: &str) -> (String, String) {
        (db.to_string(), t.to_string())
    }

    #[test]
    fn follows_create_drop_and_rename() {
        assert_eq!(
            followed(&["CREATE TEMPORARY TABLE staging (id INT)"]),
            [pair("shop", "staging")]
        );
        assert_eq!(
            followed(&["create or replace temporary table if not exists other.`s t` like x"]),
            [pair("other", "s t")]
        );
        assert!(followed(&["CREATE TABLE staging (id INT)"]).is_empty());
        assert!(followed(&[
            "CREATE TEMPORARY TABLE a (id INT)",
            "CREATE TEMPORARY TABLE b (id INT)",
            "DROP TEMPORARY TABLE IF EXISTS a, b"
        ])
        .is_empty());
        assert!(followed(&["CREATE TEMPORARY TABLE a (id INT)", "DROP TABLE a"]).is_empty());
        assert_eq!(
            followed(&[
                "CREATE TEMPORARY TABLE a (id INT)",
                "ALTER TABLE a RENAME TO b"
            ]),
            [pair("shop", "b")]
        );
        assert_eq!(
            followed(&[
                "CREATE TEMPORARY TABLE a (id INT)",
                "RENAME TABLE x TO y, a TO c"
            ]),
            [pair("shop", "c")]
        );
    }

    #[test]
    fn rows_become_typed_literals() {
        let col = |t, cs| ColumnMeta {
            column_type: t,
            charset: cs,
            flags: 0,
        };
        let rows = Captured {
            columns: vec![col(0x03, 63), col(0xFD, 45), col(0xFC, 63), col(0x0C, 45)],
            rows: vec![
                vec![
                    Some(b"1".to_vec()),
                    Some("é'".as_bytes().to_vec()),
                    Some(vec![0, 255]),
                    None,
                ],
                vec![
                    Some(b"-2".to_vec()),
                    None,
                    None,
                    Some(b"2001-09-09 01:46:40".to_vec()),
                ],
            ],
            ..Captured::default()
        };
        assert_eq!(
            inserts("`shop`.`s`", &rows, Some("utf8mb4")),
            ["INSERT INTO `shop`.`s` VALUES (1, _utf8mb4 X'C3A927', X'00FF', NULL), (-2, NULL, NULL, _utf8mb4 X'323030312D30392D30392030313A34363A3430')"]
        );
        assert_eq!(
            qualify_create(
                "CREATE TEMPORARY TABLE `staging` (\n  `id` int(11) NOT NULL\n)",
                "`shop`.`staging`"
            )
            .unwrap(),
            "CREATE TEMPORARY TABLE `shop`.`staging` (\n  `id` int(11) NOT NULL\n)"
        );
    }
}
