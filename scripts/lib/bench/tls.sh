# shellcheck shell=bash
# scripts/bench --tls: what TLS costs. Sourced by scripts/bench after the release build;
# uses its variables (WORK, OUT, BIN, ROUNDS, SECS, THREADS, TABLES, TABLE_SIZE, BENCH_WARMUP).
#
# Both MariaDB servers serve TLS (a test CA made with openssl; plaintext still allowed so
# the plaintext variants run against the same servers). Variants, oltp_point_select,
# interleaved round-robin:
#   direct          sysbench -> source, plaintext
#   direct_tls      sysbench -> source, TLS (--mysql-ssl=on)
#   cutover_plain   sysbench -> cutover (no [tls]) -> backends with ssl_mode = "disabled"
#   cutover_tls     sysbench -> cutover ([tls]) -> backends with ssl_mode = "verify_identity"
# Results: $OUT/tls.jsonl (every run), $OUT/tls-summary.txt (medians, machine load).

bench_tls_certs() { # DIR: ca.pem, server.pem/.key (SAN 127.0.0.1, localhost); sysbench's names
    local d=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=cutover bench CA" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null || return 1
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
        -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null || return 1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$d/san.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/san.ext" -out "$d/server.pem" 2>/dev/null || return 1
    # sysbench --mysql-ssl=on reads these three names from its working directory.
    cp "$d/ca.pem" "$d/cacert.pem" && cp "$d/server.pem" "$d/client-cert.pem" &&
        cp "$d/server.key" "$d/client-key.pem"
}

bench_tls() {
    local certs=$WORK/certs
    mkdir -p "$certs" && bench_tls_certs "$certs" || die "openssl could not make the test certificates"
    local src dst
    src=$(free_port)
    dst=$(free_port)
    while [[ $dst == "$src" ]]; do dst=$(free_port); done
    bench_log "starting MariaDB :$src and :$dst with TLS"
    mariadb_init "$WORK/src" || die "mariadb_init failed"
    mkdir -p "$WORK/dst" && cp -a "$WORK/src/data" "$WORK/dst/data" || die "copying datadir failed"
    export MARIADB_EXTRA_FLAGS="--ssl-ca=$certs/ca.pem --ssl-cert=$certs/server.pem --ssl-key=$certs/server.key"
    mariadb_start "$WORK/src" "$src" || die "source did not start"
    mariadb_start "$WORK/dst" "$dst" || die "destination did not start"
    unset MARIADB_EXTRA_FLAGS
    bench_db_tune "$src" && bench_db_tune "$dst" || die "SET GLOBAL failed"
    bench_log "sysbench prepare: $TABLES tables × $TABLE_SIZE rows on both servers"
    local port
    for port in "$src" "$dst"; do
        sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$port" \
            --mysql-user=app --mysql-password=app --mysql-db=shop --tables="$TABLES" \
            --table-size="$TABLE_SIZE" --threads="$TABLES" prepare >"$WORK/prepare.$port.log" 2>&1 ||
            die "sysbench prepare failed on :$port"
    done

    declare -A port_of ssl_of
    port_of[direct]=$src ssl_of[direct]=off
    port_of[direct_tls]=$src ssl_of[direct_tls]=on
    port_of[cutover_plain]=$(free_port) ssl_of[cutover_plain]=off
    port_of[cutover_tls]=$(free_port) ssl_of[cutover_tls]=on
    BENCH_CUTOVER_BACKEND='ssl_mode = "disabled"' \
        bench_cutover_start "$WORK" cutover_plain src_only "${port_of[cutover_plain]}" "$(free_port)" \
        "$src" "$dst" "$BIN" || die "cutover (plain) did not start"
    BENCH_CUTOVER_TOP=$(printf '[tls]\ncert = "%s"\nkey = "%s"\nrequire = true' "$certs/server.pem" "$certs/server.key") \
        BENCH_CUTOVER_BACKEND=$(printf 'ssl_mode = "verify_identity"\nssl_ca = "%s"' "$certs/ca.pem") \
        bench_cutover_start "$WORK" cutover_tls src_only "${port_of[cutover_tls]}" "$(free_port)" \
        "$src" "$dst" "$BIN" || die "cutover (tls) did not start ($(tail -n 3 "$WORK/cutover_tls.log"))"

    local variants=(direct direct_tls cutover_plain cutover_tls) results=$OUT/tls.jsonl r k v raw
    : >"$results"
    run_one() { # VARIANT RAW SECONDS
        (cd "$certs" && sysbench oltp_point_select --db-driver=mysql --mysql-host=127.0.0.1 \
            --mysql-port="${port_of[$1]}" --mysql-ssl="${ssl_of[$1]}" --mysql-user=app \
            --mysql-password=app --mysql-db=shop --tables="$TABLES" --table-size="$TABLE_SIZE" \
            --threads="$THREADS" --time="$3" --percentile=95 --report-interval=0 \
            --rand-type=uniform run >"$2" 2>&1)
    }
    for v in "${variants[@]}"; do
        run_one "$v" "$OUT/raw/tls.warmup.$v.txt" "$BENCH_WARMUP" || {
            tail -n 5 "$OUT/raw/tls.warmup.$v.txt" >&2
            die "sysbench via $v failed"
        }
    done
    # TLS really in use: the ciphers the source sees for sysbench's and cutover's sessions.
    bench_sql "$src" -N -e "SHOW GLOBAL STATUS LIKE 'Ssl_accepts'" >"$OUT/tls.ssl_accepts.txt" 2>&1
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((k = 0; k < ${#variants[@]}; k++)); do
            v=${variants[$(((k + r - 1) % ${#variants[@]}))]}
            raw=$OUT/raw/tls.r$r.$v.txt
            run_one "$v" "$raw" "$SECS"
            read -r tps qps p95 err rec < <(bench_parse_sysbench "$raw")
            printf '{"round":%d,"variant":"%s","tps":"%s","p95_ms":"%s","errors":"%s"}\n' \
                "$r" "$v" "$tps" "$p95" "$err" >>"$results"
            bench_log "round $r $v: tps=$tps p95=${p95}ms errors=$err"
        done
    done
    python3 - "$results" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)" >"$OUT/tls-summary.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
med = {}
for v in ("direct", "direct_tls", "cutover_plain", "cutover_tls"):
    tps = [float(r["tps"]) for r in rows if r["variant"] == v and r["tps"] not in ("", "nan")]
    p95 = [float(r["p95_ms"]) for r in rows if r["variant"] == v and r["p95_ms"] not in ("", "nan")]
    med[v] = (statistics.median(tps) if tps else float("nan"), statistics.median(p95) if p95 else float("nan"))
print(f"oltp_point_select, median of {len(rows) // 4} rounds; load before {sys.argv[2]}, after {sys.argv[3]}, {sys.argv[4]} CPUs")
for v, (t, p) in med.items():
    print(f"{v:14} tps {t:10.0f}   p95 {p:6.2f} ms")
print(f"TLS cost direct : {med['direct_tls'][0] / med['direct'][0]:.2f}x tps")
print(f"TLS cost cutover: {med['cutover_tls'][0] / med['cutover_plain'][0]:.2f}x tps (both hops encrypted)")
PY
    cat "$OUT/tls-summary.txt" >&2
}
