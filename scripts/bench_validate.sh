#!/usr/bin/env bash
# Validator benchmark on a MariaDB pair on this box (both with a ROW binlog):
#   1. full validation vs the CRC scan floor, side by side in one run, on a narrow
#      (5 columns) and a wide (20 columns) table of ROWS rows (default 1M):
#        floor    = one `SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', cols…, ISNULL flags)))`
#                   over the whole table on both servers at once (pt-table-checksum's hash,
#                   no chunking: the physical floor of an in-server comparison)
#        validate = `cutover validate --table T` (whole process: connect, schema, chunks)
#      ROUNDS rounds, interleaved; medians and the ratio validate / floor per round;
#      plus one run with checksum = "md5" for reference
#   2. backfill: `cutover validate --fix` into the truncated destination (narrow table)
#   3. (unless --no-offset) the original per-row OFFSET algorithm, sampled and extrapolated
#   4. (unless --no-capture) binlog change capture under a sysbench oltp_write_only load
#      (8 threads through `cutover serve` in src_first): tps without and with capture,
#      keys re-verified per second, queue depth, lag, time to drain after the load
# Prints `bench:` lines and writes target/bench/validate.md (a markdown summary).
# Usage: scripts/bench_validate.sh [--rows N] [--rounds N] [--no-offset] [--no-capture]
#                                  [--capture-seconds N]
# Benchmarks are noisy on a shared 2-core box: the load average is printed with the numbers;
# compare ratios within one run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/mariadb.sh
source "$ROOT/scripts/lib/mariadb.sh"
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

ROWS=1000000 ROUNDS=3 OFFSET=1 CAPTURE=1 CAPTURE_SECS=20
while (($#)); do
    case $1 in
    --rows) ROWS=${2:?}; shift ;;
    --rounds) ROUNDS=${2:?}; shift ;;
    --no-offset) OFFSET=0 ;;
    --no-capture) CAPTURE=0 ;;
    --capture-seconds) CAPTURE_SECS=${2:?}; shift ;;
    [0-9]*) ROWS=$1 ;; # the old positional form
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_validate: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

ensure_mariadb
if ((CAPTURE)) && ! command -v sysbench >/dev/null; then apt_install sysbench; fi
cargo build --release --quiet --bin cutover --example offset_validator
BIN="$ROOT/target/release/cutover"
OFFSET_BIN="$ROOT/target/release/examples/offset_validator"
OUT="${BENCH_OUT:-$ROOT/target/bench}"
mkdir -p "$OUT"
MD="$OUT/validate.md"

WORK=$(mktemp -d /tmp/cutover-bench.XXXXXX)
SRC_PORT=$(free_port)
DST_PORT=$(free_port)
while [[ "$DST_PORT" == "$SRC_PORT" ]]; do DST_PORT=$(free_port); done
SERVE_PID=
cleanup() {
    [[ -n "$SERVE_PID" ]] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
    mariadb_stop "$WORK/src" || true
    mariadb_stop "$WORK/dst" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mariadb_init "$WORK/src"
mariadb_init "$WORK/dst"
mariadb_start "$WORK/src" "$SRC_PORT" --log-bin=binlog --binlog-format=ROW --server-id=1
mariadb_start "$WORK/dst" "$DST_PORT" --log-bin=binlog --binlog-format=ROW --server-id=2
sql() { mariadb -h127.0.0.1 -P"$1" -uapp -papp shop -N -e "$2"; }
both() { # the same SQL on both servers, concurrently
    sql "$SRC_PORT" "$1" & local a=$!
    sql "$DST_PORT" "$1" & local b=$!
    wait "$a" "$b"
}
# CPU-bound measurements: the tables fit in memory.
both "SET GLOBAL innodb_buffer_pool_size = 1073741824; SET GLOBAL max_connections = 1000;"
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

NARROW="CREATE TABLE bench (id BIGINT PRIMARY KEY, a INT NOT NULL, b VARCHAR(32), c DOUBLE, d DATETIME(6));
INSERT INTO bench SELECT seq, seq % 1000, MD5(seq), seq / 7, '2020-01-01' + INTERVAL seq SECOND FROM seq_1_to_$ROWS;"
WIDE="CREATE TABLE wide (id BIGINT PRIMARY KEY, i1 INT, i2 INT, i3 BIGINT, s1 SMALLINT, t1 TINYINT,
  d1 DECIMAL(12,2), d2 DECIMAL(18,6), f1 DOUBLE, f2 FLOAT, v1 VARCHAR(64), v2 VARCHAR(255), c1 CHAR(10),
  tx TEXT, dt DATETIME(6), dd DATE, ts TIMESTAMP NULL, e ENUM('a','b','c'), b1 VARBINARY(32), j JSON);
INSERT INTO wide SELECT seq, seq % 1000, seq * 7, seq * 1000003, seq % 30000, seq % 100, seq / 7, seq / 13,
  seq / 3, seq / 11, MD5(seq), REPEAT(MD5(seq), 3), LEFT(MD5(seq + 1), 10), REPEAT('lorem ipsum ', 5),
  '2020-01-01' + INTERVAL seq SECOND, '2020-01-01' + INTERVAL (seq % 3000) DAY,
  '2021-01-01' + INTERVAL seq SECOND, ELT(1 + seq % 3, 'a', 'b', 'c'), UNHEX(MD5(seq)),
  JSON_OBJECT('k', seq) FROM seq_1_to_$ROWS;"
