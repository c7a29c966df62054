#!/usr/bin/env bash
# Load and drain: recvault on moto's S3 server, loopback only, bounded in
# count and time. Four phases, each printing its figures:
#
#   1. sessions: BENCH_SESSIONS authenticated SFTP sessions at once, each
#      with the file open and then BENCH_READS reads of BENCH_READ_KIB KiB in
#      flight, all at once, BENCH_ROUNDS times (examples/load.rs: every byte
#      checked). Memory (PSS of the server's processes) before, with the
#      sessions idle, at the peak of the reads and after they closed; memory
#      per session. The named peer is OpenSSH's sshd serving the same file
#      from local disk to the same load (ratios printed).
#   2. cycles: BENCH_CYCLES connect / authenticate / SFTP REALPATH /
#      disconnect cycles, BENCH_CYCLE_CONCURRENCY at a time; the memory curve
#      after every tenth of them.
#   3. ftps: BENCH_FTPS concurrent FTPS downloads (curl, explicit TLS, PROT P)
#      of the file, each checked by SHA-256; peak memory.
#   4. drain: SIGTERM while BENCH_DRAIN_DOWNLOADS downloads run (half FTPS,
#      half OpenSSH sftp; half paced to end within the drain time, half
#      paced to outlast it), an MP4 is being rendered on its first read and a
#      session (a 10-minute call) was acknowledged by ingest the moment
#      before. Every download must end either whole (SHA-256 checked) or with
#      an error its client reports (never a short file passed off as whole),
#      none may hang; the server must exit by itself within the drain time
#      plus 10 s; storage must hold no unfinished multipart upload and no
#      render lease; after a restart the acknowledged session must be
#      archived (it says whether its archiving was cut by the stop).
#
# It prints errors per phase (each must be 0) and exits 1 when any phase had
# one; it never fails on timing.
#
# Environment (defaults in brackets):
#   RECVAULT_BIN             recvault binary [target/release/recvault]
#   LOAD_BIN                 the load generator [target/release/examples/load]
#   BENCH_SIZE_MIB           the file every phase reads [8]
#   BENCH_SESSIONS           phase 1 sessions [500]
#   BENCH_READS              phase 1 reads in flight per session [64]
#   BENCH_READ_KIB           phase 1 read size [32]
#   BENCH_ROUNDS             phase 1 bursts of reads per session [2]
#   BENCH_CYCLES             phase 2 cycles [10000]
#   BENCH_CYCLE_CONCURRENCY  phase 2 cycles at once [8]
#   BENCH_FTPS               phase 3 concurrent downloads [100]
#   BENCH_DRAIN_DOWNLOADS    phase 4 downloads running at SIGTERM [50]
#   BENCH_DRAIN_SECS         recvault's [limits] drain_secs [10]
#   BENCH_PHASES             which phases to run ["sessions cycles ftps drain"]
#   BENCH_LIMITS             more [limits] lines, e.g. "read_ahead_bytes = 262144"
#   BENCH_KEEP_TMP           set to keep the work directory
#
# Build both binaries first:
#   cargo build --release --bin recvault --example load && bash bench/load.sh
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOAD_BIN=${LOAD_BIN:-target/release/examples/load}
BENCH_SIZE_MIB=${BENCH_SIZE_MIB:-8}
BENCH_SESSIONS=${BENCH_SESSIONS:-500}
BENCH_READS=${BENCH_READS:-64}
BENCH_READ_KIB=${BENCH_READ_KIB:-32}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}
BENCH_CYCLES=${BENCH_CYCLES:-10000}
BENCH_CYCLE_CONCURRENCY=${BENCH_CYCLE_CONCURRENCY:-8}
BENCH_FTPS=${BENCH_FTPS:-100}
BENCH_DRAIN_DOWNLOADS=${BENCH_DRAIN_DOWNLOADS:-50}
BENCH_DRAIN_SECS=${BENCH_DRAIN_SECS:-10}
BENCH_PHASES=${BENCH_PHASES:-"sessions cycles ftps drain"}
for v in BENCH_SIZE_MIB BENCH_SESSIONS BENCH_READS BENCH_READ_KIB BENCH_ROUNDS BENCH_CYCLES \
    BENCH_CYCLE_CONCURRENCY BENCH_FTPS BENCH_DRAIN_DOWNLOADS BENCH_DRAIN_SECS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
