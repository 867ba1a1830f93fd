#!/usr/bin/env bash
# Helpers for running throw-away MariaDB instances without systemd.
# Source this file; it defines functions only (no side effects).
#
#   apt_install PKG...        apt-get install, with one `apt-get update` first
#   ensure_mariadb            install mariadb-server + mariadb-client via apt if mariadbd is missing
#   mariadb_init DIR          create an empty datadir under DIR/data
#   mariadb_start DIR PORT [FLAG...]
#                             start mariadbd on 127.0.0.1:PORT (files under DIR), wait until ready;
#                             extra server flags are appended (a --log-bin… flag drops --skip-log-bin)
#   mariadb_stop DIR          SIGTERM the instance started in DIR and wait for it to exit
#
# Every instance gets, at every start, user 'app'@'%' (password 'app', all privileges)
# and database `shop`.

MARIADBD=${MARIADBD:-}

_mariadb_find_bin() {
    if [[ -z "$MARIADBD" ]]; then
        if command -v mariadbd >/dev/null 2>&1; then
            MARIADBD=$(command -v mariadbd)
        elif [[ -x /usr/sbin/mariadbd ]]; then
            MARIADBD=/usr/sbin/mariadbd
        fi
    fi
    [[ -n "$MARIADBD" ]]
}

_mariadb_root_flag() {
    if [[ $(id -u) -eq 0 ]]; then echo "--user=root"; fi
}

# apt_install PKG...: apt-get install (no recommends), running `apt-get update` once first
# (once per process tree: APT_UPDATED is exported).
apt_install() {
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    if [[ "${APT_UPDATED:-0}" != 1 ]]; then
        "${sudo[@]}" apt-get update -q || return 1
        export APT_UPDATED=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

ensure_mariadb() {
    if _mariadb_find_bin && command -v mariadb >/dev/null 2>&1 \
        && command -v mariadb-install-db >/dev/null 2>&1; then
        return 0
    fi
    echo "==> installing MariaDB (apt)" >&2
    apt_install mariadb-server mariadb-client || return 1
    MARIADBD=
    _mariadb_find_bin || { echo "mariadbd still not found after install" >&2; return 1; }
}

mariadb_init() {
    local dir=${1:?usage: mariadb_init DIR}
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ -d "$dir/data/mysql" ]]; then
        return 0 # already initialised
    fi
    local root_flag
    root_flag=$(_mariadb_root_flag)
    # shellcheck disable=SC2086
    if ! mariadb-install-db --no-defaults --datadir="$dir/data" \
        --auth-root-authentication-method=normal --skip-test-db $root_flag \
        >"$dir/install.log" 2>&1; then
        echo "mariadb-install-db failed for $dir:" >&2
        tail -n 30 "$dir/install.log" >&2
        return 1
    fi
}

_mariadb_write_init_file() {
    cat >"$1" <<'SQL'
CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY 'app';
GRANT ALL ON *.* TO 'app'@'%' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS shop;
SQL
}

mariadb_start() {
    local dir=${1:?usage: mariadb_start DIR PORT} port=${2:?usage: mariadb_start DIR PORT}
    dir=$(cd "$dir" && pwd)
    _mariadb_find_bin || { echo "mariadbd not found (call ensure_mariadb)" >&2; return 1; }
    if [[ -f "$dir/mariadbd.pid" ]] && kill -0 "$(cat "$dir/mariadbd.pid")" 2>/dev/null; then
        echo "MariaDB in $dir is already running (pid $(cat "$dir/mariadbd.pid"))" >&2
        return 1
    fi
    mkdir -p "$dir/tmp"
    _mariadb_write_init_file "$dir/init.sql"
    : >"$dir/error.log"
    local root_flag binlog=--skip-log-bin
    root_flag=$(_mariadb_root_flag)
    # Own session / process group (setsid): a terminal's Ctrl-C reaches the calling script,
    # which stops the server in order, instead of every process at once.
    local setsid=()
    command -v setsid >/dev/null 2>&1 && setsid=(setsid)
    shift 2
    local f
    for f in "$@"; do
        if [[ $f == --log-bin* ]]; then binlog=; fi
    done
    # shellcheck disable=SC2086
    "${setsid[@]}" "$MARIADBD" --no-defaults --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
        --socket="$dir/mysqld.sock" --pid-file="$dir/mariadbd.pid" --log-error="$dir/error.log" \
        --tmpdir="$dir/tmp" --skip-name-resolve --max-connections=1000 $binlog --innodb-buffer-pool-size=64M \
        --innodb-log-file-size=16M --performance-schema=OFF --innodb-flush-log-at-trx-commit=2 \
        --init-file="$dir/init.sql" $root_flag ${MARIADB_EXTRA_FLAGS:-} "$@" \
        </dev/null >>"$dir/error.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/mariadbd.launcher-pid"
    local deadline=$((SECONDS + 30))
    until mariadb -h127.0.0.1 -P"$port" -uapp -papp --connect-timeout=2 -e 'select 1' \
        >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "mariadbd (port $port, dir $dir) exited during startup; error log tail:" >&2
            tail -n 30 "$dir/error.log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "mariadbd (port $port, dir $dir) not ready after 30 s; error log tail:" >&2
            tail -n 30 "$dir/error.log" >&2
            kill -TERM "$pid" 2>/dev/null
            return 1
        fi
        sleep 0.1
    done
}

mariadb_stop() {
    local dir=${1:?usage: mariadb_stop DIR}
    local pid=""
    if [[ -f "$dir/mariadbd.pid" ]]; then
        pid=$(cat "$dir/mariadbd.pid")
    elif [[ -f "$dir/mariadbd.launcher-pid" ]]; then
        pid=$(cat "$dir/mariadbd.launcher-pid")
    fi
    rm -f "$dir/mariadbd.launcher-pid"
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/mariadbd.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null
    local i
    for ((i = 0; i < 300; i++)); do
        # gone, or only a zombie left (its parent shell has not reaped it yet)
        if ! kill -0 "$pid" 2>/dev/null || [[ $(ps -o stat= -p "$pid" 2>/dev/null) == Z* ]]; then
            wait "$pid" 2>/dev/null
            rm -f "$dir/mariadbd.pid"
            return 0
        fi
        sleep 0.1
    done
    echo "mariadbd in $dir did not stop within 30 s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$dir/mariadbd.pid"
}

# Print a free TCP port on 127.0.0.1 (the kernel's choice; racy but fine for tests).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

# True if a TCP socket listens on PORT (any address). Reads /proc/net/tcp{,6} so it does not
# connect (a probe connection would show up as a failed login in the proxy's log).
port_in_use() {
    local hex
    hex=$(printf ':%04X' "$1")
    if [[ -r /proc/net/tcp ]]; then
        awk -v h="$hex" '$4 == "0A" && toupper(substr($2, length($2) - 4)) == h { f = 1 } END { exit !f }' \
            /proc/net/tcp /proc/net/tcp6 2>/dev/null
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
