#!/usr/bin/env bash
# SFTP download benchmark: recvault (S3 backend on moto, and local backend)
# against OpenSSH's sshd (internal-sftp) and `rclone serve sftp` over the same
# moto bucket, plus the memory cost of idle authenticated SFTP sessions.
#
# A benchmark, not a test: it prints figures and ratios and never fails on
# timing. It exits non-zero only when the setup itself breaks (a server does
# not start, a download fails).
#
# Environment (defaults in brackets):
#   RECVAULT_BIN         recvault binary, relative to the repo root [target/release/recvault]
#   BENCH_SIZE_MIB       size of the random file in MiB [1024]
#   BENCH_RUNS           downloads per peer; the best run is reported [3]
#   MOTO_PYTHON          python with moto and boto3 [.venv/bin/python if present, else python3]
#   BENCH_IDLE_SESSIONS  idle SFTP sessions opened for the memory figure [200]
#   BENCH_CIPHERS        the client's cipher preference list (ssh -c), first one the peer
#                        offers wins [aes128-gcm@openssh.com,aes256-gcm@openssh.com,
#                        chacha20-poly1305@openssh.com]; the report shows each peer's cipher,
#                        and OpenSSH is also measured with recvault's cipher for the ratios
#   BENCH_KEEP_TMP       set to keep the work directory (logs, configs) after the run
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # cd to the repo root, RECVAULT_BIN, MOTO_PYTHON, log, die, cleanup

BENCH_SIZE_MIB=${BENCH_SIZE_MIB:-1024}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_IDLE_SESSIONS=${BENCH_IDLE_SESSIONS:-200}
BENCH_CIPHERS=${BENCH_CIPHERS:-aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com}