((BENCH_SIZE_MIB >= 4)) || die "BENCH_SIZE_MIB must be at least 4 (the drain downloads need time)"
require_recvault_bin
[[ -x $LOAD_BIN ]] || die "$LOAD_BIN not found (cargo build --release --example load)"
require_tools curl sftp ssh-keygen openssl sha256sum awk pkill
require_moto_python
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
make_work_dir

start_moto
write_bench_file
upload_bench_file
make_test_cert
make_password
make_ingest_token
ssh-keygen -q -t ed25519 -N "" -f "$TMP/client_key"
PUBKEY=$(cat "$TMP/client_key.pub")

# Every client comes from 127.0.0.1: the per-address limits that protect a
# real server from one source are raised so they do not throttle the load.
LIMITS=$(cat <<EOF
[limits]
max_connections = 2048
max_unauthenticated = 256
max_unauthenticated_per_source = 256
ban_after_failures = 1000000
drain_secs = $BENCH_DRAIN_SECS
${BENCH_LIMITS:-}
EOF
)
FTPS_TOML="$(ftps_toml)
passive_ports = \"40000-40999\""
write_recvault_config "$TMP/recvault.toml" s3 "ingest_tokens = [\"sha256:$TOKEN_HASH\"]" \
    "password = \"$HASH\"
