#!/usr/bin/env bash
# Drain-then-swap pause under write load: a MariaDB pair, sysbench
# oltp_write_only at 8 threads through cutover (src_first), and the authority
# switched src_first <-> dst_first SWITCHES times (default 20) over the admin
# API while it runs. Prints `bench:` lines: switches made / aborted, the pause
# quantiles from cutover_switch_pause_seconds, and sysbench's errors (must be 0).
# --fleet: three cutover members sharing the migration through a local etcd (docs/FLEET.md),
# sysbench's 8 threads spread over the three, switches asked of the members in turn; the pause
# is every member's (bucket-interpolated quantiles of cutover_switch_pause_seconds over all
# members), plus the leader's phase durations.
# Usage: scripts/bench_switch_pause.sh [--fleet] [SWITCHES]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib/mariadb.sh
source "$ROOT/scripts/lib/mariadb.sh"
# shellcheck source=scripts/lib/etcd.sh
source "$ROOT/scripts/lib/etcd.sh"
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
FLEET=0
if [[ ${1:-} == --fleet ]]; then FLEET=1; shift; fi
SWITCHES=${1:-20}
MEMBERS=1
((FLEET)) && MEMBERS=3

ensure_mariadb
((FLEET)) && ensure_etcd
command -v sysbench >/dev/null || apt_install sysbench
cargo build --release --quiet --bin cutover
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/cutover"

WORK=$(mktemp -d /tmp/cutover-pause.XXXXXX)
SRC_PORT=$(free_port)
DST_PORT=$(free_port)
while [[ "$DST_PORT" == "$SRC_PORT" ]]; do DST_PORT=$(free_port); done
CUTOVER_PIDS=()
cleanup() {
    for pid in "${CUTOVER_PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    mariadb_stop "$WORK/src" || true
    mariadb_stop "$WORK/dst" || true
    etcd_stop "$WORK/etcd" || true
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
COORD=""
if ((FLEET)); then
    ETCD_PORT=$(free_port)
    etcd_start "$WORK/etcd" "$ETCD_PORT"
    COORD="[coordination]
backend = \"etcd\"
endpoints = [\"http://127.0.0.1:$ETCD_PORT\"]
prefix = \"/cutover/bench\""
fi
PROXY_PORTS=() ADMIN_PORTS=()
for m in $(seq "$MEMBERS"); do
    PROXY_PORT=$(free_port)
    ADMIN_PORT=$(free_port)
    PROXY_PORTS+=("$PROXY_PORT")
    ADMIN_PORTS+=("$ADMIN_PORT")
    # (built outside the here-document: quotes inside ${…:+…} there are removed)
    MEMBER_COORD=""
    ((FLEET)) && MEMBER_COORD="$COORD
member_id = \"m$m\""
    cat >"$WORK/cutover$m.toml" <<TOML
listen = "127.0.0.1:$PROXY_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
initial_pattern = "src_first"
state_file = "$WORK/state$m.json"
data_dir = "$WORK/data$m"
[source]
url = "mysql://app:app@127.0.0.1:$SRC_PORT/shop"
[destination]
url = "mysql://app:app@127.0.0.1:$DST_PORT/shop"
$MEMBER_COORD
TOML
    CUTOVER_LOG=warn "$BIN" serve --config "$WORK/cutover$m.toml" 2>"$WORK/cutover$m.log" &
    CUTOVER_PIDS+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ADMIN_PORT/health" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$ADMIN_PORT/health" >/dev/null \
        || { echo "bench: cutover $m did not start:" >&2; cat "$WORK/cutover$m.log" >&2; exit 1; }
done
PORTS=$(IFS=,; echo "${PROXY_PORTS[*]}")

DURATION=${BENCH_SECONDS:-$((SWITCHES / 2 + 4))}
sysbench oltp_write_only --mysql-host=127.0.0.1 --mysql-port="$PORTS" --mysql-user=app \
    --mysql-password=app --mysql-db=shop --tables=2 --table-size=10000 --threads=8 \
    --time="$DURATION" --report-interval=0 --verbosity=4 run >"$WORK/sysbench.log" 2>&1 &
SB=$!
sleep 1
made=0 aborted=0
for i in $(seq "$SWITCHES"); do
    if (( i % 2 )); then to=dst_first; else to=src_first; fi
    admin=${ADMIN_PORTS[$(( (i - 1) % MEMBERS ))]}
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$admin/$to?force=true")
    if [[ $code == 200 ]]; then made=$((made + 1)); else aborted=$((aborted + 1)); fi
    sleep 0.4
done
wait "$SB" || true
: >"$WORK/metrics"
for admin in "${ADMIN_PORTS[@]}"; do curl -s "http://127.0.0.1:$admin/metrics" >>"$WORK/metrics"; done
# Quantiles of a histogram summed over every member's scrape (linear within a bucket, like
# PromQL's histogram_quantile).
hq() {
    awk -v name="$1" -v q="$2" -v filter="${3:-}" '
        index($1, name "_bucket{") == 1 && (filter == "" || index($1, filter)) {
            match($1, /le="[^"]*"/); le = substr($1, RSTART + 4, RLENGTH - 5)
            n[le] += $2; if (!(le in seen)) { seen[le] = 1; order[++k] = le }
        }
        END {
            total = n["+Inf"]; if (total == 0) { print "n/a"; exit }
            prev_le = 0; prev_n = 0
            for (i = 1; i <= k; i++) {
                le = order[i]; if (le == "+Inf") continue
                if (n[le] >= q * total) {
                    f = (n[le] - prev_n) ? (q * total - prev_n) / (n[le] - prev_n) : 0
                    printf "%.1f", (prev_le + (le - prev_le) * f) * 1000; exit
                }
                prev_le = le; prev_n = n[le]
            }
            printf ">%.0f", prev_le * 1000
        }' "$WORK/metrics"
}
count=$(awk '$1 ~ /^cutover_switch_pause_seconds_count/ {s += $2} END {print s + 0}' "$WORK/metrics")
mode=single; ((FLEET)) && mode="fleet of $MEMBERS (etcd)"
echo "bench: mode $mode; switches made $made, aborted $aborted; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench: switch pause over $count member pauses: p50 $(hq cutover_switch_pause_seconds 0.5) ms, p99 $(hq cutover_switch_pause_seconds 0.99) ms"
if ((FLEET)); then
    echo "bench: leader phases: prepare p50 $(hq cutover_switch_phase_seconds 0.5 'phase="prepare"') ms p99 $(hq cutover_switch_phase_seconds 0.99 'phase="prepare"') ms; commit p50 $(hq cutover_switch_phase_seconds 0.5 'phase="commit"') ms p99 $(hq cutover_switch_phase_seconds 0.99 'phase="commit"') ms"
fi
echo "bench: sysbench write_only through the switches: $(grep -E 'transactions:' "$WORK/sysbench.log" | xargs)"
echo "bench: sysbench errors: $(grep -E 'ignored errors:' "$WORK/sysbench.log" | xargs)"
echo "bench: cutover warnings: $(cat "$WORK"/cutover*.log | grep -c WARN || true)"
cat "$WORK"/cutover*.log | grep WARN | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300 | head -5 >&2 || true
grep -iE "error|deadlock" "$WORK/sysbench.log" | head -5 >&2 || true
