//! Keys and keyset pagination: predicates over (composite) primary keys,
//! key ↔ JSON conversion, canonical key ids.
//!
//! Chunks are half-open key ranges `(lo, hi]`: `lo` exclusive (None = from the
//! first key), `hi` inclusive (None = to the last key). Consecutive chunks share
//! a bound, so the ranges cover the whole key space without gaps or overlaps,
//! whatever rows either side holds. Comparisons are always done by the
//! database (with the column's own collation), never in Rust.

use std::cmp::Ordering;

use mysql_async::Value;
use serde_json::{json, Map, Value as Json};

/// The values of a row's primary-key columns, in key order.
pub type Key = Vec<Value>;

/// `` `name` `` with backquotes doubled.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Comma-separated quoted column list.
pub fn column_list(cols: &[String]) -> String {
    cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
}

/// `(c1, c2) > (v1, v2)` expanded so MariaDB's range optimizer uses the
/// primary key: `c1 >= ? AND (c1 > ? OR (c1 = ? AND c2 > ?))`.
pub fn after(cols: &[String], key: &Key) -> (String, Vec<Value>) {
    bound(cols, key, ">", ">=")
}

/// `(c1, c2) <= (v1, v2)`, expanded like [`after`].
pub fn up_to(cols: &[String], key: &Key) -> (String, Vec<Value>) {
    let (sql, params) = bound_inner(cols, key, "<", "<=", true);
    if cols.len() == 1 {
        return (sql, params);
    }
    let lead = format!("{} <= ?", quote(&cols[0]));
    let mut p = vec![key[0].clone()];
    p.extend(params);
    (format!("({lead} AND {sql})"), p)
}

fn bound(cols: &[String], key: &Key, strict: &str, lead_op: &str) -> (String, Vec<Value>) {
    let (sql, params) = bound_inner(cols, key, strict, lead_op, false);
    if cols.len() == 1 {
        return (sql, params);
    }
    let lead = format!("{} {lead_op} ?", quote(&cols[0]));
    let mut p = vec![key[0].clone()];
    p.extend(params);
    (format!("({lead} AND {sql})"), p)
}

/// Recursive expansion: `c1 OP v1 OR (c1 = v1 AND <rest>)`; the last column
/// uses the inclusive operator when `inclusive_last`.
fn bound_inner(
    cols: &[String],
    key: &Key,
    strict: &str,
    inclusive: &str,
    inclusive_last: bool,
) -> (String, Vec<Value>) {
    let c = quote(&cols[0]);
    if cols.len() == 1 {
        let op = if inclusive_last { inclusive } else { strict };
        return (format!("{c} {op} ?"), vec![key[0].clone()]);
    }
    let (rest, rest_params) = bound_inner(
        &cols[1..],
        &key[1..].to_vec(),
        strict,
        inclusive,
        inclusive_last,
    );
    let mut params = vec![key[0].clone(), key[0].clone()];
    params.extend(rest_params);
    (format!("({c} {strict} ? OR ({c} = ? AND {rest}))"), params)
}

/// The chunk predicate for `(lo, hi]`; `"1=1"` when unbounded.
pub fn range(cols: &[String], lo: Option<&Key>, hi: Option<&Key>) -> (String, Vec<Value>) {
    let mut parts = Vec::new();
    let mut params = Vec::new();
    if let Some(lo) = lo {
        let (s, p) = after(cols, lo);
        parts.push(s);
        params.extend(p);
    }
    if let Some(hi) = hi {
        let (s, p) = up_to(cols, hi);
        parts.push(s);
        params.extend(p);
    }
    if parts.is_empty() {
        ("1=1".into(), params)
    } else {
        (parts.join(" AND "), params)
    }
}

/// `((c1 = ? AND c2 = ?) OR (…))` for a batch of keys.
pub fn any_of(cols: &[String], keys: &[Key]) -> (String, Vec<Value>) {
    let one = format!(
        "({})",
        cols.iter()
            .map(|c| format!("{} = ?", quote(c)))
            .collect::<Vec<_>>()
            .join(" AND ")
    );
    let sql = vec![one; keys.len()].join(" OR ");
    let params = keys.iter().flat_map(|k| k.iter().cloned()).collect();
    (format!("({sql})"), params)
}

