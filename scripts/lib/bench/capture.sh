#!/usr/bin/env bash
# Change-capture part of scripts/bench_validate.sh (sourced; uses its WORK, SRC_PORT, DST_PORT,
# BIN, MD, CAPTURE_SECS, SERVE_PID, now, since, load).
#
#   bench_capture   sysbench oltp_write_only (8 threads, 4 tables x 10k rows) through
#                   `cutover serve` in src_first, once without and once with
#                   change_capture = "binlog"; /status sampled every second. Then the
#                   re-verification capacity: one UPDATE of 200k rows of `bench` made
#                   directly on both servers, timed until every key is re-verified.
# shellcheck source=scripts/lib/bench/common.sh
source "$ROOT/scripts/lib/bench/common.sh"

_capture_serve() { # NAME EXTRA_VALIDATION_TOML -> starts cutover serve, sets SERVE_PID
    local name=$1 extra=$2
    cat >"$WORK/$name.toml" <<TOML
listen = "127.0.0.1:$CAP_PORT"
admin_listen = "127.0.0.1:$CAP_ADMIN"
initial_pattern = "src_first"
state_file = "$WORK/$name/state.json"
max_connections = 4000
[source]
url = "mysql://app:app@127.0.0.1:$SRC_PORT/shop"
[destination]
url = "mysql://app:app@127.0.0.1:$DST_PORT/shop"
[validation]
$extra
TOML
    mkdir -p "$WORK/$name"
    CUTOVER_LOG=warn "$BIN" serve --config "$WORK/$name.toml" </dev/null >"$WORK/$name.log" 2>&1 &
    SERVE_PID=$!
    bench_wait_port "$CAP_PORT" "$SERVE_PID"
}

_capture_stop() {
    kill -TERM "$SERVE_PID" 2>/dev/null
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=
}

_capture_status() { # one line: the change_capture object as JSON
    curl -s "http://127.0.0.1:$CAP_ADMIN/status" | jq -c '.validation_detail.change_capture'
}

bench_capture() {
    local tables=4 size=10000 threads=8
    CAP_PORT=$(free_port)
    CAP_ADMIN=$(free_port)
    echo "==> change capture under sysbench oltp_write_only ($threads threads, ${CAPTURE_SECS} s, through cutover src_first)"
    _capture_serve plain ""
    # through cutover, so both sides get the same rows
    sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$CAP_PORT" \
        --mysql-user=app --mysql-password=app --mysql-db=shop --tables=$tables --table-size=$size \
        prepare >"$WORK/sb.prepare.log" 2>&1
    bench_sysbench "$WORK/sb.warmup.txt" oltp_write_only "$CAP_PORT" "$threads" 3 $tables $size
    local l_off tps_off tps_on l_on
    l_off=$(load)
    bench_sysbench "$WORK/sb.off.txt" oltp_write_only "$CAP_PORT" "$threads" "$CAPTURE_SECS" $tables $size
    read -r tps_off _ < <(bench_parse_sysbench "$WORK/sb.off.txt")
    _capture_stop

    _capture_serve capture 'change_capture = "binlog"'
    local before
    before=$(_capture_status)
    : >"$WORK/capture.samples"
    (while sleep 1; do _capture_status >>"$WORK/capture.samples"; done) &
    local sampler=$!
    l_on=$(load)
    local t
    t=$(now)
    bench_sysbench "$WORK/sb.on.txt" oltp_write_only "$CAP_PORT" "$threads" "$CAPTURE_SECS" $tables $size
    local run_s
    run_s=$(since "$t")
    local at_end
    at_end=$(_capture_status)
    read -r tps_on _ < <(bench_parse_sysbench "$WORK/sb.on.txt")
    t=$(now)
    local i
    for ((i = 0; i < 1200; i++)); do
        [[ $(_capture_status | jq '.queue_depth') == 0 ]] && break
        sleep 0.1
    done
    local drain_s
    drain_s=$(since "$t")
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null || true
    local final
    final=$(_capture_status)

    # capacity: a burst of 200k changed keys (the same UPDATE on both sides, bypassing cutover)
    local burst=200000 kb0 kb1 burst_s
    kb0=$(jq '.keys_reverified_total' <<<"$final")
    t=$(now)
    both "UPDATE bench SET a = a + 1 WHERE id <= $burst"
    for ((i = 0; i < 3000; i++)); do
        kb1=$(_capture_status | jq '.keys_reverified_total')
        ((kb1 - kb0 >= burst)) && [[ $(_capture_status | jq '.queue_depth') == 0 ]] && break
        sleep 0.1
    done
    burst_s=$(since "$t")
    local burst_kps burst_diffs
    burst_kps=$(awk -v n="$((kb1 - kb0))" -v s="$burst_s" 'BEGIN { printf "%.0f", n / s }')
    burst_diffs=$(_capture_status | jq '.differences_total')
    echo "bench: capture_burst keys=$((kb1 - kb0)) seconds=$burst_s keys_per_s=$burst_kps differences=$burst_diffs load=\"$(load)\""
    _capture_stop

    local k0 k1 c1 kf diffs qmax lagmax evmax
    k0=$(jq '.keys_reverified_total' <<<"$before")
    k1=$(jq '.keys_reverified_total' <<<"$at_end")
    c1=$(jq '.changes_read_total' <<<"$at_end")
    kf=$(jq '.keys_reverified_total' <<<"$final")
    diffs=$(jq '.differences_total' <<<"$final")
    qmax=$(jq -s 'map(.queue_depth) | max' "$WORK/capture.samples")
    lagmax=$(jq -s 'map(.lag_seconds) | max' "$WORK/capture.samples")
    evmax=$(jq -s 'map(.lag_events // 0) | max' "$WORK/capture.samples")
    local kps cps
    kps=$(awk -v a="$k0" -v b="$k1" -v s="$run_s" 'BEGIN { printf "%.0f", (b - a) / s }')
    cps=$(awk -v c="$c1" -v s="$run_s" 'BEGIN { printf "%.0f", c / s }')
    echo "bench: capture tps_without=$tps_off tps_with=$tps_on changes_read_per_s=$cps keys_reverified_per_s=$kps keys_total=$kf differences=$diffs max_queue=$qmax max_lag_s=$lagmax max_lag_events=$evmax drain_s=$drain_s load_off=\"$l_off\" load_on=\"$l_on\""
    {
        echo
        echo "Change capture, sysbench \`oltp_write_only\` $threads threads × ${CAPTURE_SECS} s through cutover (src_first), $tables tables × $size rows:"
        echo
        echo "| measurement | value |"
        echo "|---|---:|"
        echo "| tps without capture (load $l_off) | $tps_off |"
        echo "| tps with \`change_capture = \"binlog\"\` (load $l_on) | $tps_on |"
        echo "| row changes read from the binlog / s | $cps |"
        echo "| keys re-verified / s (during the load) | **$kps** |"
        echo "| keys re-verified in all | $kf |"
        echo "| differences found (sides equal: expected 0) | $diffs |"
        echo "| largest queue depth (1 s samples) | $qmax |"
        echo "| largest lag: seconds / transactions | $lagmax / $evmax |"
        echo "| queue drained after the load in | ${drain_s} s |"
        echo "| capacity: $burst keys changed by one UPDATE (directly on both sides) re-verified in | ${burst_s} s = **$burst_kps keys/s** (differences: $burst_diffs) |"
    } >>"$MD"
}
