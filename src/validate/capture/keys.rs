//! Primary keys out of binlog row images.
//!
//! A ROW-format rows event carries, per changed row, the before image
//! (UPDATE, DELETE) and/or the after image (INSERT, UPDATE) with the values
//! of every column present in the image, in table column order (generated
//! columns included). Without `binlog_row_metadata=FULL` the event carries
//! neither column names nor signedness, so the key columns' ordinal
//! positions, types, signedness and character sets come from
//! information_schema, and raw values are turned into what a query of that
//! column expects:
//! - unsigned integers arrive as signed (two's complement): add 2^bits;
//! - TIMESTAMP arrives as seconds since the epoch (TIMESTAMP(n) as text
//!   `secs.frac`): converted to a UTC DATETIME (validator sessions are UTC);
//! - latin1 strings arrive as stored bytes: decoded (cp1252, what MariaDB
//!   calls latin1) to UTF-8, the connection character set; utf8mb3/utf8mb4,
//!   ascii and binary strings are used as they are. Key columns in other
//!   character sets are not supported (the change is counted as unkeyed).

use std::collections::HashMap;

use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::Value;

use crate::validate::db::{text, Db};
use crate::validate::keyset::Key;
use crate::validate::ValidateError;

/// How one key column's binlog value becomes a query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv {
    /// Used as it is.
    Plain,
    /// Unsigned integer of this many bits.
    Unsigned(u32),
    /// TIMESTAMP: seconds since the epoch → UTC DATETIME.
    Timestamp,
    /// latin1 (cp1252) bytes → UTF-8.
    Latin1,
    /// A character set the key cannot be matched in.
    Unsupported,
}

/// What is needed to pull a table's key out of a row image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableKeys {
    /// Columns in the table (what a TABLE_MAP must agree with).
    pub columns: usize,
    /// 0-based ordinal positions of the key columns, in key order.
    pub ordinals: Vec<usize>,
    pub conv: Vec<Conv>,
}

impl TableKeys {
    /// The key of a row image, `None` when a key column is missing from the
    /// image or cannot be converted.
    pub fn key(&self, present: &[bool], row: &BinlogRow) -> Option<Key> {
        let mut key = Vec::with_capacity(self.ordinals.len());
        for (&ord, &conv) in self.ordinals.iter().zip(&self.conv) {
            if !present.get(ord).copied().unwrap_or(false) {
                return None;
            }
            // The row holds only the present columns, in order.
            let idx = present[..ord].iter().filter(|p| **p).count();
            let BinlogValue::Value(v) = row.as_ref(idx)? else {
                return None;
            };
            key.push(convert(v, conv)?);
        }
        Some(key)
    }
}

/// Bits of an integer type.
fn int_bits(data_type: &str) -> Option<u32> {
    Some(match data_type {
        "tinyint" => 8,
        "smallint" => 16,
        "mediumint" => 24,
        "int" | "integer" => 32,
        "bigint" => 64,
        _ => return None,
    })
}

fn conv_for(data_type: &str, column_type: &str, charset: Option<&str>) -> Conv {
    if let Some(bits) = int_bits(data_type) {
        return if column_type.contains("unsigned") {
            Conv::Unsigned(bits)
        } else {
            Conv::Plain
        };
    }
    if data_type == "timestamp" {
        return Conv::Timestamp;
    }
    match charset {
        None => Conv::Plain,
        Some(cs) if cs.starts_with("utf8") || cs == "ascii" || cs == "binary" => Conv::Plain,
        Some("latin1") => Conv::Latin1,
        Some(_) => Conv::Unsupported,
    }
}

/// One value → a query parameter (see the module docs).
pub fn convert(v: &Value, conv: Conv) -> Option<Value> {
    Some(match (conv, v) {
        (Conv::Unsupported, _) => return None,
        (_, Value::NULL) => Value::NULL,
        (Conv::Unsigned(bits), Value::Int(i)) if *i < 0 => {
            let wrapped = i128::from(*i) + (1i128 << bits);
            Value::UInt(u64::try_from(wrapped).ok()?)
        }
        (Conv::Unsigned(_), Value::Int(i)) => Value::UInt(*i as u64),
        (Conv::Timestamp, Value::Int(secs)) => utc_datetime(*secs, 0),
        (Conv::Timestamp, Value::Bytes(b)) => {
            let s = std::str::from_utf8(b).ok()?;
            let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
            let micros = format!("{frac:0<6}").get(..6)?.parse().ok()?;
            utc_datetime(secs.parse().ok()?, micros)
        }
        (Conv::Latin1, Value::Bytes(b)) => Value::Bytes(cp1252_to_utf8(b).into_bytes()),
        (_, other) => other.clone(),
    })
}

