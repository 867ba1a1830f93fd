//! The SQL that hashes rows and chunks inside each database.
//!
//! Row hash: `MD5(CONCAT_WS('#', e1, …, en, CONCAT(ISNULL(c1), …, ISNULL(cn))))`
//! where `ei` is the column itself for numeric and temporal types (their text
//! form never contains `#`) and `HEX(CAST(ci AS BINARY))` for everything else
//! (the raw bytes: collation-free, binary-safe, no separator ambiguity). The
//! trailing ISNULL bitmap makes NULL differ from '' (CONCAT_WS skips NULLs).
//!
//! Chunk checksum: `COUNT(*)` plus the `BIT_XOR` of the two 64-bit halves of
//! every row hash — 128 bits, order-independent, computed by the server.

use super::keyset::{column_list, quote};
use super::schema::{Column, TableInfo};

/// Types whose text form is canonical and `#`-free.
fn plain(c: &Column) -> bool {
    matches!(
        c.data_type.as_str(),
        "tinyint"
            | "smallint"
            | "mediumint"
            | "int"
            | "integer"
            | "bigint"
            | "decimal"
            | "numeric"
            | "float"
            | "double"
            | "real"
            | "year"
            | "date"
            | "datetime"
            | "time"
    )
}

/// Per-column expression inside the row hash.
fn column_expr(c: &Column) -> String {
    let q = quote(&c.name);
    if c.data_type == "timestamp" {
        // Independent of any session time zone.
        format!("UNIX_TIMESTAMP({q})")
    } else if plain(c) {
        q
    } else {
        format!("HEX(CAST({q} AS BINARY))")
    }
}

/// The row-hash expression (32 hex characters).
pub fn row_hash(t: &TableInfo) -> String {
    let parts: Vec<String> = t.columns.iter().map(column_expr).collect();
    let bitmap: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("ISNULL({})", quote(&c.name)))
        .collect();
    format!(
        "MD5(CONCAT_WS('#', {}, CONCAT({})))",
        parts.join(", "),
        bitmap.join(", ")
    )
}

/// `SELECT COUNT(*), xor_hi, xor_lo` over the rows matching `pred`.
pub fn chunk_checksum(t: &TableInfo, pred: &str) -> String {
    format!(
        "SELECT COUNT(*), \
         COALESCE(BIT_XOR(CAST(CONV(LEFT(h, 16), 16, 10) AS UNSIGNED)), 0), \
         COALESCE(BIT_XOR(CAST(CONV(RIGHT(h, 16), 16, 10) AS UNSIGNED)), 0) \
         FROM (SELECT {} AS h FROM {} WHERE {pred}) AS chunk",
        row_hash(t),
        quote(&t.name)
    )
}

/// The `n`-th key after `pred` (`LIMIT 1 OFFSET n-1` inside one chunk's key
/// range: cost O(chunk), independent of where in the table the chunk is).
pub fn boundary(t: &TableInfo, pred: &str) -> String {
    format!(
        "SELECT {pk} FROM {tbl} WHERE {pred} ORDER BY {order} LIMIT 1 OFFSET ?",
        pk = column_list(&t.pk),
        tbl = quote(&t.name),
        order = order_by(&t.pk),
    )
}

/// `SELECT pk…, row_hash` for drill-down, in key order.
pub fn row_hashes(t: &TableInfo, pred: &str) -> String {
    format!(
        "SELECT {pk}, {h} FROM {tbl} WHERE {pred} ORDER BY {order}",
        pk = column_list(&t.pk),
        h = row_hash(t),
        tbl = quote(&t.name),
        order = order_by(&t.pk),
    )
}

/// Multi-row upsert of every stored column for `rows` rows.
pub fn upsert(t: &TableInfo, rows: usize) -> String {
    let names = t.column_names();
    let one = format!("({})", vec!["?"; names.len()].join(", "));
    let updates: Vec<String> = names
        .iter()
        .map(|c| format!("{q} = VALUES({q})", q = quote(c)))
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
        quote(&t.name),
        column_list(&names),
        vec![one; rows].join(", "),
        updates.join(", ")
    )
}

pub fn delete(t: &TableInfo, pred: &str) -> String {
    format!("DELETE FROM {} WHERE {pred}", quote(&t.name))
}

pub fn order_by(cols: &[String]) -> String {
    column_list(cols)
}

/// Every stored column, quoted, comma-separated.
pub fn column_list_of(t: &TableInfo) -> String {
    column_list(&t.column_names())
}

/// Every stored column plus the row hash, optionally locking.
pub fn full_rows_hashed(t: &TableInfo, pred: &str, for_update: bool) -> String {
    format!(
        "SELECT {cols}, {h} FROM {tbl} WHERE {pred} ORDER BY {order}{lock}",
        cols = column_list_of(t),
        h = row_hash(t),
        tbl = quote(&t.name),
        order = order_by(&t.pk),
        lock = if for_update { " FOR UPDATE" } else { "" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> Column {
        Column {
            name: name.into(),
            data_type: ty.into(),
            column_type: ty.into(),
            charset: None,
            generated: false,
        }
    }

    #[test]
    fn hash_sql_shape() {
        let t = TableInfo {
            name: "t".into(),
            columns: vec![
                col("id", "int"),
                col("v", "varchar"),
                col("ts", "timestamp"),
            ],
            pk: vec!["id".into()],
            utime: None,
            estimated_rows: 0,
        };
        assert_eq!(
            row_hash(&t),
            "MD5(CONCAT_WS('#', `id`, HEX(CAST(`v` AS BINARY)), UNIX_TIMESTAMP(`ts`), \
             CONCAT(ISNULL(`id`), ISNULL(`v`), ISNULL(`ts`))))"
        );
        assert!(upsert(&t, 2).ends_with("`ts` = VALUES(`ts`)"));
        assert!(upsert(&t, 2).contains("VALUES (?, ?, ?), (?, ?, ?) ON"));
    }
}
