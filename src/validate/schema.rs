//! Which tables to validate and their shape, read from information_schema on
//! both sides. A table is validated only when both sides agree on its column
//! definitions and primary key; otherwise it is reported as skipped with the
//! reason (never silently ignored).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Checksum;

use super::db::{text, Db};
use super::hash::RowHash;
use super::ValidateError;

/// A column as information_schema describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `DATA_TYPE`, lower case (`int`, `varchar`, `datetime`, …).
    pub data_type: String,
    /// `COLUMN_TYPE` (`int(10) unsigned`, `varchar(20)`, …).
    pub column_type: String,
    pub charset: Option<String>,
    pub generated: bool,
    /// The sides store this character column in different character sets
    /// by intent (`[mirror] ddl_defaults = "own"`): its text is converted to
    /// utf8mb4 before hashing, so equal text compares equal (issue #19).
    pub convert: bool,
}

/// How the update-time column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UtimeKind {
    /// Integer milliseconds since the epoch.
    Millis,
    /// DATETIME / TIMESTAMP (compared as UTC).
    Temporal,
}

/// A table both sides agree on.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub name: String,
    /// Stored (non-generated) columns in ordinal order: what is hashed and copied.
    pub columns: Vec<Column>,
    /// Primary-key column names in index order.
    pub pk: Vec<String>,
    /// The update-time column, when present.
    pub utime: Option<(String, UtimeKind)>,
    /// information_schema's row estimate (max of both sides).
    pub estimated_rows: u64,
    /// The row hash both sides compute for this table in this run.
    pub hash: RowHash,
}

impl TableInfo {
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }
}

/// The two column lists differ in character sets only.
fn charset_only(a: &[Column], b: &[Column]) -> bool {
    let strip = |c: &Column| Column {
        charset: None,
        ..c.clone()
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| strip(x) == strip(y))
}

/// A table that will not be validated, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub table: String,
    pub reason: String,
}

#[derive(Default)]
struct Side {
    tables: BTreeMap<String, u64>,
    columns: BTreeMap<String, Vec<Column>>,
    pk: BTreeMap<String, Vec<String>>,
}

async fn read_side(db: &Db) -> Result<Side, ValidateError> {
    let mut s = Side::default();
    let (tables, cols, pks) = tokio::try_join!(
        db.text_rows(
            "SELECT TABLE_NAME, COALESCE(TABLE_ROWS, 0) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE'"
        ),
        db.text_rows(
            "SELECT TABLE_NAME, COLUMN_NAME, LOWER(DATA_TYPE), COLUMN_TYPE, CHARACTER_SET_NAME, \
             IS_GENERATED FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             ORDER BY TABLE_NAME, ORDINAL_POSITION"
        ),
        db.text_rows(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND INDEX_NAME = 'PRIMARY' \
             ORDER BY TABLE_NAME, SEQ_IN_INDEX"
        ),
    )?;
    for r in &tables {
        if let Some(t) = text(r, 0) {
            let n = text(r, 1).and_then(|n| n.parse().ok()).unwrap_or(0);
            s.tables.insert(t, n);
        }
    }
    for r in &cols {
        let (Some(t), Some(name)) = (text(r, 0), text(r, 1)) else {
            continue;
        };
        s.columns.entry(t).or_default().push(Column {
            name,
            data_type: text(r, 2).unwrap_or_default(),
            column_type: text(r, 3).unwrap_or_default(),
            charset: text(r, 4),
            generated: text(r, 5).is_some_and(|g| g.eq_ignore_ascii_case("ALWAYS")),
            convert: false,
        });
    }
    for r in &pks {
        if let (Some(t), Some(c)) = (text(r, 0), text(r, 1)) {
            s.pk.entry(t).or_default().push(c);
        }
    }
    Ok(s)
}

/// The names in `wanted` that are a base table on neither side.
///
/// # Errors
/// Connect/query errors of reading information_schema.
pub async fn unknown_tables(
    base: &Db,
    target: &Db,
    wanted: &[String],
) -> Result<Vec<String>, ValidateError> {
    let (b, t) = tokio::try_join!(read_side(base), read_side(target))?;
    Ok(wanted
        .iter()
        .filter(|n| !b.tables.contains_key(*n) && !t.tables.contains_key(*n))
        .cloned()
        .collect())
}

/// The row hash for this pair: `[validation] checksum` (carried by `base`),
/// with CRC32C only when both servers have it.
async fn row_hash(base: &Db, target: &Db) -> Result<RowHash, ValidateError> {
    Ok(match base.checksum {
        Checksum::Md5 => RowHash::Md5,
        Checksum::Crc32 => {
            let (b, t) = tokio::try_join!(base.has_crc32c(), target.has_crc32c())?;
            if b && t {
                RowHash::Crc32c
            } else {
                RowHash::Crc32Reversed
            }
        }
    })
}