echo "==> loading $ROWS rows into \`bench\` (5 columns) and \`wide\` (20 columns) on both sides"
t=$(now)
both "SET SESSION sql_log_bin = 0; $NARROW $WIDE"
echo "    loaded in $(since "$t") s"

cat >"$WORK/crc.toml" <<TOML
initial_pattern = "src_first"
data_dir = "$WORK/data"
[source]
url = "mysql://app:app@127.0.0.1:$SRC_PORT/shop"
[destination]
url = "mysql://app:app@127.0.0.1:$DST_PORT/shop"
TOML
sed 's/^\[source\]/[validation]\nchecksum = "md5"\n[source]/' "$WORK/crc.toml" >"$WORK/md5.toml"

floor_sql() { # the pt-table-checksum expression over every column of table $1
    local cols nulls
    cols=$(sql "$SRC_PORT" "SELECT GROUP_CONCAT(CONCAT('\`', COLUMN_NAME, '\`') ORDER BY ORDINAL_POSITION)
        FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = '$1'")
    nulls=$(sql "$SRC_PORT" "SELECT GROUP_CONCAT(CONCAT('ISNULL(\`', COLUMN_NAME, '\`)') ORDER BY ORDINAL_POSITION)
        FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'shop' AND TABLE_NAME = '$1'")
    echo "SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', $cols, CONCAT($nulls)))) FROM \`$1\`"
}

{
    echo "### Validator run: $(date -u '+%Y-%m-%d %H:%M UTC'), $ROWS rows, $ROUNDS rounds"
    echo
    echo "Machine: $(nproc) CPUs, both MariaDB servers and cutover on it; cutover at $(git rev-parse --short HEAD 2>/dev/null || echo '?')."
    echo
    echo "| table | round | load avg (1/5/15 min) | floor s | validate s | validate rows/s | validate / floor |"
    echo "|---|---:|---|---:|---:|---:|---:|"
} >"$MD"

for table in bench wide; do
    FLOOR=$(floor_sql "$table")
    : >"$WORK/$table.floor" >"$WORK/$table.val" >"$WORK/$table.ratio"
    echo "==> $table: CRC scan floor vs cutover validate, $ROUNDS rounds"
    for ((r = 1; r <= ROUNDS; r++)); do
        l=$(load)
        t=$(now)
        both "$FLOOR" >/dev/null
        f=$(since "$t")
        t=$(now)
        "$BIN" validate --config "$WORK/crc.toml" --table "$table" >"$WORK/val.out" 2>/dev/null
        v=$(since "$t")
        ratio=$(awk -v a="$v" -v b="$f" 'BEGIN { printf "%.2f", a / b }')
        echo "$f" >>"$WORK/$table.floor"
        echo "$v" >>"$WORK/$table.val"
        echo "$ratio" >>"$WORK/$table.ratio"
        echo "bench: validate_vs_floor table=$table round=$r floor_s=$f validate_s=$v ratio=$ratio load=\"$l\""
        echo "| \`$table\` | $r | $l | $f | $v | $(rate "$ROWS" "$v") | **${ratio}×** |" >>"$MD"
    done
    tail -n 1 "$WORK/val.out"
    fm=$(median <"$WORK/$table.floor") vm=$(median <"$WORK/$table.val") rm=$(median <"$WORK/$table.ratio")
    echo "bench: validate_full table=$table rows=$ROWS floor_median_s=$fm validate_median_s=$vm rows_per_s=$(rate "$ROWS" "$vm") ratio_median=$rm"
    echo "| \`$table\` | median | | $fm | $vm | $(rate "$ROWS" "$vm") | **${rm}×** |" >>"$MD"
    t=$(now)
    "$BIN" validate --config "$WORK/md5.toml" --table "$table" >/dev/null 2>&1
    m=$(since "$t")
    echo "bench: validate_md5 table=$table seconds=$m rows_per_s=$(rate "$ROWS" "$m")"
    echo "| \`$table\` | md5 | $(load) | | $m | $(rate "$ROWS" "$m") | $(awk -v a="$m" -v b="$fm" 'BEGIN { printf "%.2f", a / b }')× |" >>"$MD"
done

echo "==> cutover validate --fix into the truncated destination \`bench\` (backfill)"
sql "$DST_PORT" "TRUNCATE TABLE bench"
t=$(now)
"$BIN" validate --config "$WORK/crc.toml" --table bench --fix 2>/dev/null | tail -n 1
b=$(since "$t")
echo "bench: backfill rows=$ROWS seconds=$b rows_per_s=$(rate "$ROWS" "$b")"
{
    echo
    echo "Backfill (\`validate --fix\` into the empty destination \`bench\`): $b s, $(rate "$ROWS" "$b") rows/s."
} >>"$MD"

if ((OFFSET)); then
    echo "==> naive per-row OFFSET validator (sampled, extrapolated)"
    "$OFFSET_BIN" "mysql://app:app@127.0.0.1:$SRC_PORT/shop" "mysql://app:app@127.0.0.1:$DST_PORT/shop" bench id 200 |
        tee "$WORK/offset.txt"
    echo "bench: offset_naive $(grep -o '[0-9]* rows/s (extrapolated)' "$WORK/offset.txt")"
fi

if ((CAPTURE)); then
    source "$ROOT/scripts/lib/bench/capture.sh"
    bench_capture
fi
echo "summary: $MD"