/// Best-effort ordering of two keys, used only to pick the smaller of two
/// candidate chunk bounds (a wrong guess only changes a chunk's size, never
/// correctness: the database does every comparison that matters).
pub fn rough_cmp(a: &Key, b: &Key) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Value::Int(x), Value::Int(y)) => x.cmp(y),
            (Value::UInt(x), Value::UInt(y)) => x.cmp(y),
            (Value::Int(x), Value::UInt(y)) => (*x as i128).cmp(&(*y as i128)),
            (Value::UInt(x), Value::Int(y)) => (*x as i128).cmp(&(*y as i128)),
            (Value::Double(x), Value::Double(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
            (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
            (Value::Bytes(x), Value::Bytes(y)) => {
                // DECIMAL arrives as text: compare numerically when both parse.
                match (parse_num(x), parse_num(y)) {
                    (Some(a), Some(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
                    _ => x.cmp(y),
                }
            }
            (Value::Date(..), Value::Date(..)) | (Value::Time(..), Value::Time(..)) => {
                value_text(x).cmp(&value_text(y))
            }
            _ => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn parse_num(b: &[u8]) -> Option<f64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// A value as MySQL literal text (dates as `YYYY-MM-DD HH:MM:SS[.ffffff]`).
pub fn value_text(v: &Value) -> String {
    match v {
        Value::NULL => "NULL".into(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Date(y, mo, d, h, mi, s, us) => {
            if *us == 0 {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
            } else {
                format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
            }
        }
        Value::Time(neg, days, h, mi, s, us) => {
            let sign = if *neg { "-" } else { "" };
            let hours = *days as u64 * 24 + *h as u64;
            if *us == 0 {
                format!("{sign}{hours:02}:{mi:02}:{s:02}")
            } else {
                format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}")
            }
        }
    }
}

/// One value as JSON: numbers stay numbers, text stays text, bytes that are
/// not UTF-8 become `{"hex": "…"}`, dates/times become their literal text.
pub fn value_to_json(v: &Value) -> Json {
    match v {
        Value::NULL => Json::Null,
        Value::Int(i) => json!(i),
        Value::UInt(u) => json!(u),
        Value::Float(f) => json!(f),
        Value::Double(d) => json!(d),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => Json::String(s.to_string()),
            Err(_) => json!({ "hex": hex(b) }),
        },
        Value::Date(..) | Value::Time(..) => Json::String(value_text(v)),
    }
}

/// The inverse of [`value_to_json`] as far as the database is concerned
/// (dates come back as text, which MariaDB converts on comparison).
pub fn json_to_value(j: &Json) -> Option<Value> {
    Some(match j {
        Json::Null => Value::NULL,
        Json::Bool(b) => Value::Int(*b as i64),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Double(n.as_f64()?)
            }
        }
        Json::String(s) => Value::Bytes(s.as_bytes().to_vec()),
        Json::Object(o) => Value::Bytes(unhex(o.get("hex")?.as_str()?)?),
        Json::Array(_) => return None,
    })
}

/// `{"col": value, …}` for a key.
pub fn key_to_json(cols: &[String], key: &Key) -> Json {
    let mut m = Map::new();
    for (c, v) in cols.iter().zip(key) {
        m.insert(c.clone(), value_to_json(v));
    }
    Json::Object(m)
}

/// A key from a JSON object (missing columns → None) or array in key order.
pub fn key_from_json(cols: &[String], j: &Json) -> Option<Key> {
    match j {
        Json::Object(m) => cols.iter().map(|c| json_to_value(m.get(c)?)).collect(),
        Json::Array(a) if a.len() == cols.len() => a.iter().map(json_to_value).collect(),
        _ if cols.len() == 1 => Some(vec![json_to_value(j)?]),
        _ => None,
    }
}

/// Canonical text of a key, for maps and de-duplication.
pub fn key_id(key: &Key) -> String {
    Json::Array(key.iter().map(value_to_json).collect()).to_string()
}

pub fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn single_column_bounds() {
        let (s, p) = range(
            &cols(&["id"]),
            Some(&vec![Value::Int(5)]),
            Some(&vec![Value::Int(9)]),
        );
        assert_eq!(s, "`id` > ? AND `id` <= ?");
        assert_eq!(p, vec![Value::Int(5), Value::Int(9)]);
        assert_eq!(range(&cols(&["id"]), None, None).0, "1=1");
    }

    #[test]
    fn composite_bounds_expand() {
        let k = vec![Value::Int(1), Value::Bytes(b"x".to_vec())];
        let (s, p) = after(&cols(&["a", "b"]), &k);
        assert_eq!(s, "(`a` >= ? AND (`a` > ? OR (`a` = ? AND `b` > ?)))");
        assert_eq!(p.len(), 4);
        let (s, p) = up_to(&cols(&["a", "b"]), &k);
        assert_eq!(s, "(`a` <= ? AND (`a` < ? OR (`a` = ? AND `b` <= ?)))");
        assert_eq!(p.len(), 4);
        let (s, p) = any_of(&cols(&["a", "b"]), &[k.clone(), k]);
        assert_eq!(s, "((`a` = ? AND `b` = ?) OR (`a` = ? AND `b` = ?))");
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn json_roundtrip() {
        let c = cols(&["a", "b", "c"]);
        let k = vec![
            Value::Int(-3),
            Value::Bytes(vec![0xff, 0, 1]),
            Value::Bytes(b"hi".to_vec()),
        ];
        let j = key_to_json(&c, &k);
        assert_eq!(j, json!({"a": -3, "b": {"hex": "ff0001"}, "c": "hi"}));
        assert_eq!(key_from_json(&c, &j).unwrap(), k);
        assert_eq!(quote("we`ird"), "`we``ird`");
        assert_eq!(
            value_text(&Value::Date(2024, 2, 3, 4, 5, 6, 7)),
            "2024-02-03 04:05:06.000007"
        );
    }

    #[test]
    fn rough_order() {
        assert_eq!(
            rough_cmp(&vec![Value::Int(2)], &vec![Value::Int(10)]),
            Ordering::Less
        );
        assert_eq!(
            rough_cmp(
                &vec![Value::Bytes(b"10.5".to_vec())],
                &vec![Value::Bytes(b"9".to_vec())]
            ),
            Ordering::Greater
        );
    }
}