/// [`discover`] for the one table `table`.
///
/// # Errors
/// [`ValidateError::Table`] with the skip reason when it cannot be
/// validated (no primary key, missing on a side, …); as [`discover`].
pub async fn discover_one(
    base: &Db,
    target: &Db,
    table: &str,
    utime_column: &str,
) -> Result<TableInfo, ValidateError> {
    let (tables, skipped) = discover(base, target, &[table.to_string()], utime_column).await?;
    tables
        .into_iter()
        .next()
        .ok_or_else(|| ValidateError::Table {
            table: table.into(),
            reason: skipped
                .into_iter()
                .next()
                .map(|s| s.reason)
                .unwrap_or_default(),
        })
}

/// Discover the tables to validate. `wanted` empty = every base table of the
/// base database. Returns (tables, skipped) in name order.
pub async fn discover(
    base: &Db,
    target: &Db,
    wanted: &[String],
    utime_column: &str,
) -> Result<(Vec<TableInfo>, Vec<Skipped>), ValidateError> {
    let (b, t, hash) =
        tokio::try_join!(read_side(base), read_side(target), row_hash(base, target))?;
    let names: Vec<String> = if wanted.is_empty() {
        b.tables.keys().cloned().collect()
    } else {
        wanted.to_vec()
    };
    let mut tables = Vec::new();
    let mut skipped = Vec::new();
    for name in names {
        match check(&name, &b, &t, utime_column, base, target) {
            Ok(info) => tables.push(TableInfo { hash, ..info }),
            Err(reason) => skipped.push(Skipped {
                table: name,
                reason,
            }),
        }
    }
    Ok((tables, skipped))
}

fn check(
    name: &str,
    b: &Side,
    t: &Side,
    utime_column: &str,
    base: &Db,
    target: &Db,
) -> Result<TableInfo, String> {
    let Some(&base_rows) = b.tables.get(name) else {
        return Err(format!("no such table on the {} (base)", base.label()));
    };
    let Some(&target_rows) = t.tables.get(name) else {
        return Err(format!("no such table on the {} (target)", target.label()));
    };
    let Some(pk) = b.pk.get(name) else {
        return Err("no primary key".into());
    };
    if t.pk.get(name) != Some(pk) {
        return Err(format!(
            "primary keys differ ({}: {:?}, {}: {:?})",
            base.label(),
            pk,
            target.label(),
            t.pk.get(name).cloned().unwrap_or_default()
        ));
    }
    let mut bc = b.columns.get(name).cloned().unwrap_or_default();
    let tc = t.columns.get(name).cloned().unwrap_or_default();
    if bc != tc && base.charset_drift_intended && charset_only(&bc, &tc) {
        for (c, other) in bc.iter_mut().zip(&tc) {
            c.convert = c.charset != other.charset;
        }
        if let Some(c) = bc.iter().find(|c| c.convert && pk.contains(&c.name)) {
            return Err(format!(
                "primary key column {} has different character sets ({}: {}, {}: {}): keyset order would differ",
                c.name,
                base.label(),
                c.charset.as_deref().unwrap_or("-"),
                target.label(),
                tc.iter().find(|t| t.name == c.name).and_then(|t| t.charset.as_deref()).unwrap_or("-")
            ));
        }
    } else if bc != tc {
        let describe = |c: &[Column]| {
            c.iter()
                .map(|c| {
                    format!(
                        "{} {}{}",
                        c.name,
                        c.column_type,
                        c.charset
                            .as_deref()
                            .map(|s| format!(" {s}"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "column definitions differ ({}: [{}]; {}: [{}])",
            base.label(),
            describe(&bc),
            target.label(),
            describe(&tc)
        ));
    }
    let columns: Vec<Column> = bc.into_iter().filter(|c| !c.generated).collect();
    let utime = columns
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(utime_column))
        .and_then(|c| {
            let kind = match c.data_type.as_str() {
                "bigint" | "int" | "mediumint" | "decimal" => UtimeKind::Millis,
                "datetime" | "timestamp" => UtimeKind::Temporal,
                _ => return None,
            };
            Some((c.name.clone(), kind))
        });
    Ok(TableInfo {
        name: name.to_string(),
        columns,
        pk: pk.clone(),
        utime,
        estimated_rows: base_rows.max(target_rows),
        hash: RowHash::default(),
    })
}