/// A UTC DATETIME value for a Unix time.
fn utc_datetime(secs: i64, micros: u32) -> Value {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    Value::Date(
        y as u16,
        m as u8,
        d as u8,
        (rem / 3600) as u8,
        (rem / 60 % 60) as u8,
        (rem % 60) as u8,
        micros,
    )
}

/// MariaDB's latin1 is Windows-1252: 0x80–0x9F are printable characters.
fn cp1252_to_utf8(b: &[u8]) -> String {
    const HIGH: [u32; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013,
        0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ];
    b.iter()
        .map(|&c| match c {
            0x80..=0x9F => char::from_u32(HIGH[usize::from(c - 0x80)]).unwrap_or('\u{FFFD}'),
            _ => char::from(c),
        })
        .collect()
}

/// Key layouts of every table of `db`'s database that has a primary key.
///
/// # Errors
/// A failing information_schema query.
pub async fn load(db: &Db) -> Result<HashMap<String, TableKeys>, ValidateError> {
    let cols = db
        .text_rows(
            "SELECT c.TABLE_NAME, c.ORDINAL_POSITION, LOWER(c.DATA_TYPE), c.COLUMN_TYPE, \
             c.CHARACTER_SET_NAME, s.SEQ_IN_INDEX \
             FROM information_schema.COLUMNS c LEFT JOIN information_schema.STATISTICS s \
               ON s.TABLE_SCHEMA = c.TABLE_SCHEMA AND s.TABLE_NAME = c.TABLE_NAME \
              AND s.COLUMN_NAME = c.COLUMN_NAME AND s.INDEX_NAME = 'PRIMARY' \
             WHERE c.TABLE_SCHEMA = DATABASE() ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
        )
        .await?;
    // table → (columns, [(seq_in_index, ordinal, conv)])
    type KeyCols = Vec<(u32, usize, Conv)>;
    let mut acc: HashMap<String, (usize, KeyCols)> = HashMap::new();
    for r in &cols {
        let (Some(table), Some(ord)) =
            (text(r, 0), text(r, 1).and_then(|o| o.parse::<usize>().ok()))
        else {
            continue;
        };
        let e = acc.entry(table).or_default();
        e.0 = e.0.max(ord);
        if let Some(seq) = text(r, 5).and_then(|s| s.parse::<u32>().ok()) {
            let conv = conv_for(
                &text(r, 2).unwrap_or_default(),
                &text(r, 3).unwrap_or_default(),
                text(r, 4).as_deref(),
            );
            e.1.push((seq, ord - 1, conv));
        }
    }
    Ok(acc
        .into_iter()
        .filter(|(_, (_, pk))| !pk.is_empty())
        .map(|(t, (columns, mut pk))| {
            pk.sort_by_key(|(seq, _, _)| *seq);
            let keys = TableKeys {
                columns,
                ordinals: pk.iter().map(|(_, o, _)| *o).collect(),
                conv: pk.iter().map(|(_, _, c)| *c).collect(),
            };
            (t, keys)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(
            convert(&Value::Int(-294_967_296), Conv::Unsigned(32)),
            Some(Value::UInt(4_000_000_000))
        );
        assert_eq!(
            convert(&Value::Int(-1), Conv::Unsigned(64)),
            Some(Value::UInt(u64::MAX))
        );
        assert_eq!(convert(&Value::Int(5), Conv::Plain), Some(Value::Int(5)));
        assert_eq!(
            convert(&Value::Int(1_704_067_200), Conv::Timestamp),
            Some(Value::Date(2024, 1, 1, 0, 0, 0, 0))
        );
        assert_eq!(
            convert(&Value::Bytes(b"1704067200.5".to_vec()), Conv::Timestamp),
            Some(Value::Date(2024, 1, 1, 0, 0, 0, 500_000))
        );
        assert_eq!(
            convert(&Value::Bytes(vec![0xE9, 0x80]), Conv::Latin1),
            Some(Value::Bytes("é€".as_bytes().to_vec()))
        );
        assert_eq!(
            convert(&Value::Bytes(b"x".to_vec()), Conv::Unsupported),
            None
        );
        assert_eq!(
            conv_for("int", "int(10) unsigned", None),
            Conv::Unsigned(32)
        );
        assert_eq!(
            conv_for("varchar", "varchar(5)", Some("utf8mb4")),
            Conv::Plain
        );
        assert_eq!(
            conv_for("varchar", "varchar(5)", Some("sjis")),
            Conv::Unsupported
        );
    }
}