[[ $BENCH_SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MIB must be a positive integer"
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
[[ $BENCH_IDLE_SESSIONS =~ ^[0-9]+$ ]] || die "BENCH_IDLE_SESSIONS must be a non-negative integer"
require_recvault_bin
require_tools sftp ssh-keygen rclone ss sha256sum awk
[[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd is not installed (openssh-server)"
require_moto_python

# ---------------------------------------------------------------- cleanup
IDLE_PIDS=()     # idle sftp clients, killed on exit before the servers (PIDS, in lib.sh)
on_cleanup() { ((${#IDLE_PIDS[@]})) && kill_wait "${IDLE_PIDS[@]}"; }
make_work_dir

# ---------------------------------------------------------------- helpers
rss_kib() { # pid: resident set size in KiB
    proc_kib "$1" VmRSS ||
        { tail -n 20 "$TMP/recvault-idle.log" >&2; die "recvault (pid $1) is gone"; }
}

SSH_OPTS=(-q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -i "$TMP/client")

declare -A CIPHER=()
# probe label port user remote_path [ciphers]: one verbose session that lists the
# file (so a broken setup fails before anything is timed) and records the
# negotiated cipher in CIPHER[label].
probe() {
    local label=$1 port=$2 user=$3 remote=$4 ciphers=${5:-$BENCH_CIPHERS} c
    printf 'ls -l %s\n' "$remote" >"$TMP/probe.batch"
    if ! sftp "${SSH_OPTS[@]:1}" -v -c "$ciphers" -P "$port" -b "$TMP/probe.batch" "$user@127.0.0.1" \
        >"$TMP/probe.out" 2>&1; then
        grep -v '^debug' "$TMP/probe.out" >&2 || true
        grep -i 'no matching cipher\|Their offer' "$TMP/probe.out" >&2 || true
        die "$label: cannot list $remote over SFTP"
    fi
    # sftp echoes the batch command; the listing line is the one starting with "-".
    grep -q "^-.* $SIZE_BYTES .*${remote##*/}\$" "$TMP/probe.out" ||
        { grep -v '^debug' "$TMP/probe.out" >&2; die "$label: $remote is not listed with $SIZE_BYTES bytes"; }
    c=$(sed -n 's/.*kex: server->client cipher: \([^ ]*\).*/\1/p' "$TMP/probe.out" | head -n1)
    CIPHER[$label]=${c:-?}
    log "$label: negotiated cipher ${CIPHER[$label]}"
}

declare -A BEST_MBS=() RUNS_MBS=()

# bench_download label port user remote_path [ciphers]: BENCH_RUNS timed `get`s.
# PRE_RUN_HOOK / POST_RUN_HOOK, when set, run just outside the timed part.
bench_download() {
    local label=$1 port=$2 user=$3 remote=$4 ciphers=${5:-$BENCH_CIPHERS} out="$TMP/out.bin" i t0 t1 secs mbs sum best=0 list=
    probe "$label" "$port" "$user" "$remote" "$ciphers"
    printf 'get %s %s\n' "$remote" "$out" >"$TMP/batch"
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        rm -f "$out"
        [[ -n ${PRE_RUN_HOOK:-} ]] && $PRE_RUN_HOOK
        t0=$(now)
        if ! sftp "${SSH_OPTS[@]}" -c "$ciphers" -P "$port" -b "$TMP/batch" "$user@127.0.0.1" >"$TMP/sftp.out" 2>&1; then
            cat "$TMP/sftp.out" >&2
            die "$label: sftp download failed (run $i)"
        fi
        t1=$(now)
        [[ -n ${POST_RUN_HOOK:-} ]] && $POST_RUN_HOOK
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
        mbs=$(awk -v n="$SIZE_BYTES" -v s="$secs" 'BEGIN {printf "%.1f", n / 1e6 / s}')
        sum=$(sha256sum "$out" | cut -d' ' -f1)
        if [[ $sum != "$SRC_SHA" ]]; then
            printf 'MISMATCH: %s run %d: sha256 %s, expected %s (%s bytes downloaded of %s)\n' \
                "$label" "$i" "$sum" "$SRC_SHA" "$(stat -c %s "$out")" "$SIZE_BYTES"
            mbs=0
        fi
        rm -f "$out"
        log "$label run $i: ${secs} s, ${mbs} MB/s"
        list+="${list:+ }$mbs"
        awk -v a="$mbs" -v b="$best" 'BEGIN {exit !(a > b)}' && best=$mbs
    done
    BEST_MBS[$label]=$best
    RUNS_MBS[$label]=$list
}

# start_recvault name config: starts it, sets RV_PID and RV_PORT.
start_recvault() {
    AWS_ACCESS_KEY_ID=$MOTO_KEY AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1 \
        run_recvault "$1" "$2" sftp "listening line"
    log "recvault ($1) pid $RV_PID listening on 127.0.0.1:$RV_PORT"
}

# ---------------------------------------------------------------- data
write_bench_file
SFTP_PATH=$BENCH_TREE_PATH

ssh-keygen -q -t ed25519 -N '' -C bench-client -f "$TMP/client"
ssh-keygen -q -t ed25519 -N '' -C bench-sshd -f "$TMP/sshd_host_key"
ssh-keygen -q -t ed25519 -N '' -C bench-rclone -f "$TMP/rclone_host_key"
CLIENT_PUB=$(cat "$TMP/client.pub")

# ---------------------------------------------------------------- moto
MOTO_RECORDER_FILEPATH="$TMP/moto_recording" start_moto

upload_bench_file

moto_api() { curl -fsS -X POST "$MOTO_ENDPOINT/moto-api/recorder/$1" >/dev/null 2>&1 || true; }
if ! command -v curl >/dev/null; then
    moto_api() { "$MOTO_PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="POST"), timeout=5).read()' "$MOTO_ENDPOINT/moto-api/recorder/$1" >/dev/null 2>&1 || true; }
fi

# Requests each S3 peer sends to moto per download, from moto's request recorder.
declare -A S3_REQS=()
record_start() { moto_api reset-recording; moto_api start-recording; }
record_stop() {
    moto_api stop-recording
    local f="$TMP/moto_recording" n
    [[ -f $f ]] || { RECORDED=; return; }
    n=$(wc -l <"$f")
    RECORDED="$n ($("$MOTO_PYTHON" -c '
import collections, json, sys
c = collections.Counter()
for line in open(sys.argv[1]):
    e = json.loads(line)
    h = {k.lower(): v for k, v in e["headers"].items()}
    c[e["method"] + (" range" if "range" in h else "")] += 1
print(", ".join(f"{n} {m}" for m, n in sorted(c.items())))' "$f"))"
}
record_after_run() { record_stop; S3_REQS[$CUR_LABEL]=$RECORDED; }

# ---------------------------------------------------------------- recvault configs
write_recvault_configs "authorized_keys = [\"$CLIENT_PUB\"]"

# ---------------------------------------------------------------- recvault on moto
start_recvault recvault-s3 "$TMP/recvault-s3.toml"
CUR_LABEL="recvault (moto)" PRE_RUN_HOOK=record_start POST_RUN_HOOK=record_after_run \
    bench_download "recvault (moto)" "$RV_PORT" bench "$SFTP_PATH"
stop_pid "$RV_PID"

# ---------------------------------------------------------------- recvault on local dir
start_recvault recvault-local "$TMP/recvault-local.toml"
bench_download "recvault (local)" "$RV_PORT" bench "$SFTP_PATH"
stop_pid "$RV_PID"

# ---------------------------------------------------------------- OpenSSH sshd
start_sshd "$TMP/client.pub"
bench_download "OpenSSH sshd (local)" "$SSHD_PORT" "$(id -un)" "$TMP/objects/$OBJ_KEY"
# The ratios compare like with like: OpenSSH again with the cipher recvault negotiated.
OPENSSH_REF="OpenSSH sshd (local)"
if [[ ${CIPHER["recvault (moto)"]} != "${CIPHER["OpenSSH sshd (local)"]}" ]]; then
    OPENSSH_REF="OpenSSH sshd (local), ${CIPHER["recvault (moto)"]}"
    bench_download "$OPENSSH_REF" "$SSHD_PORT" "$(id -un)" "$TMP/objects/$OBJ_KEY" "${CIPHER["recvault (moto)"]}"
fi
stop_pid "$SSHD_PID"

# ---------------------------------------------------------------- rclone serve sftp on moto
RCLONE_PORT=$(free_port)
: >"$TMP/rclone.conf"
RCLONE_CONFIG=$TMP/rclone.conf RCLONE_CACHE_DIR=$TMP/rclone-cache \
    RCLONE_CONFIG_MOTO_TYPE=s3 RCLONE_CONFIG_MOTO_PROVIDER=Other \
    RCLONE_CONFIG_MOTO_ENDPOINT=$MOTO_ENDPOINT RCLONE_CONFIG_MOTO_REGION=us-east-1 \
    RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=$MOTO_KEY RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=$MOTO_SECRET \
    RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE=true \
    rclone serve sftp "moto:$MOTO_BUCKET" --addr "127.0.0.1:$RCLONE_PORT" \
    --authorized-keys "$TMP/client.pub" --key "$TMP/rclone_host_key" \
    </dev/null >"$TMP/rclone.log" 2>&1 3>&- 4>&- &
RCLONE_PID=$!
PIDS+=("$RCLONE_PID")
wait_port "$RCLONE_PORT" 30 "$RCLONE_PID" || { cat "$TMP/rclone.log" >&2; die "rclone serve sftp did not start"; }
log "rclone pid $RCLONE_PID listening on 127.0.0.1:$RCLONE_PORT"
CUR_LABEL="rclone serve sftp (moto)" PRE_RUN_HOOK=record_start POST_RUN_HOOK=record_after_run \
    bench_download "rclone serve sftp (moto)" "$RCLONE_PORT" bench "/$OBJ_KEY"
stop_pid "$RCLONE_PID"

# ---------------------------------------------------------------- idle sessions
IDLE_LINE="skipped (BENCH_IDLE_SESSIONS=0)"
if ((BENCH_IDLE_SESSIONS > 0)); then
    start_recvault recvault-idle "$TMP/recvault-s3.toml"
    count() { local n; n=$(grep -c "$1" "$2" 2>/dev/null) || true; echo "${n:-0}"; }
    logins() { count '"event":"login".*"ok":true\|"ok":true.*"event":"login"' "$TMP/audit.log"; }
    connected() { count '^Connected to' "$TMP/idle.err"; }
    # One short session first, so one-off lazy initialisation is not billed to the idle sessions.
    printf 'ls /\n' >"$TMP/warm.batch"
    sftp "${SSH_OPTS[@]}" -c "$BENCH_CIPHERS" -P "$RV_PORT" -b "$TMP/warm.batch" bench@127.0.0.1 >/dev/null 2>&1 ||
        die "warm-up sftp session to recvault failed"
    sleep 1
    base_logins=$(logins)
    rss_before=$(rss_kib "$RV_PID")
    mkfifo "$TMP/idle.stdin"
    exec 4<>"$TMP/idle.stdin"   # nobody writes: every idle sftp waits at its prompt until exit
    n=0
    idle_deadline=$((SECONDS + 120))
    while ((n < BENCH_IDLE_SESSIONS)); do
        for ((j = 0; j < 20 && n < BENCH_IDLE_SESSIONS; j++, n++)); do
            # Not -q: sftp prints "Connected to ..." once its SFTP session is initialised.
            sftp "${SSH_OPTS[@]:1}" -o LogLevel=ERROR -c "$BENCH_CIPHERS" -P "$RV_PORT" bench@127.0.0.1 \
                <"$TMP/idle.stdin" >/dev/null 2>>"$TMP/idle.err" 3>&- 4>&- &
            IDLE_PIDS+=($!)
        done
        # Let this batch get in before the next one (max_unauthenticated = 64).
        until (($(connected) >= n)); do
            ((SECONDS < idle_deadline)) || break 2
            sleep 0.2
        done
    done
    established() { ss -Htn state established "( dport = :$RV_PORT )" | wc -l; }
    until (($(connected) >= BENCH_IDLE_SESSIONS && $(established) >= BENCH_IDLE_SESSIONS)); do
        ((SECONDS < idle_deadline)) || break
        sleep 0.2
    done
    sleep 2   # let the server settle
    conn=$(established)
    ok=$(($(logins) - base_logins))
    ready=$(connected)
    alive=0
    for p in "${IDLE_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=$((alive + 1)); done
    rss_after=$(rss_kib "$RV_PID")
    if ((ready < BENCH_IDLE_SESSIONS || conn < BENCH_IDLE_SESSIONS || ok < BENCH_IDLE_SESSIONS)); then
        log "WARNING: of $BENCH_IDLE_SESSIONS idle sessions only $ready initialised, $conn connections established, $ok logins, $alive sftp clients alive"
        grep -v '^Connected to' "$TMP/idle.err" | sort | uniq -c | head -n 5 >&2 || true
    fi
    N=$((ready < conn ? ready : conn))
    ((N > 0)) || N=1
    IDLE_LINE=$(awk -v b="$rss_before" -v a="$rss_after" -v n="$N" -v want="$BENCH_IDLE_SESSIONS" -v ok="$ok" 'BEGIN {
        per = (a - b) / n
        printf "%d SFTP sessions open (%d logins) of %d: VmRSS %d KiB -> %d KiB, +%d KiB total, %.1f KiB per idle session  [target <= 256 KiB: %s]",
            n, ok, want, b, a, a - b, per, (per <= 256 ? "met" : "NOT met")
    }')
    exec 4>&-
    kill_wait "${IDLE_PIDS[@]}"
    IDLE_PIDS=()
    stop_pid "$RV_PID"
fi

# ---------------------------------------------------------------- server logs
show_server_logs '^recvault: sftp listening on' recvault-s3 recvault-local recvault-idle

# ---------------------------------------------------------------- report
verdict() { awk -v r="$1" -v t="$2" 'BEGIN {if (r == "n/a") print "n/a"; else print (r + 0 >= t ? "met" : "NOT met")}'; }

echo
echo "== recvault SFTP download benchmark =="
printf '%s MiB random file (%d bytes), best of %d run(s), recvault %s\n' \
    "$BENCH_SIZE_MIB" "$SIZE_BYTES" "$BENCH_RUNS" "$RECVAULT_BIN"
printf 'client cipher preference: %s\n' "$BENCH_CIPHERS"
echo
LABELS=("recvault (moto)" "recvault (local)" "OpenSSH sshd (local)")
[[ $OPENSSH_REF != "OpenSSH sshd (local)" ]] && LABELS+=("$OPENSSH_REF")
LABELS+=("rclone serve sftp (moto)")
printf '%-52s %-30s %9s   %s\n' "peer" "cipher" "best MB/s" "all runs (MB/s)"
for label in "${LABELS[@]}"; do
    printf '%-52s %-30s %9s   %s\n' "$label" "${CIPHER[$label]}" "${BEST_MBS[$label]}" "${RUNS_MBS[$label]}"
done
echo
ref=${BEST_MBS[$OPENSSH_REF]}
r1=$(ratio "${BEST_MBS["recvault (moto)"]}" "$ref")
r2=$(ratio "${BEST_MBS["recvault (moto)"]}" "${BEST_MBS["rclone serve sftp (moto)"]}")
r3=$(ratio "${BEST_MBS["recvault (local)"]}" "$ref")
[[ $OPENSSH_REF != "OpenSSH sshd (local)" ]] &&
    echo "(recvault/OpenSSH ratios use OpenSSH with recvault's cipher, ${CIPHER["recvault (moto)"]})"
printf '%-32s %6s   target >= 0.9: %s\n' "recvault(moto) / OpenSSH" "$r1" "$(verdict "$r1" 0.9)"
printf '%-32s %6s\n' "recvault(moto) / rclone(moto)" "$r2"
printf '%-32s %6s   target >= 0.9: %s\n' "recvault(local) / OpenSSH" "$r3" "$(verdict "$r3" 0.9)"
echo
echo "S3 requests to moto per download (last run):"
printf '  %-26s %s\n' "recvault (moto)" "${S3_REQS["recvault (moto)"]:-n/a}"
printf '  %-26s %s\n' "rclone serve sftp (moto)" "${S3_REQS["rclone serve sftp (moto)"]:-n/a}"
echo
echo "Idle-session memory (recvault, moto config, fresh process after one warm-up session):"
echo "  $IDLE_LINE"
