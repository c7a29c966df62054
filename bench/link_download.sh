#!/usr/bin/env bash
# Single-stream downloads through a model of the link to real S3: each
# connection to the S3 server capped at BENCH_LINK_MBPS MB/s, every answer
# BENCH_FIRST_BYTE_MS ms late (examples/link_proxy.rs, the integration
# tests' fault proxy as a program). Peers, in one run:
#
#   recvault SFTP and FTPS through the link (ranged reads on, the default)
#   recvault SFTP through the link with ranged reads off (range_reads_per_file = 1)
#   recvault SFTP straight to the S3 server, and through the proxy with no
#     cap and no delay (the proxy's own overhead), and from local disk
#   OpenSSH sshd (internal-sftp) and vsftpd serving the same file from local disk
#   rclone serve sftp on the same bucket through the same link
#
# The S3 server is s3s-fs (crates.io; serves a range without reading the
# whole object) when S3S_FS_BIN or `s3s-fs` on PATH finds it, else moto
# (which copies the whole object for every ranged GET: ranged figures are
# then moto's, not the link's). Each run's SHA-256 is checked. For every
# recvault run it prints the S3 requests it sent (the proxy's count), the
# CPU-seconds the serving process used and those of the S3 server and link
# proxies together ("storage side": on this machine they share its cores
# with the peer and the client; real S3 runs elsewhere), and the
# download's curve: seconds
# to 10/50/100 % and the longest time with no byte received (sampled every
# 0.1 s).
#
# A benchmark, not a test: it prints figures and ratios and never fails on
# timing; it exits non-zero only when its setup breaks.
#
# Environment (defaults in brackets):
#   RECVAULT_BIN          [target/release/recvault]
#   LINK_PROXY_BIN        [target/release/examples/link_proxy]
#   S3S_FS_BIN            [s3s-fs on PATH, else moto]
#   BENCH_SIZE_MIB        [1024]
#   BENCH_RUNS            downloads per peer, best reported [2]
#   BENCH_LINK_MBPS       per-connection cap of the link [90]
#   BENCH_FIRST_BYTE_MS   delay before each answer's first byte [30]
#   BENCH_KEEP_TMP        keep the work directory
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SIZE_MIB=${BENCH_SIZE_MIB:-1024}
BENCH_RUNS=${BENCH_RUNS:-2}
BENCH_LINK_MBPS=${BENCH_LINK_MBPS:-90}
BENCH_FIRST_BYTE_MS=${BENCH_FIRST_BYTE_MS:-30}
LINK_PROXY_BIN=${LINK_PROXY_BIN:-target/release/examples/link_proxy}
CIPHER=aes128-gcm@openssh.com
TLS_OPTS=(--tls-max 1.2 --ciphers ECDHE-RSA-AES128-GCM-SHA256)

