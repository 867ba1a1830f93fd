//! Chunk bounds by arithmetic for a single integer primary key.
//!
//! Finding "the n-th key after lo" costs an index scan of n entries on each
//! side — for InnoDB's clustered primary key about a third of what the chunk
//! checksum itself costs. For the common case (one integer key column:
//! AUTO_INCREMENT ids, snowflake ids) the next bound is computed instead:
//! `hi = lo + n / density`, where the density (rows per key value) is the
//! last chunk's. A sparse or empty stretch halves the density estimate each
//! chunk, so the width doubles and any gap is crossed in a few cheap empty
//! chunks. A width far above the last reliable one (a dense region may
//! follow a gap) is capped by the real n-th key of the base, so no chunk
//! holds much more than n rows either way. The last chunk (from the largest
//! key seen at the start) is open-ended, so rows inserted beyond it — and
//! rows only on the target — are still covered.

use mysql_async::Value;

use super::db::{values, Db};
use super::drill::nth_key;
use super::keyset::{quote, Key};
use super::schema::TableInfo;
use super::ValidateError;

/// A chunk with at least this many rows gives a usable density.
const RELIABLE_ROWS: u64 = 64;
/// A predicted width beyond this multiple of the last reliable one is
/// capped by the base's real n-th key.
const MAX_STRETCH: i128 = 4;

/// Integer key types MariaDB/MySQL compare as integers.
pub fn eligible(t: &TableInfo) -> bool {
    t.pk.len() == 1
        && t.columns.iter().any(|c| {
            c.name == t.pk[0]
                && matches!(
                    c.data_type.as_str(),
                    "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint"
                )
        })
}

/// An integer key value.
pub fn to_int(v: &Value) -> Option<i128> {
    match v {
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn key_of(v: i128) -> Key {
    vec![match i64::try_from(v) {
        Ok(i) => Value::Int(i),
        Err(_) => Value::UInt(u64::try_from(v.max(0)).unwrap_or(u64::MAX)),
    }]
}

/// State of the arithmetic chunker for one table.
#[derive(Debug, Clone)]
pub struct IntRange {
    /// Smallest and largest key on either side when the table started.
    min: i128,
    max: i128,
    /// Estimated rows per key value.
    density: f64,
    /// Width of the last chunk that had enough rows to trust (0: none yet).
    reliable_width: i128,
}

impl IntRange {
    /// `None` when both sides are empty (one open chunk covers the table).
    ///
    /// # Errors
    /// A failing `MIN`/`MAX` query on either side.
    pub async fn start(
        base: &Db,
        target: &Db,
        t: &TableInfo,
    ) -> Result<Option<IntRange>, ValidateError> {
        let pk = quote(&t.pk[0]);
        let sql = format!("SELECT MIN({pk}), MAX({pk}) FROM {}", quote(&t.name));
        let (b, g) = tokio::try_join!(base.rows(&sql, vec![]), target.rows(&sql, vec![]))?;
        let ends = |rows: &[mysql_async::Row]| {
            rows.first()
                .map(values)
                .and_then(|v| Some((to_int(v.first()?)?, to_int(v.get(1)?)?)))
        };
        let (min, max) = match (ends(&b), ends(&g)) {
            (Some((a, b)), Some((c, d))) => (a.min(c), b.max(d)),
            (Some(e), None) | (None, Some(e)) => e,
            (None, None) => return Ok(None),
        };
        let span = (max - min + 1).max(1) as f64;
        Ok(Some(IntRange {
            min,
            max,
            density: (t.estimated_rows.max(1) as f64 / span).min(1.0),
            reliable_width: 0,
        }))
    }

    /// The width a chunk of `n` rows should have now.
    fn width(&self, n: u64) -> i128 {
        let w = (n as f64 / self.density.max(1e-30)).ceil();
        if w >= 1e30 {
            i128::MAX / 4
        } else {
            (w as i128).max(1)
        }
    }

    /// The upper bound of the chunk after `lo` (None: open-ended, the last).
    ///
    /// # Errors
    /// A failing boundary query (only when the width is capped).
    pub async fn next(
        &self,
        base: &Db,
        t: &TableInfo,
        lo: Option<&Key>,
        n: u64,
    ) -> Result<Option<Key>, ValidateError> {
        let from = match lo.and_then(|k| k.first()).and_then(to_int) {
            Some(v) => v,
            None => self.min - 1,
        };
        let w = self.width(n);
        let hi = from.saturating_add(w);
        if hi >= self.max {
            return Ok(None);
        }
        if self.reliable_width == 0 || w > self.reliable_width.saturating_mul(MAX_STRETCH) {
            if let Some(real) = nth_key(base, t, lo, None, n).await? {
                if let Some(r) = real.first().and_then(to_int) {
                    return Ok(Some(key_of(r.min(hi))));
                }
            }
        }
        Ok(Some(key_of(hi)))
    }

    /// Learn from a finished chunk `(lo, hi]` that held `rows` rows (the
    /// larger side's count).
    pub fn observe(&mut self, lo: Option<&Key>, hi: Option<&Key>, rows: u64) {
        let from = lo
            .and_then(|k| k.first())
            .and_then(to_int)
            .unwrap_or(self.min - 1);
        let Some(to) = hi.and_then(|k| k.first()).and_then(to_int) else {
            return;
        };
        let width = (to - from).max(1);
        if rows >= RELIABLE_ROWS {
            self.density = (rows as f64 / width as f64).min(1.0);
            self.reliable_width = width;
        } else {
            self.density /= 2.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunker(min: i128, max: i128, density: f64) -> IntRange {
        IntRange {
            min,
            max,
            density,
            reliable_width: 1000,
        }
    }

    #[test]
    fn widths_follow_density_and_double_across_gaps() {
        let mut c = chunker(1, 1_000_000, 0.5);
        assert_eq!(c.width(1000), 2000);
        c.observe(Some(&key_of(0)), Some(&key_of(2000)), 2000);
        assert_eq!(c.density, 1.0);
        assert_eq!((c.width(1000), c.reliable_width), (1000, 2000));
        c.observe(Some(&key_of(2000)), Some(&key_of(3000)), 0); // empty: a gap
        assert_eq!(c.width(1000), 2000);
        c.observe(Some(&key_of(3000)), Some(&key_of(5000)), 3);
        assert_eq!(c.width(1000), 4000);
        assert_eq!(c.reliable_width, 2000, "sparse chunks are not trusted");
    }

    #[test]
    fn key_values() {
        assert_eq!(key_of(-5), vec![Value::Int(-5)]);
        assert_eq!(key_of(i128::from(u64::MAX)), vec![Value::UInt(u64::MAX)]);
        assert_eq!(to_int(&Value::Bytes(b"42".to_vec())), Some(42));
        assert_eq!(to_int(&Value::UInt(7)), Some(7));
    }
}
