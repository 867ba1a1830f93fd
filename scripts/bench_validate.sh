#!/usr/bin/env bash
# Validator benchmark: a MariaDB pair on this box, one table of N rows (default 1M),
#   1. `cutover validate` (full, both sides equal)                -> rows/s
#   2. `cutover validate --fix` into an empty destination table    -> backfill rows/s
#   3. examples/offset_validator (the original per-row OFFSET algorithm, sampled at
#      five offsets and extrapolated; it would take hours in full) -> rows/s
# Prints one `bench:` line per measurement. Usage: scripts/bench_validate.sh [ROWS]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/mariadb.sh
source "$ROOT/scripts/lib/mariadb.sh"
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
ROWS=${1:-1000000}

ensure_mariadb
cargo build --release --quiet --bin cutover --example offset_validator
BIN="$ROOT/target/release/cutover"
OFFSET="$ROOT/target/release/examples/offset_validator"

WORK=$(mktemp -d /tmp/cutover-bench.XXXXXX)
SRC_PORT=$(free_port)
DST_PORT=$(free_port)
while [[ "$DST_PORT" == "$SRC_PORT" ]]; do DST_PORT=$(free_port); done
cleanup() {
    mariadb_stop "$WORK/src" || true
    mariadb_stop "$WORK/dst" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mariadb_init "$WORK/src"
mariadb_init "$WORK/dst"
mariadb_start "$WORK/src" "$SRC_PORT"
mariadb_start "$WORK/dst" "$DST_PORT"

SCHEMA="CREATE TABLE bench (id BIGINT PRIMARY KEY, a INT NOT NULL, b VARCHAR(32), c DOUBLE, d DATETIME(6));"
FILL="INSERT INTO bench SELECT seq, seq % 1000, MD5(seq), seq / 7, '2020-01-01' + INTERVAL seq SECOND FROM seq_1_to_$ROWS;"
sql() { mariadb -h127.0.0.1 -P"$1" -uapp -papp shop -e "$2"; }
echo "==> loading $ROWS rows on both sides"
sql "$SRC_PORT" "$SCHEMA $FILL" &
load_src=$!
sql "$DST_PORT" "$SCHEMA $FILL" &
load_dst=$!
wait "$load_src" "$load_dst" # (a bare `wait` would also wait for the servers)
t_loaded=$(date +%s)

cat >"$WORK/cutover.toml" <<TOML
initial_pattern = "src_first"
data_dir = "$WORK/data"
[source]
url = "mysql://app:app@127.0.0.1:$SRC_PORT/shop"
[destination]
url = "mysql://app:app@127.0.0.1:$DST_PORT/shop"
TOML

rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }
now() { date +%s.%N; }

echo "==> cutover validate (full)"
t0=$(now)
"$BIN" validate --config "$WORK/cutover.toml" | tail -n 3
t1=$(now)
full_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
echo "bench: validate_full rows=$ROWS seconds=$full_s rows_per_s=$(rate "$ROWS" "$full_s")"

echo "==> cutover validate --fix into an empty destination table (backfill)"
sql "$DST_PORT" "TRUNCATE TABLE bench"
t0=$(now)
"$BIN" validate --config "$WORK/cutover.toml" --fix | tail -n 3
t1=$(now)
fill_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
echo "bench: backfill rows=$ROWS seconds=$fill_s rows_per_s=$(rate "$ROWS" "$fill_s")"

echo "==> naive per-row OFFSET validator (sampled, extrapolated)"
"$OFFSET" "mysql://app:app@127.0.0.1:$SRC_PORT/shop" "mysql://app:app@127.0.0.1:$DST_PORT/shop" bench id 200 |
    tee "$WORK/offset.txt"
echo "bench: offset_naive $(grep -o '[0-9]* rows/s (extrapolated)' "$WORK/offset.txt")"