authorized_keys = [\"$PUBKEY\"]" "$FTPS_TOML" "$(ingest_toml)" "$LIMITS"

start_server() {
    AWS_ACCESS_KEY_ID=$MOTO_KEY AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1 \
        run_recvault recvault "$TMP/recvault.toml" sftp
    SFTP_PORT=$RV_PORT
    FTPS_PORT=$(listening_port recvault ftps)
    INGEST_PORT=$(listening_port recvault ingest)
    [[ -n $FTPS_PORT && -n $INGEST_PORT ]] || die "no FTPS or ingest port in the log"
}
start_server
log "recvault pid $RV_PID: sftp $SFTP_PORT, ftps $FTPS_PORT, ingest $INGEST_PORT"

TOTAL_ERRORS=0
declare -A PHASE_ERRORS

# kv line key: the value of key in a `key=value ...` line.
kv() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

phase_errors() { # phase count
    PHASE_ERRORS[$1]=$2
    TOTAL_ERRORS=$((TOTAL_ERRORS + $2))
}

# ---------------------------------------------------------------- 1. sessions
# sessions_load label port user path pid: phase 1 against one server; prints
# its table and sets IDLE_KIB (memory per idle session), PEAK_KIB (peak
# memory per session) and SESSION_ERRORS.
sessions_load() {
    local label=$1 port=$2 user=$3 path=$4 pid=$5 out rc=0 start conn reads closed
    log "phase 1 ($label): $BENCH_SESSIONS SFTP sessions, $BENCH_READS x $BENCH_READ_KIB KiB reads in flight each"
    out=$("$LOAD_BIN" sessions --port "$port" --user "$user" --key "$TMP/client_key" \
        --server-pid "$pid" --memory pss-tree --path "$path" --expect "$TMP/src.bin" \
        --sessions "$BENCH_SESSIONS" --reads "$BENCH_READS" --size $((BENCH_READ_KIB * 1024)) \
        --rounds "$BENCH_ROUNDS" 2>"$TMP/sessions.err" 3>&- 4>&-) || rc=$?
    cat "$TMP/sessions.err" >&2
    start=$(grep '^phase=start ' <<<"$out")
    conn=$(grep '^phase=connected ' <<<"$out")
    reads=$(grep '^phase=reads ' <<<"$out")
    closed=$(grep '^phase=closed ' <<<"$out")
    [[ -n $closed ]] || die "the load generator stopped early (exit $rc)"
    IDLE_KIB=$(kv "$conn" per_session_kib)
    PEAK_KIB=$(awk -v p="$(kv "$reads" peak_rss_kib)" -v b="$(kv "$start" rss_kib)" -v n="$(kv "$conn" sessions)" 'BEGIN {printf "%.1f", (p - b) / n}')
    SESSION_ERRORS=$(kv "$closed" errors)
    printf '\n1. %s: %s SFTP sessions, %s reads of %s KiB in flight each, %s rounds\n' \
        "$label" "$(kv "$conn" sessions)" "$BENCH_READS" "$BENCH_READ_KIB" "$BENCH_ROUNDS"
    printf '  (memory: PSS of the server'"'"'s processes, sampled every 250 ms)\n'
    printf '  %-36s %10s MiB\n' "before" "$(mib "$(kv "$start" rss_kib)")"
    printf '  %-36s %10s MiB  (%s s to connect all)\n' "all sessions open and idle" "$(mib "$(kv "$conn" rss_kib)")" "$(kv "$conn" secs)"
    printf '  %-36s %10s KiB\n' "per idle session" "$IDLE_KIB"
    printf '  %-36s %10s MiB  (%s MB in %s s, %s MB/s)\n' "peak during the reads" "$(mib "$(kv "$reads" peak_rss_kib)")" \
        "$(awk -v b="$(kv "$reads" bytes)" 'BEGIN {printf "%.0f", b / 1e6}')" "$(kv "$reads" secs)" "$(kv "$reads" mb_per_s)"
    printf '  %-36s %10s KiB\n' "peak per session" "$PEAK_KIB"
    printf '  %-36s %10s MiB\n' "2 s after all closed" "$(mib "$(kv "$closed" rss_kib)")"
    printf '  %-36s %10s\n' "errors" "$SESSION_ERRORS"
}

phase_sessions() {
    sessions_load recvault "$SFTP_PORT" bench "$BENCH_TREE_PATH" "$RV_PID"
    phase_errors sessions "$SESSION_ERRORS"
    local rv_idle=$IDLE_KIB rv_peak=$PEAK_KIB
    # The named peer: OpenSSH's sshd (a process per connection) serving the
    # same file from local disk to the same load.
    [[ -x /usr/sbin/sshd ]] || { log "no /usr/sbin/sshd (openssh-server): no peer for phase 1"; return; }
    start_sshd "$TMP/client_key.pub" "MaxStartups 1024"
    sessions_load "OpenSSH sshd (internal-sftp, local file)" "$SSHD_PORT" "$(id -un)" "$TMP/objects/$OBJ_KEY" "$SSHD_PID"
    phase_errors sessions-openssh "$SESSION_ERRORS"
    stop_pid "$SSHD_PID"
    printf '\n  recvault / OpenSSH: per idle session %s, peak per session %s\n' \
        "$(ratio "$rv_idle" "$IDLE_KIB")" "$(ratio "$rv_peak" "$PEAK_KIB")"
}

# ---------------------------------------------------------------- 2. cycles
phase_cycles() {
    log "phase 2: $BENCH_CYCLES connect/disconnect cycles"
    local out rc=0 end
    out=$("$LOAD_BIN" cycles --port "$SFTP_PORT" --user bench --key "$TMP/client_key" \
        --server-pid "$RV_PID" --cycles "$BENCH_CYCLES" --concurrency "$BENCH_CYCLE_CONCURRENCY" \
        2>"$TMP/cycles.err" 3>&- 4>&-) || rc=$?
    cat "$TMP/cycles.err" >&2
    end=$(grep '^phase=cycles-end ' <<<"$out")
    [[ -n $end ]] || die "the load generator stopped early (exit $rc)"
    printf '\n2. %s SSH connect / authenticate / SFTP / disconnect cycles, %s at a time\n' "$(kv "$end" cycles)" "$BENCH_CYCLE_CONCURRENCY"
    printf '  %-12s %8s %10s\n' "cycles" "secs" "RSS MiB"
    printf '  %-12s %8s %10s\n' 0 0 "$(mib "$(kv "$(grep '^phase=cycles-start ' <<<"$out")" rss_kib)")"
    while read -r l; do
        printf '  %-12s %8s %10s\n' "$(kv "$l" done)" "$(kv "$l" secs)" "$(mib "$(kv "$l" rss_kib)")"
    done < <(grep '^phase=cycles ' <<<"$out")
    printf '  %s cycles/s; RSS 2 s after the last: %s MiB; errors %s\n' "$(kv "$end" per_s)" "$(mib "$(kv "$end" rss_kib)")" "$(kv "$end" errors)"
    phase_errors cycles "$(kv "$end" errors)"
}

# ---------------------------------------------------------------- 3. ftps
# ftps_get out [rate]: one FTPS download of the file to OUT.
ftps_get() {
    local rate=()
    [[ -n ${2:-} ]] && rate=(--limit-rate "$2")
    curl -sS --ssl-reqd --cacert "$TMP/cert.pem" --user "bench:$PASSWORD" "${rate[@]}" \
        -o "$1" "ftp://127.0.0.1:$FTPS_PORT$BENCH_TREE_PATH"
}

# sample_rss file: VmRSS of the server every 50 ms into FILE until killed.
sample_rss() {
    while kill -0 "$RV_PID" 2>/dev/null; do
        proc_kib "$RV_PID" VmRSS >>"$1" || true
        sleep 0.05
    done
}

phase_ftps() {
    log "phase 3: $BENCH_FTPS concurrent FTPS downloads"
    local i pids=() errors=0 before sampler t0 secs peak
    mkdir -p "$TMP/ftps"
    before=$(proc_kib "$RV_PID" VmRSS)
    : >"$TMP/ftps.rss"
    sample_rss "$TMP/ftps.rss" 3>&- 4>&- &
    sampler=$!
    t0=$(now)
    for ((i = 0; i < BENCH_FTPS; i++)); do
        ftps_get "$TMP/ftps/$i" 2>"$TMP/ftps/$i.err" 3>&- 4>&- &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        if ! wait "${pids[$i]}"; then
            errors=$((errors + 1))
            log "download $i failed: $(tail -n1 "$TMP/ftps/$i.err")"
        elif [[ $(sha256sum <"$TMP/ftps/$i" | cut -d' ' -f1) != "$SRC_SHA" ]]; then
            errors=$((errors + 1))
            log "download $i: wrong bytes"
        fi
    done
    secs=$(secs_since "$t0")
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    peak=$(sort -n "$TMP/ftps.rss" | tail -n1)
    rm -rf "$TMP/ftps"
    printf '\n3. %s concurrent FTPS downloads of %s MiB (curl, PROT P)\n' "$BENCH_FTPS" "$BENCH_SIZE_MIB"
    printf '  %s s for all (%s MB/s together); RSS before %s MiB, peak %s MiB (%s KiB per download); errors %s\n' \
        "$secs" "$(awk -v n="$BENCH_FTPS" -v m="$BENCH_SIZE_MIB" -v s="$secs" 'BEGIN {printf "%.0f", n * m * 1.048576 / s}')" \
        "$(mib "$before")" "$(mib "${peak:-0}")" \
        "$(awk -v p="${peak:-0}" -v b="$before" -v n="$BENCH_FTPS" 'BEGIN {printf "%.0f", (p - b) / n}')" "$errors"
    phase_errors ftps "$errors"
}

# ---------------------------------------------------------------- 4. drain
# s3_check: unfinished multipart uploads and render leases in the bucket.
s3_check() {
    MOTO_ENDPOINT=$MOTO_ENDPOINT AWS_ACCESS_KEY_ID=$MOTO_KEY AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1 \
        "$MOTO_PYTHON" - "$MOTO_BUCKET" <<'EOF'
import os, sys
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1")
b = sys.argv[1]
uploads = s3.list_multipart_uploads(Bucket=b).get("Uploads", [])
leases = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=b)
          for o in p.get("Contents", []) if o["Key"].endswith(".lease")]
