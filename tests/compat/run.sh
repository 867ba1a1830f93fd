#!/usr/bin/env bash
# Compatibility suite: real client libraries against the cutover binary.
#
#   tests/compat/run.sh            build cutover, run every check for every pattern
#
# Environment knobs:
#   COMPAT_PATTERNS="src_first"    only these patterns (default: all four)
#   COMPAT_CHECKS="pymysql cli"    only these checks (pymysql connector mysql2 cli)
#   CUTOVER_BIN=path               use this binary instead of `cargo build --bin cutover`
#   COMPAT_KEEP=1                  keep the temp dir (MariaDB + cutover logs) afterwards
#
# Needs the tools scripts/test installs: MariaDB server+client, .venv with PyMySQL and
# mysql-connector-python, tests/compat/node/node_modules.
# Prints one PASS/FAIL line per check and finally `compat: N passed, M failed`.
set -uo pipefail
export PYTHONDONTWRITEBYTECODE=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
# shellcheck source=scripts/lib/mariadb.sh
source "$ROOT/scripts/lib/mariadb.sh"

PATTERNS=${COMPAT_PATTERNS:-src_only src_first dst_first dst_only}
CHECKS=${COMPAT_CHECKS:-pymysql connector mysql2 cli}
PY=${COMPAT_PYTHON:-$ROOT/.venv/bin/python}
CHECK_TIMEOUT=${COMPAT_CHECK_TIMEOUT:-300}
T0=$SECONDS

passed=0
failed=0
failures=()

note() { echo "compat: $*" >&2; }

# ---------------------------------------------------------------- prerequisites
missing=()
_mariadb_find_bin && command -v mariadb >/dev/null && command -v mariadb-install-db >/dev/null ||
    missing+=("MariaDB server/client")
[[ -x "$PY" ]] && "$PY" -c 'import pymysql, mysql.connector' 2>/dev/null ||
    missing+=("Python venv $PY with PyMySQL + mysql-connector-python")
[[ -d "$ROOT/tests/compat/node/node_modules/mysql2" ]] && command -v node >/dev/null ||
    missing+=("node + tests/compat/node/node_modules (npm ci)")