[[ $BENCH_SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MIB must be a positive integer"
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
require_recvault_bin
[[ -x $LINK_PROXY_BIN ]] || die "$LINK_PROXY_BIN not found (cargo build --release --examples)"
require_tools sftp ssh-keygen rclone curl openssl sha256sum awk
[[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd is not installed (openssh-server)"
S3S_FS_BIN=${S3S_FS_BIN:-$(command -v s3s-fs || true)}
make_work_dir

# ---------------------------------------------------------------- data and keys
write_bench_file
ssh-keygen -q -t ed25519 -N '' -C bench-client -f "$TMP/client"
ssh-keygen -q -t ed25519 -N '' -C bench-rclone -f "$TMP/rclone_host_key"
make_test_cert
make_password

# ---------------------------------------------------------------- the S3 server
STORAGE_PIDS=()   # the S3 server and the link proxies: their CPU is "storage side"
if [[ -n $S3S_FS_BIN ]]; then
    S3_KIND="s3s-fs ($("$S3S_FS_BIN" --version 2>/dev/null | head -n1 || echo "?"))"
    MOTO_KEY=benchkey MOTO_SECRET=benchsecret-0123456789 MOTO_BUCKET=recordings
    # The bucket is a folder; objects go in through S3 (a file placed
    # there by hand has no stored ETag, and s3s-fs hashes it on every GET).
    mkdir -p "$TMP/s3root/$MOTO_BUCKET"
    S3_PORT=$(free_port)
    "$S3S_FS_BIN" --host 127.0.0.1 --port "$S3_PORT" --access-key "$MOTO_KEY" --secret-key "$MOTO_SECRET" \
        "$TMP/s3root" </dev/null >"$TMP/s3s.log" 2>&1 3>&- 4>&- &
    S3_PID=$!
    PIDS+=("$S3_PID")
    STORAGE_PIDS+=("$S3_PID")
    wait_port "$S3_PORT" 30 "$S3_PID" || { cat "$TMP/s3s.log" >&2; die "s3s-fs did not start"; }
    S3_ENDPOINT=http://127.0.0.1:$S3_PORT
    require_moto_python   # boto3, for the upload
    MOTO_ENDPOINT=$S3_ENDPOINT upload_bench_file
else
    S3_KIND="moto (copies the whole object for each ranged GET)"
    require_moto_python
    start_moto
    upload_bench_file
    S3_ENDPOINT=$MOTO_ENDPOINT
    [[ -n $MOTO_SERVER_PID ]] && STORAGE_PIDS+=("$MOTO_SERVER_PID")
fi
log "S3 server: $S3_KIND at $S3_ENDPOINT"

# start_link name mbps first_byte_ms: a link proxy in front of the S3 server;
# sets LINK_ENDPOINT and LINK_COUNT (its request count file).
start_link() {
    local port
    port=$(free_port)
    LINK_COUNT=$TMP/$1.count
    "$LINK_PROXY_BIN" "$port" "$S3_ENDPOINT" --rate-mbps "$2" --first-byte-ms "$3" --count-file "$LINK_COUNT" \
        </dev/null >"$TMP/$1.out" 2>&1 3>&- 4>&- &
    PIDS+=($!)
    STORAGE_PIDS+=($!)
    wait_port "$port" 20 $! || { cat "$TMP/$1.out" >&2; die "link proxy $1 did not start"; }
    LINK_ENDPOINT=http://127.0.0.1:$port
}
start_link link "$BENCH_LINK_MBPS" "$BENCH_FIRST_BYTE_MS"
LINK=$LINK_ENDPOINT LINK_REQS=$LINK_COUNT
start_link open 0 0
OPEN=$LINK_ENDPOINT OPEN_REQS=$LINK_COUNT

# ---------------------------------------------------------------- measuring
declare -A BEST_MBS=() RUNS=() DETAIL=()
SSH_OPTS=(-q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -i "$TMP/client" -c "$CIPHER")

cpu_secs() { # pid...: user+system CPU seconds so far, summed
    local pid sum=0 one
    for pid in "$@"; do
        one=$(awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        sum=$(awk -v a="$sum" -v b="$one" 'BEGIN {print a + b}')
    done
    echo "$sum"
}

# measure label pid reqfile command...: BENCH_RUNS runs of a command writing
# $TMP/out.bin, sampled every 0.1 s; PID's CPU time and REQFILE's request
# count (either may be "-") are read around each run.
measure() {
    local label=$1 pid=$2 reqs=$3 i t0 c0 s0 r0 cmdpid got last_got t last_t stall t10 t50 secs mbs sum best=0 list= detail=
    shift 3
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        rm -f "$TMP/out.bin"
        c0=0 r0=0
        [[ $pid != - ]] && c0=$(cpu_secs "$pid")
        s0=$(cpu_secs "${STORAGE_PIDS[@]}")
        [[ $reqs != - ]] && r0=$(cat "$reqs")
        t0=$(now)
        "$@" >"$TMP/client.log" 2>&1 &
        cmdpid=$!
        last_got=0 last_t=0 stall=0 t10= t50=
        while kill -0 "$cmdpid" 2>/dev/null; do
            sleep 0.1
            got=$(stat -c %s "$TMP/out.bin" 2>/dev/null || echo 0)
            t=$(secs_since "$t0" 3)
            if ((got > last_got)); then last_got=$got last_t=$t; else
                stall=$(awk -v s="$stall" -v a="$last_t" -v b="$t" 'BEGIN {d = b - a; print (d > s ? d : s)}')
            fi
            [[ -z $t10 ]] && ((got * 10 >= SIZE_BYTES)) && t10=$t
            [[ -z $t50 ]] && ((got * 2 >= SIZE_BYTES)) && t50=$t
        done
        wait "$cmdpid" || { cat "$TMP/client.log" >&2; die "$label: download failed (run $i)"; }
        secs=$(secs_since "$t0" 3)
        sum=$(sha256sum "$TMP/out.bin" | cut -d' ' -f1)
        [[ $sum == "$SRC_SHA" ]] || die "$label run $i: sha256 mismatch ($(stat -c %s "$TMP/out.bin") of $SIZE_BYTES bytes)"
        mbs=$(awk -v n="$SIZE_BYTES" -v s="$secs" 'BEGIN {printf "%.1f", n / 1e6 / s}')
        detail="10/50/100 % at ${t10:-?}/${t50:-?}/$secs s, longest stall $(printf '%.1f' "$stall") s"
        [[ $pid != - ]] && detail+=", $(awk -v a="$c0" -v b="$(cpu_secs "$pid")" 'BEGIN {printf "%.1f", b - a}') CPU-s"
        detail+=", storage side $(awk -v a="$s0" -v b="$(cpu_secs "${STORAGE_PIDS[@]}")" 'BEGIN {printf "%.1f", b - a}') CPU-s"
        [[ $reqs != - ]] && { sleep 0.1; detail+=", $(($(cat "$reqs") - r0)) S3 requests"; }
        log "$label run $i: ${mbs} MB/s; $detail"
        list+="${list:+ }$mbs"
        if awk -v a="$mbs" -v b="$best" 'BEGIN {exit !(a > b)}'; then best=$mbs; DETAIL[$label]=$detail; fi
    done
    rm -f "$TMP/out.bin"
    BEST_MBS[$label]=$best
    RUNS[$label]=$list
}

sftp_get() { # port user remote
    printf 'get %s %s\n' "$3" "$TMP/out.bin" >"$TMP/batch"
    sftp "${SSH_OPTS[@]}" -P "$1" -b "$TMP/batch" "$2@127.0.0.1"
}
ftps_get() { # url user:password
    curl -sS --ssl-reqd --cacert "$TMP/cert.pem" "${TLS_OPTS[@]}" --user "$2" -o "$TMP/out.bin" "$1"
}

# recvault_on name endpoint [limits line...]: recvault on the S3 server at ENDPOINT.
recvault_on() {
    local name=$1 endpoint=$2 line limits=""
    shift 2
    for line in "$@"; do limits+="$line"$'\n'; done
    MOTO_ENDPOINT=$endpoint write_recvault_config "$TMP/$name.toml" s3 "" \
        "authorized_keys = [\"$(cat "$TMP/client.pub")\"]"$'\n'"password = \"$HASH\"" \
        "$(ftps_toml)" "[limits]"$'\n'"$limits"
    AWS_ACCESS_KEY_ID=$MOTO_KEY AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1 \
        run_recvault "$name" "$TMP/$name.toml" sftp
    RV_FTPS=$(listening_port "$name" ftps)
    local deadline=$((SECONDS + 30))
    while [[ -z $RV_FTPS ]] && ((SECONDS < deadline)); do sleep 0.1; RV_FTPS=$(listening_port "$name" ftps); done
    [[ -n $RV_FTPS ]] || die "recvault ($name) printed no ftps listening line"
}

# ---------------------------------------------------------------- recvault
recvault_on rv-link "$LINK"
measure "recvault SFTP (link)" "$RV_PID" "$LINK_REQS" sftp_get "$RV_PORT" bench "$BENCH_TREE_PATH"
measure "recvault FTPS (link)" "$RV_PID" "$LINK_REQS" ftps_get "ftp://127.0.0.1:$RV_FTPS$BENCH_TREE_PATH" "bench:$PASSWORD"
stop_pid "$RV_PID"

recvault_on rv-link-one "$LINK" "range_reads_per_file = 1"
measure "recvault SFTP (link, one stream)" "$RV_PID" "$LINK_REQS" sftp_get "$RV_PORT" bench "$BENCH_TREE_PATH"
stop_pid "$RV_PID"

recvault_on rv-direct "$S3_ENDPOINT"
measure "recvault SFTP (direct)" "$RV_PID" - sftp_get "$RV_PORT" bench "$BENCH_TREE_PATH"
stop_pid "$RV_PID"

recvault_on rv-open "$OPEN"
measure "recvault SFTP (proxy, no cap)" "$RV_PID" "$OPEN_REQS" sftp_get "$RV_PORT" bench "$BENCH_TREE_PATH"
stop_pid "$RV_PID"

# ---------------------------------------------------------------- local-disk peers
write_recvault_config "$TMP/rv-local.toml" local "" "authorized_keys = [\"$(cat "$TMP/client.pub")\"]"
run_recvault rv-local "$TMP/rv-local.toml" sftp
measure "recvault SFTP (local disk)" "$RV_PID" - sftp_get "$RV_PORT" bench "$BENCH_TREE_PATH"
stop_pid "$RV_PID"

start_sshd "$TMP/client.pub"
measure "OpenSSH sshd (local)" "$SSHD_PID" - sftp_get "$SSHD_PORT" "$(id -un)" "$TMP/src.bin"
stop_pid "$SSHD_PID"

mkdir -p "$TMP/vsroot"
chmod 755 "$TMP" "$TMP/vsroot"
ln "$TMP/src.bin" "$TMP/vsroot/bench-1.tar.gz" 2>/dev/null || cp "$TMP/src.bin" "$TMP/vsroot/bench-1.tar.gz"
chmod 644 "$TMP/vsroot/bench-1.tar.gz"
start_vsftpd "$TMP/vsroot" ssl_ciphers=ECDHE-RSA-AES128-GCM-SHA256
measure "vsftpd (local)" - - ftps_get "ftp://127.0.0.1:$VS_PORT/bench-1.tar.gz" "anonymous:"
stop_pid "$VS_PID"

# ---------------------------------------------------------------- rclone through the link
RCLONE_PORT=$(free_port)
: >"$TMP/rclone.conf"
RCLONE_CONFIG=$TMP/rclone.conf RCLONE_CACHE_DIR=$TMP/rclone-cache \
    RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other \
    RCLONE_CONFIG_S3_ENDPOINT=$LINK RCLONE_CONFIG_S3_REGION=us-east-1 \
    RCLONE_CONFIG_S3_ACCESS_KEY_ID=$MOTO_KEY RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=$MOTO_SECRET \
    RCLONE_CONFIG_S3_FORCE_PATH_STYLE=true \
    rclone serve sftp "s3:$MOTO_BUCKET" --addr "127.0.0.1:$RCLONE_PORT" \
    --authorized-keys "$TMP/client.pub" --key "$TMP/rclone_host_key" \
    </dev/null >"$TMP/rclone.log" 2>&1 3>&- 4>&- &
RCLONE_PID=$!
PIDS+=("$RCLONE_PID")
wait_port "$RCLONE_PORT" 30 "$RCLONE_PID" || { cat "$TMP/rclone.log" >&2; die "rclone serve sftp did not start"; }
measure "rclone serve sftp (link)" "$RCLONE_PID" "$LINK_REQS" sftp_get "$RCLONE_PORT" bench "/$OBJ_KEY"
stop_pid "$RCLONE_PID"

show_server_logs '^recvault: .* listening on' rv-link rv-link-one rv-direct rv-open rv-local

# ---------------------------------------------------------------- report
echo
echo "== downloads through an S3 link model =="
printf '%s MiB random file, best of %d; S3 server: %s\n' "$BENCH_SIZE_MIB" "$BENCH_RUNS" "$S3_KIND"
printf 'link: %s MB/s per connection, %s ms to the first byte of each answer; SSH %s, TLS 1.2 AES128-GCM\n\n' \
    "$BENCH_LINK_MBPS" "$BENCH_FIRST_BYTE_MS" "$CIPHER"
printf '%-34s %9s  %-14s %s\n' peer "best MB/s" "runs" "best run"
for label in "recvault SFTP (link)" "recvault FTPS (link)" "recvault SFTP (link, one stream)" \
    "recvault SFTP (direct)" "recvault SFTP (proxy, no cap)" "recvault SFTP (local disk)" \
    "OpenSSH sshd (local)" "vsftpd (local)" \
    "rclone serve sftp (link)"; do
    printf '%-34s %9s  %-14s %s\n' "$label" "${BEST_MBS[$label]}" "${RUNS[$label]}" "${DETAIL[$label]:-}"
done
echo
b() { printf '%s' "${BEST_MBS[$1]}"; }
printf '%-44s %6s   target >= 0.9\n' "recvault SFTP (link) / OpenSSH (local)" "$(ratio "$(b "recvault SFTP (link)")" "$(b "OpenSSH sshd (local)")")"
printf '%-44s %6s   target >= 0.9\n' "recvault FTPS (link) / vsftpd (local)" "$(ratio "$(b "recvault FTPS (link)")" "$(b "vsftpd (local)")")"
printf '%-44s %6s   target >= 3\n' "recvault SFTP (link) / rclone (link)" "$(ratio "$(b "recvault SFTP (link)")" "$(b "rclone serve sftp (link)")")"
printf '%-44s %6s   (recvault without S3 in the way)\n' "recvault SFTP (local disk) / OpenSSH (local)" "$(ratio "$(b "recvault SFTP (local disk)")" "$(b "OpenSSH sshd (local)")")"
printf '%-44s %6s\n' "ranged / one stream, through the link" "$(ratio "$(b "recvault SFTP (link)")" "$(b "recvault SFTP (link, one stream)")")"
printf '%-44s %6s   (1.00: the proxy costs nothing)\n' "proxy with no cap / direct" "$(ratio "$(b "recvault SFTP (proxy, no cap)")" "$(b "recvault SFTP (direct)")")"