for u in uploads: print("unfinished upload:", u["Key"], file=sys.stderr)
for k in leases: print("render lease left:", k, file=sys.stderr)
print(len(uploads), len(leases))
EOF
}

# stored key: "yes" when the bucket holds KEY, else "no".
stored() {
    MOTO_ENDPOINT=$MOTO_ENDPOINT AWS_ACCESS_KEY_ID=$MOTO_KEY AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1 \
        "$MOTO_PYTHON" - "$MOTO_BUCKET" "$1" <<'EOF'
import os, sys
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1")
try:
    s3.head_object(Bucket=sys.argv[1], Key=sys.argv[2])
    print("yes")
except Exception:
    print("no")
EOF
}

# status id: the ingest status of session ID ("" when it cannot be read).
status() {
    curl -sS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$INGEST_PORT/v1/sessions/$1/status" 2>/dev/null |
        "$MOTO_PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get("status", ""))' 2>/dev/null || true
}

phase_drain() {
    local n=$BENCH_DRAIN_DOWNLOADS errors=0 i kind pace rate pids=() kinds=() paces=() t_term t_exit rc
    local size_b=$SIZE_BYTES fast slow
    log "phase 4: SIGTERM with $n downloads running, a render and a fresh session"
    # The render's session: a 10-minute call, archived first (not timed).
    "$RECVAULT_BIN" fixture "$TMP/calls" --id drain-render --seconds 600 >/dev/null
    "$RECVAULT_BIN" push "$TMP/calls/drain-render" --url "http://127.0.0.1:$INGEST_PORT" --token "$TOKEN" --wait 300 \
        >/dev/null 3>&- 4>&- || die "push of drain-render failed"
    "$RECVAULT_BIN" fixture "$TMP/calls" --id drain-fresh --seconds 600 >/dev/null
    # Paces: "fast" ends in about half the drain time, "slow" would need
    # four drain times.
    fast=$((size_b * 2 / BENCH_DRAIN_SECS))
    slow=$((size_b / (4 * BENCH_DRAIN_SECS)))
    mkdir -p "$TMP/drain"
    for ((i = 0; i < n; i++)); do
        if ((i % 2)); then kind=sftp; else kind=ftps; fi
        if ((i % 4 < 2)); then pace=fast rate=$fast; else pace=slow rate=$slow; fi
        # Each client records its exit status and when it ended.
        (
            rc=0
            if [[ $kind == ftps ]]; then
                ftps_get "$TMP/drain/$i" "$rate" 2>"$TMP/drain/$i.err" || rc=$?
            else
                # sftp -l is in Kbit/s.
                printf 'get %s %s\n' "$BENCH_TREE_PATH" "$TMP/drain/$i" |
                    sftp -b - -i "$TMP/client_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                        -o BatchMode=yes -o LogLevel=error -l $((rate * 8 / 1000)) -P "$SFTP_PORT" bench@127.0.0.1 \
                        >/dev/null 2>"$TMP/drain/$i.err" || rc=$?
            fi
            printf '%s %s\n' "$rc" "$(now)" >"$TMP/drain/$i.end"
        ) 3>&- 4>&- &
        pids+=($!)
        kinds+=("$kind")
        paces+=("$pace")
    done
    # The MP4's first read starts its render; the fresh session is acknowledged.
    curl -sS --ssl-reqd --cacert "$TMP/cert.pem" --user "bench:$PASSWORD" -o "$TMP/drain/render.mp4" \
        "ftp://127.0.0.1:$FTPS_PORT/2026/11/23/drain-render/drain-render.mp4" 2>"$TMP/drain/render.err" 3>&- 4>&- &
    local render_pid=$!
    sleep 2
    rc=0
    "$RECVAULT_BIN" push "$TMP/calls/drain-fresh" --url "http://127.0.0.1:$INGEST_PORT" --token "$TOKEN" --wait 0 \
        >"$TMP/drain/push.out" 2>&1 3>&- 4>&- || rc=$?
    # 0: archived already; 3: acknowledged, not archived yet (what --wait 0 expects).
    [[ $rc == 0 || $rc == 3 ]] || { cat "$TMP/drain/push.out" >&2; die "push of drain-fresh was not acknowledged (exit $rc)"; }
    t_term=$(now)
    kill -TERM "$RV_PID"
    local deadline=$((SECONDS + BENCH_DRAIN_SECS + 30))
    while kill -0 "$RV_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
    t_exit=$(secs_since "$t_term")
    local exited=1
    rc=0
    if kill -0 "$RV_PID" 2>/dev/null; then
        exited=0
        kill -KILL "$RV_PID" 2>/dev/null || true
        rc=killed
    fi
    wait "$RV_PID" 2>/dev/null || { [[ $rc == killed ]] || rc=$?; }
    local ends=() whole=0 refused=0 short=0 hung=0 limit=$((BENCH_DRAIN_SECS + 5))
    local end_s client_rc t_end
    for i in "${!pids[@]}"; do
        # Every client must end by itself; one still running 30 s after
        # the drain time is hung (counted, then stopped).
        while [[ ! -s $TMP/drain/$i.end ]] && [[ $(secs_since "$t_term" 0) -lt $((limit + 30)) ]]; do sleep 0.05; done
        if [[ ! -s $TMP/drain/$i.end ]]; then
            pkill -P "${pids[$i]}" 2>/dev/null || true
            kill "${pids[$i]}" 2>/dev/null || true
            hung=$((hung + 1))
            log "download $i (${kinds[$i]}, ${paces[$i]}) still running $(secs_since "$t_term" 1) s after SIGTERM"
            continue
        fi
        wait "${pids[$i]}" 2>/dev/null || true
        read -r client_rc t_end <"$TMP/drain/$i.end"
        end_s=$(awk -v a="$t_term" -v b="$t_end" 'BEGIN {printf "%.1f", b - a}')
        ends+=("$end_s")
        if [[ $client_rc == 0 ]]; then
            if [[ $(sha256sum <"$TMP/drain/$i" | cut -d' ' -f1) == "$SRC_SHA" ]]; then
                whole=$((whole + 1))
            else
                short=$((short + 1))
                log "download $i (${kinds[$i]}, ${paces[$i]}): exit 0 with $(stat -c %s "$TMP/drain/$i" 2>/dev/null || echo 0) of $size_b bytes"
            fi
        else
            refused=$((refused + 1))
            echo "${kinds[$i]} ${paces[$i]} (exit $client_rc): $(grep -v '^\s*$' "$TMP/drain/$i.err" | tail -n1)" >>"$TMP/drain/messages"
        fi
    done
    wait "$render_pid" 2>/dev/null || true
    local counts uploads leases
    counts=$(s3_check 2>"$TMP/drain/s3.err") || { cat "$TMP/drain/s3.err" >&2; die "cannot list the bucket after the stop"; }
    local before_restart
    before_restart=$(stored tenants/bench/sessions/2026/11/23/drain-fresh/info.json)
    read -r uploads leases <<<"$counts"
    cat "$TMP/drain/s3.err" >&2
    # Restart: the acknowledged session must be archived.
    start_server
    local st="" t0=$SECONDS
    while ((SECONDS - t0 < 120)); do
        st=$(stored tenants/bench/sessions/2026/11/23/drain-fresh/info.json)
        [[ $st == yes ]] && break
        sleep 0.5
    done
    [[ $st == yes ]] && st=archived || st="NOT in storage after 120 s (ingest status: $(status drain-fresh))"
    printf '\n4. SIGTERM with %s downloads running (%s FTPS, %s sftp; half paced to end within the %s s drain, half to outlast it), an MP4 render and an acknowledged session\n' \
        "$n" $(((n + 1) / 2)) $((n / 2)) "$BENCH_DRAIN_SECS"
    printf '  server exited by itself: %s, %s s after SIGTERM (exit status %s)\n' \
        "$( ((exited)) && echo yes || echo NO)" "$t_exit" "$rc"
    printf '  downloads whole (SHA-256 checked): %s; ended with an error their client reported: %s; short files passed off as whole: %s; still running %s s after SIGTERM: %s\n' \
        "$whole" "$refused" "$short" "$((limit + 30))" "$hung"
    if [[ -s $TMP/drain/messages ]]; then
        printf '  what the cut-off clients said (count, message):\n'
        sed 's/[0-9]\+ bytes/N bytes/g' "$TMP/drain/messages" | sort | uniq -c | sed 's/^/    /'
    fi
    # A client reading at its own rate limit (curl --limit-rate, sftp -l)
    # takes what the kernel had buffered for it before it sees the cut.
    printf '  downloads ended (s after SIGTERM): %s\n' "$(printf '%s\n' "${ends[@]}" | sort -n | tr '\n' ' ')"
    printf '  render: %s\n' "$(tail -n1 "$TMP/drain/render.err" 2>/dev/null || echo "ended")"
    printf '  storage after the stop: %s unfinished multipart uploads, %s render leases\n' "$uploads" "$leases"
    printf '  the session acknowledged just before SIGTERM: %s; after a restart: %s\n' \
        "$([[ $before_restart == yes ]] && echo "archived before the stop" || echo "not yet archived when the server stopped")" "${st:-unknown}"
    ((exited)) || errors=$((errors + 1))
    # The server must be gone by the drain time, the goodbye (5 s) and the clean-up (5 s).
    awk -v e="$t_exit" -v l=$((BENCH_DRAIN_SECS + 10)) 'BEGIN {exit !(e > l)}' && errors=$((errors + 1))
    [[ $rc == 0 ]] || errors=$((errors + 1))
    [[ $st == archived ]] || errors=$((errors + 1))
    errors=$((errors + short + hung + uploads + leases))
    # Each "slow" download must have been cut, each "fast" one must be whole.
    # The fast ones had time to finish; a slow one may have been sent whole
    # into the kernel's socket buffers before the drain ran out, so it may
    # be whole too, but some must have been cut for the phase to test it.
    local fast_whole=0
    for i in "${!pids[@]}"; do
        [[ ${paces[$i]} == fast && -s $TMP/drain/$i.end ]] || continue
        [[ $(cut -d' ' -f1 "$TMP/drain/$i.end") == 0 ]] && fast_whole=$((fast_whole + 1))
    done
    local fast_n=$(( (n / 4) * 2 + (n % 4 < 2 ? n % 4 : 2) ))
    printf '  paced to finish within the drain and whole: %s of %s; cut: %s of %s paced to outlast it\n' \
        "$fast_whole" "$fast_n" "$refused" $((n - fast_n))
    ((fast_whole == fast_n)) || errors=$((errors + 1))
    ((refused > 0)) || { log "no download was cut: the drain was not tested (make BENCH_SIZE_MIB larger)"; errors=$((errors + 1)); }
    printf '  errors: %s\n' "$errors"
    phase_errors drain "$errors"
}

for p in $BENCH_PHASES; do
    case $p in
    sessions) phase_sessions ;;
    cycles) phase_cycles ;;
    ftps) phase_ftps ;;
    drain) phase_drain ;;
    *) die "unknown phase $p" ;;
    esac
done
show_server_logs 'listening on' recvault
printf '\nerrors by phase:'
for p in "${!PHASE_ERRORS[@]}"; do printf ' %s=%s' "$p" "${PHASE_ERRORS[$p]}"; done
printf '\n'
((TOTAL_ERRORS == 0)) || exit 1
