//! The original Go validator's algorithm, for comparison in benchmarks only:
//! for every row n, `SELECT * FROM t ORDER BY pk LIMIT 1 OFFSET n` on the base,
//! then a point lookup of that key on the target and a value comparison.
//! Each step re-reads n index entries, so a full pass is O(n²).
//!
//!   offset_validator SOURCE_URL DESTINATION_URL TABLE PK_COLUMN [SAMPLES_PER_POINT]
//!
//! Validating 1M rows this way takes hours, so it measures the per-row cost at
//! five offsets (0, ¼, ½, ¾, end of the table), fits cost(n) = a + b·n by least
//! squares and integrates: T(N) = a·N + b·N²/2. Prints the measured points, the
//! extrapolated total time and rows/s (labelled as extrapolated).

use std::time::Instant;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Row};

fn opts(url: &str) -> OptsBuilder {
    OptsBuilder::from_opts(Opts::from_url(url).expect("mysql:// URL")).prefer_socket(false)
}

fn values(r: &Row) -> Vec<mysql_async::Value> {
    (0..r.len())
        .map(|i| r.as_ref(i).cloned().unwrap_or(mysql_async::Value::NULL))
        .collect()
}

/// One step of the naive algorithm at offset n; returns whether the row matched.
async fn step(base: &mut Conn, target: &mut Conn, table: &str, pk: &str, n: u64) -> bool {
    // Both lookups use the binary protocol so the values compare by type.
    let row: Option<Row> = base
        .exec_first(
            format!("SELECT * FROM `{table}` ORDER BY `{pk}` LIMIT 1 OFFSET ?"),
            (n,),
        )
        .await
        .expect("base query");
    let Some(row) = row else { return true };
    let key = row.as_ref(0).cloned().unwrap_or(mysql_async::Value::NULL);
    let other: Option<Row> = target
        .exec_first(format!("SELECT * FROM `{table}` WHERE `{pk}` = ?"), (key,))
        .await
        .expect("target query");
    other.is_some_and(|o| values(&o) == values(&row))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: offset_validator SOURCE_URL DESTINATION_URL TABLE PK_COLUMN [SAMPLES_PER_POINT]");
        std::process::exit(2);
    }
    let (table, pk) = (&args[3], &args[4]);
    let samples: u64 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut base = Conn::new(opts(&args[1])).await.expect("connect source");
    let mut target = Conn::new(opts(&args[2]))
        .await
        .expect("connect destination");
    let total: u64 = base
        .query_first(format!("SELECT COUNT(*) FROM `{table}`"))
        .await
        .expect("count")
        .unwrap_or(0);
    let mut points = Vec::new();
    for q in 0..5u64 {
        let start = (total.saturating_sub(samples) * q) / 4;
        let t = Instant::now();
        let mut mismatches = 0;
        for n in start..start + samples {
            if !step(&mut base, &mut target, table, pk, n).await {
                mismatches += 1;
            }
        }
        let per_row = t.elapsed().as_secs_f64() / samples as f64;
        println!(
            "offset {start:>9}: {:.3} ms/row ({mismatches} mismatches in {samples})",
            per_row * 1e3
        );
        points.push((start as f64 + samples as f64 / 2.0, per_row));
    }
    // Least squares for cost(n) = a + b n.
    let k = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p.0, y + p.1));
    let (mx, my) = (sx / k, sy / k);
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let a = my - b * mx;
    let n = total as f64;
    let secs = a * n + b * n * n / 2.0;
    println!(
        "offset_validator: {total} rows, extrapolated from {} sampled rows: {:.0} s total, {:.0} rows/s (extrapolated)",
        samples * 5,
        secs,
        n / secs
    );
}
