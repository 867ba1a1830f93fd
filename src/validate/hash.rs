//! Which hash the two databases compute, and its SQL.
//!
//! Two algorithms (`[validation] checksum`):
//!
//! - **crc32** (default): per row two independent 32-bit CRCs of the row's
//!   bytes, `h = CRC32(text) << 32 | CRC32C(text)`, and per chunk
//!   `COUNT(*), SUM(h)`. The row text is built once per row (a user variable
//!   carries it from the first CRC to the second: building the text is what
//!   costs, not the CRC), so a chunk costs about one CRC32 scan — the floor
//!   pt-table-checksum and the issue measure against.
//! - **md5**: per row MD5 (128 bits), XOR-folded per chunk: 3–5× slower.
//!
//! Why two CRCs and a SUM. CRC32 is linear: for two strings of equal length,
//! `CRC(x) = CRC(y)` exactly when the polynomial of `x XOR y` is a multiple of
//! the CRC polynomial, whatever the rest of the row is — colliding rows are
//! easy to construct (TiDB sync-diff-inspector #703). CRC32C uses another
//! polynomial, so a difference must be a multiple of both (degree 64) to hide.
//! XOR-folding linear hashes over a chunk also cancels *structured* changes
//! (swapping one column's values between two rows of equal length leaves the
//! XOR of every row's CRC unchanged); an arithmetic SUM of the 64-bit row
//! hashes does not. `tests/validate_full.rs` plants both.
//!
//! Row text (crc32): `CONCAT_WS('#', e1, …, en, len(s1), …, len(sk),
//! CONCAT(ISNULL(c1), …, ISNULL(cn)))` where `ei` is the column's canonical
//! text for numeric and temporal types (no `#` possible), `UNIX_TIMESTAMP(c)`
//! for TIMESTAMP (time-zone free), and `CAST(c AS BINARY)` — the stored
//! bytes, collation-free — for everything else; the octet lengths of those
//! byte columns make the text uniquely decodable (a `#` inside a value
//! cannot shift a field boundary), and the ISNULL bitmap makes NULL differ
//! from ''. Servers without `CRC32C()` (MySQL, MariaDB < 10.8) use
//! `CRC32(REVERSE(text))` as the second CRC (the reversed bit order turns
//! the polynomial into its reciprocal, which differs from CRC32's).
//!
//! The text is passed from the first CRC to the second in the user variable
//! `@cutover_h`: MariaDB and MySQL evaluate a function's arguments (here the
//! operands of `|` and of `CONCAT`) left to right. The CRC-collision test
//! would fail if a server ever evaluated them the other way round.

use super::keyset::quote;
use super::schema::{Column, TableInfo};

/// The per-row hash a table is compared with (chosen per run, the same on
/// both sides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowHash {
    /// CRC32 and CRC32C of the row text (default).
    #[default]
    Crc32c,
    /// CRC32 and CRC32 of the reversed row text (servers without CRC32C).
    Crc32Reversed,
    /// MD5 of the row text (`checksum = "md5"`).
    Md5,
}

impl RowHash {
    pub fn as_str(self) -> &'static str {
        match self {
            RowHash::Crc32c => "crc32+crc32c",
            RowHash::Crc32Reversed => "crc32+crc32(reverse)",
            RowHash::Md5 => "md5",
        }
    }
}

/// Types whose text form is canonical and `#`-free.
pub(crate) fn plain(c: &Column) -> bool {
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

fn null_bitmap(t: &TableInfo) -> String {
    let bits: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("ISNULL({})", quote(&c.name)))
        .collect();
    format!("CONCAT({})", bits.join(", "))
}

/// The crc32 row text (see the module docs).
fn crc_text(t: &TableInfo) -> String {
    let mut parts = Vec::with_capacity(t.columns.len() * 2 + 1);
    let mut lengths = Vec::new();
    for c in &t.columns {
        let q = quote(&c.name);
        if c.data_type == "timestamp" {
            parts.push(format!("UNIX_TIMESTAMP({q})"));
        } else if plain(c) {
            parts.push(q);
        } else {
            let v = text_value(c, &q);
            parts.push(format!("CAST({v} AS BINARY)"));
            lengths.push(format!("OCTET_LENGTH({v})"));
        }
    }
    parts.extend(lengths);
    parts.push(null_bitmap(t));
    format!("CONCAT_WS('#', {})", parts.join(", "))
}

/// A non-plain column's value as hashed: converted to utf8mb4 when the
/// sides store it in different character sets by intent (`Column::convert`).
fn text_value(c: &Column, q: &str) -> String {
    if c.convert {
        format!("CONVERT({q} USING utf8mb4)")
    } else {
        q.to_string()
    }
}

