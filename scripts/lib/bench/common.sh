#!/usr/bin/env bash
# Helpers for scripts/bench. Source after scripts/lib/mariadb.sh; defines functions only.
#
#   bench_log MSG...                  timestamped progress line on stderr
#   bench_db_tune PORT                buffer pool 256M, max_connections 1000 (SET GLOBAL)
#   bench_haproxy_start DIR PORT UPSTREAM_PORT   haproxy mode tcp, nbthread 1; pid in DIR/haproxy.pid
#   bench_cutover_start DIR NAME PATTERN PORT ADMIN_PORT SRC_PORT DST_PORT BIN
#                                     cutover serve; pid in DIR/NAME.pid, log DIR/NAME.log
#                                     ($CUTOVER_WRAP, if set, is prefixed to the command)
#                                     ($BENCH_CUTOVER_TOP: extra top-level TOML;
#                                     $BENCH_CUTOVER_BACKEND: extra keys for both backends)
#   bench_wait_port PORT PID          wait until PORT answers a MySQL login (or PID died)
#   bench_stop_pid PIDFILE            SIGTERM, wait up to 10 s, then SIGKILL
#   bench_sysbench OUT TEST PORT THREADS SECS TABLES TABLE_SIZE   one sysbench run, output to OUT
#   bench_parse_sysbench OUT          prints "tps qps p95_ms errors reconnects"
#   bench_proc_kb PID FIELD           VmRSS / VmHWM / … in kB from /proc/PID/status
#   bench_reset_hwm PID               reset VmHWM (echo 5 > /proc/PID/clear_refs); false if not allowed

bench_log() {
    printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

bench_sql() {
    local port=$1
    shift
    mariadb -h127.0.0.1 -P"$port" -uapp -papp --connect-timeout=5 "$@"
}

bench_db_tune() {
    local port=$1
    # innodb_buffer_pool_size is dynamic in 10.11 (resized in the background);
    # 200 idle clients through the proxy need more than the default 151 connections.
    bench_sql "$port" -e "SET GLOBAL innodb_buffer_pool_size = 268435456;
        SET GLOBAL max_connections = 1000;"
}

bench_haproxy_start() {
    local dir=$1 port=$2 upstream=$3
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend mysql_in
    bind 127.0.0.1:$port
    default_backend mysql_src
backend mysql_src
    server src 127.0.0.1:$upstream
EOF
    haproxy -f "$dir/haproxy.cfg" -db </dev/null >"$dir/haproxy.log" 2>&1 &
    echo $! >"$dir/haproxy.pid"
    bench_wait_port "$port" "$(cat "$dir/haproxy.pid")"
}

bench_cutover_start() {
    local dir=$1 name=$2 pattern=$3 port=$4 admin=$5 src=$6 dst=$7 bin=$8
    cat >"$dir/$name.toml" <<EOF
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
initial_pattern = "$pattern"
state_file = "$dir/$name.state.json"
data_dir = "$dir/$name.data"
max_connections = 4000
${BENCH_CUTOVER_TOP:-}
[source]
url = "mysql://app:app@127.0.0.1:$src/shop"
${BENCH_CUTOVER_BACKEND:-}
[destination]
url = "mysql://app:app@127.0.0.1:$dst/shop"
${BENCH_CUTOVER_BACKEND:-}
EOF
    # shellcheck disable=SC2086 # CUTOVER_WRAP is a word list (e.g. "valgrind --tool=callgrind")
    CUTOVER_LOG=${CUTOVER_LOG:-warn} ${CUTOVER_WRAP:-} "$bin" serve --config "$dir/$name.toml" \
        </dev/null >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
    bench_wait_port "$port" "$(cat "$dir/$name.pid")"
}

# A real login + query, not just an open port: haproxy and cutover accept
# before their upstream is usable.
bench_wait_port() {
    local port=$1 pid=$2 deadline=$((SECONDS + 60))
    until bench_sql "$port" --connect-timeout=2 -e 'select 1' >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            bench_log "process $pid (port $port) exited during startup"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            bench_log "port $port not answering after 60 s"
            return 1
        fi
        sleep 0.1
    done
}

bench_stop_pid() {
    local pidfile=$1 pid i
    [[ -f "$pidfile" ]] || return 0
    pid=$(cat "$pidfile")
    rm -f "$pidfile"
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

bench_sysbench() {
    local out=$1 test=$2 port=$3 threads=$4 secs=$5 tables=$6 size=$7
    sysbench "$test" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$port" \
        --mysql-user=app --mysql-password=app --mysql-db=shop \
        --tables="$tables" --table-size="$size" --threads="$threads" --time="$secs" \
        --percentile=95 --report-interval=0 \
        --rand-type=uniform run >"$out" 2>&1
}

# "tps qps p95_ms errors reconnects" (fields "nan" when sysbench failed).
bench_parse_sysbench() {
    awk '
        /transactions:/ { gsub(/[()]/, "", $3); tps = $3 }
        /queries:/ && /per sec/ { gsub(/[()]/, "", $3); qps = $3 }
        /95th percentile:/ { p95 = $3 }
        /ignored errors:/ { err = $3 }
        /reconnects:/ { rec = $2 }
        END {
            if (tps == "") tps = "nan"; if (qps == "") qps = "nan"; if (p95 == "") p95 = "nan";
            if (err == "") err = "nan"; if (rec == "") rec = "nan";
            print tps, qps, p95, err, rec
        }' "$1"
}

bench_proc_kb() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null
}

bench_reset_hwm() {
    { echo 5 >"/proc/$1/clear_refs"; } 2>/dev/null
}
