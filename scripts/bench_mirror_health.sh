#!/usr/bin/env bash
# Mirror health under a deadlock-heavy load (issue 20): sysbench oltp_read_write, 16 threads,
# 2 tables x 2,000 rows, through cutover in src_first; prints sysbench's transactions and
# ignored (deadlock) errors, CHECKSUM TABLE on both sides, the mirror-health metrics that are
# not 0, /status open_inconsistencies + mirror_health, and the first differing rows of sbtest1.
#
#   scripts/bench_mirror_health.sh            (SECS=30; EXTRA='[mirror]\nretries = 0' adds config)
#
# Needs sysbench, MariaDB (scripts/lib/mariadb.sh) and a built binary (CUTOVER_BIN, default
# target/debug/cutover). A measurement, not a test: nothing is asserted.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source $ROOT/scripts/lib/mariadb.sh
source $ROOT/scripts/lib/bench/common.sh
D=$(mktemp -d); SECS=${SECS:-30}; BIN=${CUTOVER_BIN:-$ROOT/target/debug/cutover}
SP=$(free_port); DP=$(free_port); CP=$(free_port); AP=$(free_port)
for s in src dst; do rm -rf $D/$s; mariadb_init $D/$s; done
mariadb_start $D/src $SP && mariadb_start $D/dst $DP || exit 1
trap 'bench_stop_pid $D/cut.pid; mariadb_stop $D/src; mariadb_stop $D/dst; rm -rf $D' EXIT
sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=$SP --mysql-user=app --mysql-password=app --mysql-db=shop --tables=2 --table-size=2000 prepare >/dev/null
mariadb-dump -h127.0.0.1 -P$SP -uapp -papp shop | mariadb -h127.0.0.1 -P$DP -uapp -papp shop
cat > $D/cut.toml <<T
listen = "127.0.0.1:$CP"
admin_listen = "127.0.0.1:$AP"
initial_pattern = "src_first"
state_file = "$D/state.json"
[source]
url = "mysql://app:app@127.0.0.1:$SP/shop"
[destination]
url = "mysql://app:app@127.0.0.1:$DP/shop"
${EXTRA:-}
T
rm -f $D/state.json
CUTOVER_LOG=warn "$BIN" serve --config $D/cut.toml </dev/null >$D/cut.log 2>&1 &
echo $! > $D/cut.pid
bench_wait_port $CP "$(cat $D/cut.pid)" || exit 1
sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=$CP --mysql-user=app --mysql-password=app --mysql-db=shop --tables=2 --table-size=2000 --threads=16 --time=$SECS --mysql-ignore-errors=1213,1205 --report-interval=0 run > $D/sysbench.out 2>&1
grep -E "transactions:|ignored errors:|queries:" $D/sysbench.out
for p in $SP $DP; do mariadb -h127.0.0.1 -P$p -uapp -papp shop -N -e "CHECKSUM TABLE sbtest1, sbtest2"; done
curl -s http://127.0.0.1:$AP/metrics | grep -vE "} 0$" | grep -E "^cutover_(double_writes|mirror_failures|mirror_retries|secondary_errors|mirror_mismatches|unsafe)"
sleep 4
curl -s http://127.0.0.1:$AP/status | python3 -c 'import json,sys; s=json.load(sys.stdin); print("open_inconsistencies", s.get("open_inconsistencies"), "mirror_health", s.get("mirror_health"))'
echo "re-check log lines: $(grep -c "re-check" $D/cut.log)"
for p in $SP $DP; do mariadb -h127.0.0.1 -P$p -uapp -papp shop -N -e "SELECT id, k, LEFT(c,12) FROM sbtest1 ORDER BY id" > $D/rows.$p; done
diff $D/rows.$SP $D/rows.$DP | head -20
