//! The SQL the validator runs besides the hashes themselves (`hash.rs`):
//! chunk boundaries, drill-down, upsert/delete for the fixer.

use super::keyset::{column_list, quote};
use super::schema::TableInfo;

pub use super::hash::{chunk_checksum, row_hash};

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

    use crate::validate::schema::Column;

    fn col(name: &str, ty: &str) -> Column {
        Column {
            name: name.into(),
            data_type: ty.into(),
            column_type: ty.into(),
            charset: None,
            generated: false,
            convert: false,
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
            hash: crate::validate::hash::RowHash::Md5,
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
