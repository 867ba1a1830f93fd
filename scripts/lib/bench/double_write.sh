# shellcheck shell=bash
# scripts/bench --double-write: cutover's share of the double write (issue #17). Sourced by
# scripts/bench after the databases, haproxy and the cutover processes are up; uses its
# variables (WORK, OUT, ROOT, BIN, PORT[], SRC_PORT, DST_PORT, ROUNDS, SECS, TABLES,
# TABLE_SIZE, BENCH_WARMUP, LOAD_START).
#
# Variants, oltp_write_only and oltp_read_write, at each of $BENCH_DW_THREADS (8 32),
# interleaved round-robin with the order rotated each round:
#   direct            sysbench -> source (one write, for scale)
#   client_dw         the same transactions written by the client to the source, then to the
#                     destination (scripts/lib/bench/double_write.lua): no proxy at all
#   client_dw_relay   client_dw through two haproxy relays (mode tcp), one per database: what
#                     any relay hop costs on this box, with no work done in the relay
#   cutover_src_only  sysbench -> cutover (src_only): one write through cutover
#   cutover_src_first sysbench -> cutover (src_first): the double write through cutover
#   cutover_when_needed  the same with [mirror] pinning = "when_needed" (pins only what a
#                     write can read; sysbench's writes to its tables need no clock/RNG pin)
# Results: $OUT/double-write.jsonl (every run), $OUT/double-write.json (medians, ratios) and
# $OUT/double-write.md (the table docs/BENCHMARKS.md gets with --docs).

DW_VARIANTS=(direct client_dw client_dw_relay cutover_src_only cutover_src_first cutover_when_needed)
DW_WORKLOADS=(oltp_write_only oltp_read_write)

bench_dw_run() { # VARIANT WORKLOAD THREADS SECS OUT
    local v=$1 w=$2 threads=$3 secs=$4 out=$5 script=$2 ports env=()
    case $v in
    client_dw) ports=$SRC_PORT,$DST_PORT ;;
    client_dw_relay) ports=${PORT[haproxy]},${PORT[haproxy_dst]} ;;
    *) ports=${PORT[$v]} ;;
    esac
    if [[ $v == client_dw* ]]; then
        script=$ROOT/scripts/lib/bench/double_write.lua
        env=(DW_WORKLOAD="$w" DW_SRC_PORT="$SRC_PORT" DW_DST_PORT="$DST_PORT")
    fi
    env "${env[@]}" sysbench "$script" --db-driver=mysql --mysql-host=127.0.0.1 \
        --mysql-port="$ports" --mysql-user=app --mysql-password=app --mysql-db=shop \
        --tables="$TABLES" --table-size="$TABLE_SIZE" --threads="$threads" --time="$secs" \
        --percentile=95 --report-interval=0 --rand-type=uniform run >"$out" 2>&1
}

bench_double_write() {
    local threads_list=(${BENCH_DW_THREADS:-8 32}) results=$OUT/double-write.jsonl
    local r w t k v raw nv=${#DW_VARIANTS[@]} i=0 total rc
    PORT[haproxy_dst]=$(free_port)
    mkdir -p "$WORK/haproxy_dst"
    bench_log "starting haproxy :${PORT[haproxy_dst]} -> :$DST_PORT (the destination's relay)"
    bench_haproxy_start "$WORK/haproxy_dst" "${PORT[haproxy_dst]}" "$DST_PORT" ||
        die "haproxy (destination) did not start"
    cp "$WORK/haproxy_dst/haproxy.pid" "$WORK/haproxy_dst.pid"
    PORT[cutover_when_needed]=$(free_port)
    bench_log "starting cutover src_first, pinning = when_needed :${PORT[cutover_when_needed]}"
    BENCH_CUTOVER_TOP=$'[mirror]\npinning = "when_needed"' bench_cutover_start "$WORK" \
        cutover_when_needed src_first "${PORT[cutover_when_needed]}" "$(free_port)" \
        "$SRC_PORT" "$DST_PORT" "$BIN" || die "cutover (when_needed) did not start"
    : >"$results"
    if ((BENCH_WARMUP > 0)); then
        for v in "${DW_VARIANTS[@]}"; do
            bench_log "warm-up: oltp_read_write ${BENCH_WARMUP} s via $v"
            bench_dw_run "$v" oltp_read_write 8 "$BENCH_WARMUP" "$OUT/raw/dw.warmup.$v.txt" ||
                { tail -n 5 "$OUT/raw/dw.warmup.$v.txt" >&2; die "sysbench via $v failed"; }
        done
    fi
    total=$((ROUNDS * ${#DW_WORKLOADS[@]} * ${#threads_list[@]} * nv))
    for ((r = 1; r <= ROUNDS; r++)); do
        for w in "${DW_WORKLOADS[@]}"; do
            for t in "${threads_list[@]}"; do
                for ((k = 0; k < nv; k++)); do
                    v=${DW_VARIANTS[$(((k + r - 1) % nv))]}
                    i=$((i + 1))
                    raw=$OUT/raw/dw.r$r.$w.t$t.$v.txt
                    bench_dw_run "$v" "$w" "$t" "$SECS" "$raw"
                    rc=$?
                    read -r tps qps p95 err rec < <(bench_parse_sysbench "$raw")
                    ((rc != 0)) && { bench_log "sysbench $w via $v exited $rc:"; tail -n 5 "$raw" >&2; }
                    printf '{"round":%d,"workload":"%s","threads":%d,"variant":"%s","tps":"%s","p95_ms":"%s","errors":"%s","rc":%d,"load1":"%s"}\n' \
                        "$r" "$w" "$t" "$v" "$tps" "$p95" "$err" "$rc" "$(cut -d' ' -f1 /proc/loadavg)" >>"$results"
                    bench_log "[$i/$total] round $r $w ${t}t $v: tps=$tps p95=${p95}ms errors=$err"
                done
            done
        done
    done
    local doc=()
    [[ $DOCS == yes ]] && doc=("$ROOT/docs/BENCHMARKS.md")
    python3 "$ROOT/scripts/lib/bench/double_write_report.py" "$results" "$OUT" \
        "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(git -C "$ROOT" rev-parse --short HEAD)" \
        "${doc[@]}" || die "double_write_report.py failed"
    cat "$OUT/double-write.md" >&2
}
