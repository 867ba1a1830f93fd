# shellcheck shell=bash
# Helpers for a local single-node etcd (Debian etcd-server 3.4). Source after
# scripts/lib/mariadb.sh (apt_install, free_port); defines functions only.
#
#   ensure_etcd                    install etcd-server + etcd-client (apt) if missing
#   etcd_start DIR CLIENT_PORT     start etcd with its data in DIR (pid in DIR/etcd.pid), wait healthy
#   etcd_stop DIR                  SIGTERM it and wait

ensure_etcd() {
    command -v etcd >/dev/null && return 0
    echo "==> installing etcd-server etcd-client (apt)"
    apt_install etcd-server etcd-client
}

etcd_start() {
    local dir=$1 port=$2 peer
    peer=$(free_port)
    mkdir -p "$dir"
    etcd --name n1 --data-dir "$dir/data" \
        --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "n1=http://127.0.0.1:$peer" </dev/null >"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/health" 2>/dev/null | grep -q '"health":"true"' && return 0
        sleep 0.1
    done
    echo "etcd did not start (see $dir/etcd.log)" >&2
    return 1
}

etcd_stop() {
    local dir=$1 pid
    [[ -f "$dir/etcd.pid" ]] || return 0
    pid=$(cat "$dir/etcd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/etcd.pid"
}