if ((${#missing[@]})); then
    for m in "${missing[@]}"; do note "missing: $m"; done
    note "run scripts/test (it installs them)"
    echo "compat: 0 passed, 1 failed"
    exit 1
fi

if [[ -n "${CUTOVER_BIN:-}" ]]; then
    BIN=$CUTOVER_BIN
else
    echo "==> cargo build --bin cutover"
    if ! cargo build --bin cutover; then
        echo "FAIL compat: cargo build --bin cutover failed"
        echo "compat: 0 passed, 1 failed"
        exit 1
    fi
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/cutover"
fi
[[ -x "$BIN" ]] || { echo "FAIL compat: no binary at $BIN"; echo "compat: 0 passed, 1 failed"; exit 1; }

# ---------------------------------------------------------------- backends
WORK=$(mktemp -d /tmp/cutover-compat.XXXXXX)
CUTOVER_PID=""

stop_cutover() {
    [[ -n "$CUTOVER_PID" ]] || return 0
    local pid=$CUTOVER_PID i
    CUTOVER_PID=""
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
        return 1
    fi
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    stop_cutover
    mariadb_stop "$WORK/source" 2>/dev/null
    mariadb_stop "$WORK/destination" 2>/dev/null
    if [[ "${COMPAT_KEEP:-0}" == 1 ]]; then
        note "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pick_ports() {
    local p seen=" "
    PORTS=()
    while ((${#PORTS[@]} < $1)); do
        p=$(free_port)
        [[ "$seen" == *" $p "* ]] && continue
        seen+="$p "
        PORTS+=("$p")
    done
}
pick_ports 2
SRC_PORT=${PORTS[0]}
DST_PORT=${PORTS[1]}

echo "==> starting source (port $SRC_PORT) and destination (port $DST_PORT) MariaDB"
t=$SECONDS
mkdir -p "$WORK/source" "$WORK/destination"
# One mariadb-install-db, then a copy: faster than two installs competing for the disk.
if ! { mariadb_init "$WORK/source" && cp -a "$WORK/source/data" "$WORK/destination/data"; }; then
    echo "FAIL compat: mariadb_init"
    echo "compat: 0 passed, 1 failed"
    exit 1
fi
mariadb_start "$WORK/source" "$SRC_PORT" & p1=$!
mariadb_start "$WORK/destination" "$DST_PORT" & p2=$!
ok=1
wait $p1 || ok=0
wait $p2 || ok=0
((ok)) || { echo "FAIL compat: MariaDB did not start"; echo "compat: 0 passed, 1 failed"; exit 1; }
echo "    pair ready in $((SECONDS - t)) s"

# ---------------------------------------------------------------- per pattern
record() { # record PASS|FAIL line
    echo "$2"
    if [[ $1 == PASS ]]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$2")
    fi
}

run_check() { # run_check NAME PATTERN command...
    local name=$1 pattern=$2
    shift 2
    local out rc np nf line
    out=$(cd "$ROOT" && timeout "$CHECK_TIMEOUT" "$@" 2>&1)
    rc=$?
    np=0 nf=0
    while IFS= read -r line; do
        case $line in
        PASS\ *) echo "$line"; passed=$((passed + 1)); np=$((np + 1)) ;;
        FAIL\ *) echo "$line"; failed=$((failed + 1)); nf=$((nf + 1)); failures+=("$line") ;;
        \#*) ;;
        *) [[ -n "$line" ]] && echo "    | $line" ;;
        esac
    done <<<"$out"
    if ((rc != 0 && nf == 0)); then
        local why="exited $rc without reporting a failure"
        ((rc == 124)) && why="timed out after ${CHECK_TIMEOUT}s"
        record FAIL "FAIL $name/$pattern: $why"
    fi
    ((rc == 0 && nf == 0))
}

for pattern in $PATTERNS; do
    echo
    echo "==> pattern $pattern"
    pick_ports 2
    LISTEN=${PORTS[0]}
    ADMIN=${PORTS[1]}
    dir="$WORK/$pattern"
    mkdir -p "$dir"
    cat >"$dir/cutover.toml" <<TOML
listen = "127.0.0.1:$LISTEN"
admin_listen = "127.0.0.1:$ADMIN"
initial_pattern = "$pattern"
state_file = "$dir/state.json"

[source]
url = "mysql://app:app@127.0.0.1:$SRC_PORT/shop"

[destination]
url = "mysql://app:app@127.0.0.1:$DST_PORT/shop"

[[users]]
name = "app"
password = "app"
TOML
    env -u CUTOVER_CONFIG -u CUTOVER_LISTEN -u CUTOVER_ADMIN_LISTEN -u CUTOVER_SOURCE -u CUTOVER_DESTINATION \
        "$BIN" serve --config "$dir/cutover.toml" >"$dir/cutover.log" 2>&1 &
    CUTOVER_PID=$!
    up=0
    for ((i = 0; i < 300; i++)); do
        if port_in_use "$LISTEN"; then up=1; break; fi
        kill -0 "$CUTOVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ((!up)); then
        record FAIL "FAIL compat/$pattern: cutover serve did not listen on $LISTEN within 30 s"
        echo "    cutover log tail:"
        tail -n 20 "$dir/cutover.log" | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/    | /'
        stop_cutover
        continue
    fi
    record PASS "PASS compat/$pattern: cutover serve listens"
    # The admin API reports the pattern the data path runs with.
    if got=$("$PY" - "$ADMIN" <<'PY' 2>&1
import json, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/status"
for attempt in range(50):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            print(json.load(r).get("current_pattern"))
            break
    except OSError as e:
        err = e
        time.sleep(0.1)
else:
    sys.exit(f"GET {url}: {err}")
PY
    ) && [[ "$got" == "$pattern" ]]; then
        record PASS "PASS compat/$pattern: admin GET /status current_pattern is $pattern"
    else
        record FAIL "FAIL compat/$pattern: admin GET /status current_pattern: got [$got], expected [$pattern]"
    fi

    export COMPAT_PATTERN=$pattern COMPAT_PROXY_PORT=$LISTEN COMPAT_SOURCE_PORT=$SRC_PORT \
        COMPAT_DEST_PORT=$DST_PORT COMPAT_HOST=127.0.0.1
    all_ok=1
    for check in $CHECKS; do
        case $check in
        pymysql) run_check pymysql "$pattern" "$PY" tests/compat/python/check_pymysql.py || all_ok=0 ;;
        connector) run_check connector "$pattern" "$PY" tests/compat/python/check_connector.py || all_ok=0 ;;
        mysql2) run_check mysql2 "$pattern" node tests/compat/node/check_mysql2.js || all_ok=0 ;;
        cli) run_check cli "$pattern" bash tests/compat/cli/check_cli.sh || all_ok=0 ;;
        *) record FAIL "FAIL compat: unknown check '$check'" ;;
        esac
    done

    if kill -0 "$CUTOVER_PID" 2>/dev/null; then
        if stop_cutover; then
            record PASS "PASS compat/$pattern: cutover exits on SIGTERM"
        else
            record FAIL "FAIL compat/$pattern: cutover still running 15 s after SIGTERM (killed)"
        fi
    else
        wait "$CUTOVER_PID" 2>/dev/null
        record FAIL "FAIL compat/$pattern: cutover exited during the checks (status $?)"
        CUTOVER_PID=""
        all_ok=0
    fi
    if ((!all_ok)); then
        echo "    cutover log tail ($dir/cutover.log):"
        tail -n 25 "$dir/cutover.log" | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/    | /' | cut -c1-300
    fi
done

echo
if ((${#failures[@]})); then
    echo "==> failures:"
    printf '  %s\n' "${failures[@]}"
fi
echo "==> compat suite took $((SECONDS - T0)) s"
echo "compat: $passed passed, $failed failed"
((failed == 0))
