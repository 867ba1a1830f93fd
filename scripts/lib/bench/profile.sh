#!/usr/bin/env bash
# scripts/bench --profile: instruction and syscall counts per statement for cutover (src_only)
# under sysbench oltp_point_select. Sourced by scripts/bench after the databases are up; uses
# its variables (WORK, OUT, BIN, SRC_PORT, DST_PORT, THREADS, SECS, TABLES, TABLE_SIZE).
#
# 1. callgrind: counters are zeroed once the proxy is up (startup excluded), sysbench runs
#    SECS seconds, the proxy is stopped; inclusive.txt from callgrind_annotate, self.txt
#    (exclusive cost + allocator call counts) from callgrind_self.py.
# 2. strace -f -c on the native binary during a 5 s run: syscalls per statement.

bench_events() { # total sysbench events in a run's output
    awk '/total number of events:/ { print $5 }' "$1"
}

bench_profile() {
    local dir=$OUT/profile port events ir
    mkdir -p "$dir"
    rm -f "$dir"/callgrind.out*
    port=$(free_port)
    bench_log "profile: cutover src_only under callgrind :$port (slow start)"
    CUTOVER_WRAP="valgrind --tool=callgrind --callgrind-out-file=$dir/callgrind.out" \
        bench_cutover_start "$WORK" cutover_cg src_only "$port" "$(free_port)" \
        "$SRC_PORT" "$DST_PORT" "$BIN" || die "cutover under valgrind did not start"
    callgrind_control -z "$(cat "$WORK/cutover_cg.pid")" >/dev/null 2>&1 ||
        bench_log "callgrind_control -z failed; the profile includes startup"
    bench_log "profile: sysbench oltp_point_select, $THREADS threads, $SECS s"
    BENCH_WARMUP=0 bench_sysbench "$dir/sysbench.callgrind.txt" oltp_point_select "$port" \
        "$THREADS" "$SECS" "$TABLES" "$TABLE_SIZE"
    events=$(bench_events "$dir/sysbench.callgrind.txt")
    bench_stop_pid "$WORK/cutover_cg.pid"
    sleep 1
    [[ -s "$dir/callgrind.out" ]] || die "no callgrind output"
    callgrind_annotate --inclusive=yes "$dir/callgrind.out" >"$dir/inclusive.txt" 2>/dev/null
    python3 "$ROOT/scripts/lib/bench/callgrind_self.py" "$dir/callgrind.out" 60 >"$dir/self.txt"
    ir=$(awk '/PROGRAM TOTALS/ { gsub(/,/, "", $1); print $1; exit }' "$dir/inclusive.txt")
    {
        echo "statements (sysbench events): $events"
        echo "instructions (Ir, counters zeroed after startup): $ir"
        [[ -n "$events" && "$events" -gt 0 && -n "$ir" ]] &&
            echo "Ir per statement: $((ir / events))"
    } | tee "$dir/per_statement.txt" >&2

    if command -v strace >/dev/null; then
        port=$(free_port)
        bench_log "profile: strace -f -c, native cutover :$port, 5 s"
        CUTOVER_WRAP="strace -f -c -o $dir/strace.txt" \
            bench_cutover_start "$WORK" cutover_st src_only "$port" "$(free_port)" \
            "$SRC_PORT" "$DST_PORT" "$BIN" || die "cutover under strace did not start"
        BENCH_WARMUP=0 bench_sysbench "$dir/sysbench.strace.txt" oltp_point_select "$port" \
            "$THREADS" 5 "$TABLES" "$TABLE_SIZE"
        events=$(bench_events "$dir/sysbench.strace.txt")
        # stop the traced proxy itself; strace then writes its table and exits
        local spid child i
        spid=$(cat "$WORK/cutover_st.pid")
        child=$(pgrep -P "$spid" | head -n 1)
        [[ -n "$child" ]] && kill -TERM "$child" 2>/dev/null
        for ((i = 0; i < 100; i++)); do kill -0 "$spid" 2>/dev/null || break; sleep 0.1; done
        bench_stop_pid "$WORK/cutover_st.pid"
        {
            echo "statements (sysbench events): $events (plus startup and $THREADS logins)"
            awk -v n="$events" 'n > 0 && $NF ~ /^[a-z_0-9]+$/ && $NF != "total" && $4 ~ /^[0-9]+$/ {
                    printf "  %-16s %10d calls  %.2f per statement\n", $NF, $4, $4 / n; sum += $4 }
                END { if (n > 0) printf "  %-16s %10d calls  %.2f per statement\n", "TOTAL", sum, sum / n }' \
                "$dir/strace.txt"
        } | tee -a "$dir/per_statement.txt" >&2
    fi
}
