#!/usr/bin/env bash
# Drain-then-swap pause under write load: a MariaDB pair, sysbench
# oltp_write_only at 8 threads through cutover (src_first), and the authority
# switched src_first <-> dst_first SWITCHES times (default 20) over the admin
# API while it runs. Prints `bench:` lines: switches made / aborted, the pause
# quantiles from cutover_switch_pause_seconds, and sysbench's errors (must be 0).
# Usage: scripts/bench_switch_pause.sh [SWITCHES]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/mariadb.sh
source "$ROOT/scripts/lib/mariadb.sh"
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
SWITCHES=${1:-20}

ensure_mariadb
command -v sysbench >/dev/null || apt_install sysbench
cargo build --release --quiet --bin cutover
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cutover"

WORK=$(mktemp -d /tmp/cutover-pause.XXXXXX)
SRC_PORT=$(free_port)
DST_PORT=$(free_port)
while [[ "$DST_PORT" == "$SRC_PORT" ]]; do DST_PORT=$(free_port); done
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
CUTOVER_PID=""
cleanup() {
    [[ -n "$CUTOVER_PID" ]] && kill "$CUTOVER_PID" 2>/dev/null && wait "$CUTOVER_PID" 2>/dev/null
    mariadb_stop "$WORK/src" || true
    mariadb_stop "$WORK/dst" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mariadb_init "$WORK/src"
cp -a "$WORK/src" "$WORK/dst"
mariadb_start "$WORK/src" "$SRC_PORT"
mariadb_start "$WORK/dst" "$DST_PORT"
for port in "$SRC_PORT" "$DST_PORT"; do
    sysbench oltp_write_only --mysql-host=127.0.0.1 --mysql-port="$port" --mysql-user=app \
        --mysql-password=app --mysql-db=shop --tables=2 --table-size=10000 prepare >/dev/null
done
cat >"$WORK/cutover.toml" <<TOML
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
initial_pattern = "src_first"
state_file = "$WORK/state.json"
[source]
url = "mysql://app:app@127.0.0.1:$SRC_PORT/shop"
[destination]
url = "mysql://app:app@127.0.0.1:$DST_PORT/shop"
TOML
CUTOVER_LOG=warn "$BIN" serve --config "$WORK/cutover.toml" 2>"$WORK/cutover.log" &
CUTOVER_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/health" >/dev/null && break; sleep 0.1; done

DURATION=${BENCH_SECONDS:-$((SWITCHES / 2 + 4))}
sysbench oltp_write_only --mysql-host=127.0.0.1 --mysql-port="$PROXY_PORT" --mysql-user=app \
    --mysql-password=app --mysql-db=shop --tables=2 --table-size=10000 --threads=8 \
    --time="$DURATION" --report-interval=0 --verbosity=4 run >"$WORK/sysbench.log" 2>&1 &
SB=$!
sleep 1
made=0 aborted=0
for i in $(seq "$SWITCHES"); do
    if (( i % 2 )); then to=dst_first; else to=src_first; fi
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$ADMIN_PORT/$to")
    if [[ $code == 200 ]]; then made=$((made + 1)); else aborted=$((aborted + 1)); fi
    sleep 0.4
done
wait "$SB" || true
metrics=$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics")
q() { awk -v q="$1" '$1 ~ /^cutover_switch_pause_seconds\{/ && index($1, "quantile=\""q"\"") {printf "%.1f", $2 * 1000}' <<<"$metrics"; }
echo "bench: switches made $made, aborted $aborted (drain timeout 2 s)"
echo "bench: switch pause p50 $(q 0.5) ms, p99 $(q 0.99) ms, max $(q 1) ms"
echo "bench: sysbench write_only through the switches: $(grep -E 'transactions:' "$WORK/sysbench.log" | xargs)"
echo "bench: sysbench errors: $(grep -E 'ignored errors:' "$WORK/sysbench.log" | xargs)"
echo "bench: cutover warnings: $(grep -c WARN "$WORK/cutover.log" || true)"
grep WARN "$WORK/cutover.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300 | head -5 >&2 || true
grep -iE "error|deadlock" "$WORK/sysbench.log" | head -5 >&2 || true