/// The md5 row text (unchanged since the first validator: hex of the bytes).
fn md5_text(t: &TableInfo) -> String {
    let parts: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let q = quote(&c.name);
            if c.data_type == "timestamp" {
                format!("UNIX_TIMESTAMP({q})")
            } else if plain(c) {
                q
            } else {
                format!("HEX(CAST({} AS BINARY))", text_value(c, &q))
            }
        })
        .collect();
    format!("CONCAT_WS('#', {}, {})", parts.join(", "), null_bitmap(t))
}

/// The second CRC over the text held in `@cutover_h`.
fn second_crc(h: RowHash) -> &'static str {
    match h {
        RowHash::Crc32Reversed => "CRC32(REVERSE(@cutover_h))",
        _ => "CRC32C(@cutover_h)",
    }
}

/// The per-row hash as text (drill-down, fixer): equal rows give equal
/// strings, and the SQL returns a string for every algorithm.
pub fn row_hash(t: &TableInfo) -> String {
    match t.hash {
        RowHash::Md5 => format!("MD5({})", md5_text(t)),
        h => format!(
            "CONCAT(CRC32(@cutover_h := {}), '/', {})",
            crc_text(t),
            second_crc(h)
        ),
    }
}

/// The chunk checksum over the rows matching `pred`: `COUNT(*)` first, then
/// the algorithm's aggregate(s), compared as text.
pub fn chunk_checksum(t: &TableInfo, pred: &str) -> String {
    let table = quote(&t.name);
    match t.hash {
        RowHash::Md5 => format!(
            "SELECT COUNT(*), \
             COALESCE(BIT_XOR(CAST(CONV(LEFT(h, 16), 16, 10) AS UNSIGNED)), 0), \
             COALESCE(BIT_XOR(CAST(CONV(RIGHT(h, 16), 16, 10) AS UNSIGNED)), 0) \
             FROM (SELECT {} AS h FROM {table} WHERE {pred}) AS chunk",
            row_hash(t)
        ),
        h => format!(
            "SELECT COUNT(*), COALESCE(SUM((CRC32(@cutover_h := {}) << 32) | {}), 0) \
             FROM {table} WHERE {pred}",
            crc_text(t),
            second_crc(h)
        ),
    }
}

/// The pt-table-checksum expression the speed target is measured against
/// (`scripts/bench_validate.sh`): one CRC32 per row, XOR-folded.
pub fn crc32_floor(t: &TableInfo) -> String {
    let cols: Vec<String> = t.columns.iter().map(|c| quote(&c.name)).collect();
    format!(
        "SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', {}, {}))) FROM {}",
        cols.join(", "),
        null_bitmap(t),
        quote(&t.name)
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
            convert: false,
        }
    }

    fn table(hash: RowHash) -> TableInfo {
        TableInfo {
            name: "t".into(),
            columns: vec![
                col("id", "int"),
                col("v", "varchar"),
                col("ts", "timestamp"),
            ],
            pk: vec!["id".into()],
            utime: None,
            estimated_rows: 0,
            hash,
        }
    }

    #[test]
    fn crc_row_text_has_lengths_and_bitmap() {
        let t = table(RowHash::Crc32c);
        assert_eq!(
            crc_text(&t),
            "CONCAT_WS('#', `id`, CAST(`v` AS BINARY), UNIX_TIMESTAMP(`ts`), OCTET_LENGTH(`v`), \
             CONCAT(ISNULL(`id`), ISNULL(`v`), ISNULL(`ts`)))"
        );
        assert!(row_hash(&t).ends_with("'/', CRC32C(@cutover_h))"));
        let c = chunk_checksum(&t, "1=1");
        assert!(c.starts_with("SELECT COUNT(*), COALESCE(SUM((CRC32(@cutover_h := CONCAT_WS("));
        assert!(
            c.ends_with("| CRC32C(@cutover_h)), 0) FROM `t` WHERE 1=1"),
            "{c}"
        );
        let r = chunk_checksum(&table(RowHash::Crc32Reversed), "1=1");
        assert!(r.contains("CRC32(REVERSE(@cutover_h))"), "{r}");
    }

    #[test]
    fn md5_is_the_original_hash() {
        let t = table(RowHash::Md5);
        assert_eq!(
            row_hash(&t),
            "MD5(CONCAT_WS('#', `id`, HEX(CAST(`v` AS BINARY)), UNIX_TIMESTAMP(`ts`), \
             CONCAT(ISNULL(`id`), ISNULL(`v`), ISNULL(`ts`))))"
        );
        assert!(chunk_checksum(&t, "1=1").contains("BIT_XOR(CAST(CONV(LEFT(h, 16)"));
    }
}
