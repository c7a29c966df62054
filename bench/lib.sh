# Shared setup for the benchmarks in this folder; each script sources it
# (after `set -euo pipefail`) and runs nothing of it on its own:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sourcing it changes to the repo root, sets the RECVAULT_BIN and MOTO_PYTHON
# defaults, unsets the AWS variables that would redirect moto's clients, and
# defines the helpers below. A script then checks its own settings, calls the
# require_* checks it needs, and make_work_dir, which creates $TMP and installs
# the exit trap: on exit (also on Ctrl-C or TERM) every process in PIDS, the
# moto helper and moto's server are stopped and $TMP is removed, unless
# BENCH_KEEP_TMP is set. A script with more to stop defines on_cleanup, which
# runs first.
#
# File descriptors: 3 holds moto's fifo open (start_moto); 4 is free for a
# script's own fifo. Both are closed when cleanup starts, and background
# processes should be started with `3>&- 4>&-`.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

RECVAULT_BIN=${RECVAULT_BIN:-target/release/recvault}
if [[ -z ${MOTO_PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then MOTO_PYTHON=.venv/bin/python; else MOTO_PYTHON=python3; fi
fi
# Everything that talks to moto speaks plain HTTP with moto's own key.
unset AWS_CA_BUNDLE AWS_PROFILE AWS_DEFAULT_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- checks
require_recvault_bin() { # RECVAULT_BIN must be executable; makes it absolute
    [[ -x $RECVAULT_BIN ]] || die "$RECVAULT_BIN not found or not executable (cargo build --release?)"
    RECVAULT_BIN=$(cd "$(dirname "$RECVAULT_BIN")" && pwd)/$(basename "$RECVAULT_BIN")
}

require_tools() { # tool...
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is not installed"
    done
}

require_moto_python() {
    "$MOTO_PYTHON" -c 'import boto3, moto' 2>/dev/null || die "$MOTO_PYTHON cannot import boto3 and moto"
}

# ---------------------------------------------------------------- cleanup
PIDS=()          # long-running servers, killed on exit
MOTO_HELPER_PID=
MOTO_SERVER_PID=

kill_wait() { # pid...: TERM, up to 5 s grace, then KILL
    local pid alive i
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

stop_pid() { # pid: stop one server and drop it from PIDS
    local pid=$1 p keep=()
    kill_wait "$pid"
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$?
    # A child forked but not yet exec'd may still carry this trap: only the script cleans up.
    [[ $BASHPID == "$$" ]] || exit "$rc"
    trap - EXIT
    trap '' INT TERM   # finish cleaning up even if interrupted again
    exec 3>&- 4>&-   # close the fifos: the moto helper (and a script's fd-4 readers) see EOF
    if declare -F on_cleanup >/dev/null; then on_cleanup || true; fi
    ((${#PIDS[@]})) && kill_wait "${PIDS[@]}"
    [[ -n $MOTO_HELPER_PID ]] && kill_wait "$MOTO_HELPER_PID"
    [[ -n $MOTO_SERVER_PID ]] && kill_wait "$MOTO_SERVER_PID"
    if [[ -n ${BENCH_KEEP_TMP:-} ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}

make_work_dir() { # creates $TMP and installs the cleanup trap
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/recvault-bench.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# ---------------------------------------------------------------- helpers
now() { printf '%s' "$EPOCHREALTIME"; }

# secs_since t0 [decimals]: seconds from t0 (a `now`) to now, with 2 decimals
# unless told.
secs_since() { awk -v a="$1" -v b="$(now)" -v d="${2:-2}" 'BEGIN {printf "%." d "f", b - a}'; }

# ratio a b: a / b with 2 decimals, "n/a" unless b > 0.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }

# timed label command...: BENCH_RUNS runs of a download command writing
# $TMP/out.bin, each checked against SRC_SHA (SIZE_BYTES long); the best and
# every run's MB/s go to BEST_MBS[label] and RUNS_MBS[label] (the caller
# declares both as associative arrays).
timed() {
    local label=$1 i t0 t1 secs mbs sum best=0 list="" out="$TMP/out.bin"
    shift
    for ((i = 1; i <= BENCH_RUNS; i++)); do
        rm -f "$out"
        t0=$(now)
        "$@" >"$TMP/client.log" 2>&1 || { cat "$TMP/client.log" >&2; die "$label: download failed (run $i)"; }
        t1=$(now)
        secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
        mbs=$(awk -v n="$SIZE_BYTES" -v s="$secs" 'BEGIN {printf "%.1f", n / 1e6 / s}')
        sum=$(sha256sum "$out" | cut -d' ' -f1)
        [[ $sum == "$SRC_SHA" ]] || die "$label run $i: sha256 mismatch ($(stat -c %s "$out") of $SIZE_BYTES bytes)"
        log "$label run $i: ${secs} s, ${mbs} MB/s"
        list+="${list:+ }$mbs"
        awk -v a="$mbs" -v b="$best" 'BEGIN {exit !(a > b)}' && best=$mbs
    done
    rm -f "$out"
    BEST_MBS[$label]=$best
    RUNS_MBS[$label]=$list
}

# free_port: a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
    "$MOTO_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_port port timeout_s pid: waits until 127.0.0.1:PORT accepts a
# connection; fails once PID has exited or the time is up.
wait_port() {
    local port=$1 deadline=$((SECONDS + $2)) pid=$3
    until (exec 5<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || return 1
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# proc_kib pid field: a /proc/PID/status field (VmRSS, VmHWM) in KiB; fails
# when the process is gone.
proc_kib() {
    awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null
}

# start_moto: moto's S3 server through tests/support/moto_s3.py, whose stdin
# is a fifo held open on fd 3 until exit (the helper stops moto when it
# closes); sets MOTO_ENDPOINT, MOTO_KEY, MOTO_SECRET, MOTO_BUCKET,
# MOTO_HELPER_PID and MOTO_SERVER_PID. Environment assignments put before the
# call (MOTO_RECORDER_FILEPATH=...) reach the helper and moto.
start_moto() {
    local deadline
    mkfifo "$TMP/moto.stdin"
    "$MOTO_PYTHON" tests/support/moto_s3.py recordings <"$TMP/moto.stdin" >"$TMP/moto.json" 2>"$TMP/moto.err" &
    MOTO_HELPER_PID=$!
    exec 3>"$TMP/moto.stdin"
    deadline=$((SECONDS + 90))
    until [[ -s $TMP/moto.json ]] && grep -q '}' "$TMP/moto.json"; do
        if ! kill -0 "$MOTO_HELPER_PID" 2>/dev/null || ((SECONDS >= deadline)); then
            cat "$TMP/moto.json" "$TMP/moto.err" >&2
            die "moto did not start"
        fi
        sleep 0.2
    done
    read -r MOTO_ENDPOINT MOTO_KEY MOTO_SECRET MOTO_BUCKET MOTO_SERVER_PID < <("$MOTO_PYTHON" -c '
import json, sys
d = json.loads(open(sys.argv[1]).readline())
if "error" in d: sys.exit(d["error"])
print(d["endpoint"], d["access_key"], d["secret_key"], d["bucket"], d.get("pid", ""))' "$TMP/moto.json") || true
    [[ -n $MOTO_ENDPOINT ]] || die "cannot parse moto's JSON line: $(cat "$TMP/moto.json")"
    log "moto at $MOTO_ENDPOINT (bucket $MOTO_BUCKET)"
}

# run_recvault name config service [line]: starts `recvault serve --config
# CONFIG` (stderr in $TMP/NAME.log, stdout appended to $TMP/NAME.stdout), adds
# it to PIDS and waits up to 60 s for its "recvault: SERVICE listening on
# 127.0.0.1:PORT" line; sets RV_PID and RV_PORT. If the process exits or the
# time runs out, shows the log and dies ("did not print its LINE", LINE
# defaulting to "SERVICE listening line"). Environment assignments put before
# the call reach recvault.
run_recvault() {
    local name=$1 config=$2 service=$3 line=${4:-"$3 listening line"} logf="$TMP/$1.log" deadline=$((SECONDS + 60))
    : >"$logf"
    "$RECVAULT_BIN" serve --config "$config" </dev/null >>"$TMP/$name.stdout" 2>"$logf" 3>&- 4>&- &
    RV_PID=$!
    PIDS+=("$RV_PID")
    RV_PORT=
    while [[ -z $RV_PORT ]]; do
        RV_PORT=$(listening_port "$name" "$service")
        [[ -n $RV_PORT ]] && break
        if ! kill -0 "$RV_PID" 2>/dev/null || ((SECONDS >= deadline)); then
            cat "$logf" >&2
            die "recvault ($name) did not print its $line within 60 s"
        fi
        sleep 0.1
    done
}

# listening_port name service: the port of the first "recvault: SERVICE
# listening on 127.0.0.1:PORT" line in $TMP/NAME.log (run_recvault's log);
# empty if there is none (yet).
listening_port() {
    sed -n "s/^recvault: $2 listening on 127\.0\.0\.1:\([0-9]\+\).*/\1/p" "$TMP/$1.log" 2>/dev/null | head -n1 || true
}

# show_server_logs pattern name...: for each $TMP/NAME.log with lines other
# than those matching pattern (grep's basic regex: the listening lines), the
# last 20 of those lines, without ANSI colour codes, on stderr.
show_server_logs() {
    local pattern=$1 f
    shift
    for f in "$@"; do
        [[ -f $TMP/$f.log ]] || continue
        if grep -qv "$pattern" "$TMP/$f.log"; then
            log "$f stderr (warnings and errors):"
            grep -v "$pattern" "$TMP/$f.log" | sed 's/\x1b\[[0-9;]*m//g' | tail -n 20 >&2
        fi
    done
}

# ---------------------------------------------------------------- vsftpd peer
# start_vsftpd root [line...]: vsftpd (anonymous, read-only, TLS required
# with make_test_cert's certificate, passive ports from a free one) serving
# ROOT on a free port of 127.0.0.1; each LINE is added to its config. Adds
# it to PIDS; sets VS_PORT and VS_PID.
start_vsftpd() {
    local root=$1 line pasv_lo
    shift
    [[ -x /usr/sbin/vsftpd ]] || die "/usr/sbin/vsftpd is not installed (apt-get install vsftpd)"
    VS_PORT=$(free_port)
    pasv_lo=$(free_port)
    {
        cat <<EOF
listen=YES
listen_address=127.0.0.1
listen_port=$VS_PORT
background=NO
anonymous_enable=YES
anon_root=$root
no_anon_password=YES
local_enable=NO
write_enable=NO
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=YES
force_anon_data_ssl=YES
require_ssl_reuse=NO
rsa_cert_file=$TMP/cert.pem
rsa_private_key_file=$TMP/key.pem
pasv_enable=YES
pasv_min_port=$pasv_lo
pasv_max_port=$((pasv_lo + 20))
seccomp_sandbox=NO
xferlog_enable=NO
EOF
        for line in "$@"; do printf '%s\n' "$line"; done
    } >"$TMP/vsftpd.conf"
    /usr/sbin/vsftpd "$TMP/vsftpd.conf" </dev/null >"$TMP/vsftpd.log" 2>&1 3>&- 4>&- &
    VS_PID=$!
    PIDS+=("$VS_PID")
    wait_port "$VS_PORT" 20 "$VS_PID" || { cat "$TMP/vsftpd.log" >&2; die "vsftpd did not start"; }
}

# ---------------------------------------------------------------- OpenSSH peer
# start_sshd pubkey [line...]: OpenSSH's sshd (internal-sftp) on a free port
# of 127.0.0.1, letting the current user log in with PUBKEY's key (as root
# too); each LINE is added to its sshd_config. The host key is
# $TMP/sshd_host_key (made when missing). Adds it to PIDS; sets SSHD_PORT and
# SSHD_PID.
start_sshd() {
    local pubkey=$1 line
    shift
    [[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd is not installed (openssh-server)"
    [[ -f $TMP/sshd_host_key ]] || ssh-keygen -q -t ed25519 -N '' -C bench-sshd -f "$TMP/sshd_host_key"
    SSHD_PORT=$(free_port)
    cp "$pubkey" "$TMP/authorized_keys"
    {
        cat <<EOF
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $TMP/sshd_host_key
AuthorizedKeysFile $TMP/authorized_keys
PidFile $TMP/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
EOF
        for line in "$@"; do printf '%s\n' "$line"; done
    } >"$TMP/sshd_config"
    mkdir -p /run/sshd
    /usr/sbin/sshd -t -f "$TMP/sshd_config" || die "sshd refuses $TMP/sshd_config"
    /usr/sbin/sshd -D -e -f "$TMP/sshd_config" </dev/null 2>"$TMP/sshd.log" 3>&- 4>&- &
    SSHD_PID=$!
    PIDS+=("$SSHD_PID")
    wait_port "$SSHD_PORT" 30 "$SSHD_PID" || { cat "$TMP/sshd.log" >&2; die "sshd did not start"; }
    log "sshd pid $SSHD_PID listening on 127.0.0.1:$SSHD_PORT"
}

# ---------------------------------------------------------------- the benchmark file
# One random file laid out as session bench-1 of tenant "bench" (prefix
# tenants/bench/), with its info.json, for the download benchmarks.
SESSION_DIR=tenants/bench/sessions/2026/11/23/bench-1
OBJ_KEY=$SESSION_DIR/bench-1.tar.gz
INFO_KEY=$SESSION_DIR/info.json
INFO_JSON='{"session_id":"bench-1","started_at":"2026-11-23T09:00:00Z","ended_at":"2026-11-23T10:00:00Z"}'
BENCH_TREE_PATH=/2026/11/23/bench-1/bench-1.tar.gz

# write_bench_file: BENCH_SIZE_MIB MiB of random data in $TMP/src.bin (sets
# SIZE_BYTES and SRC_SHA), laid out for the local backend in $TMP/objects.
write_bench_file() {
    SIZE_BYTES=$((BENCH_SIZE_MIB * 1024 * 1024))
    log "work dir $TMP; writing $BENCH_SIZE_MIB MiB of random data"
    head -c "$SIZE_BYTES" /dev/urandom >"$TMP/src.bin"
    SRC_SHA=$(sha256sum "$TMP/src.bin" | cut -d' ' -f1)
    mkdir -p "$TMP/objects/$SESSION_DIR"
    ln "$TMP/src.bin" "$TMP/objects/$OBJ_KEY" 2>/dev/null || cp "$TMP/src.bin" "$TMP/objects/$OBJ_KEY"
    printf '%s' "$INFO_JSON" >"$TMP/objects/$INFO_KEY"
}

# upload_bench_file: puts $TMP/src.bin and its info.json into moto (after
# start_moto) and checks the stored size.
upload_bench_file() {
    local t0
    log "uploading to s3://$MOTO_BUCKET/$OBJ_KEY"
    t0=$(now)
    MOTO_ENDPOINT=$MOTO_ENDPOINT AWS_ACCESS_KEY_ID=$MOTO_KEY AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1 \
        "$MOTO_PYTHON" - "$TMP/src.bin" "$MOTO_BUCKET" "$OBJ_KEY" "$INFO_KEY" "$INFO_JSON" <<'EOF'
import os, sys
import boto3
from boto3.s3.transfer import TransferConfig

src, bucket, key, info_key, info = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1")
mib = 1024 * 1024
s3.upload_file(src, bucket, key, Config=TransferConfig(
    multipart_threshold=16 * mib, multipart_chunksize=64 * mib, max_concurrency=4))
s3.put_object(Bucket=bucket, Key=info_key, Body=info.encode(), ContentType="application/json")
size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
if size != os.path.getsize(src):
    sys.exit(f"uploaded object has {size} bytes, expected {os.path.getsize(src)}")
EOF
    log "upload took $(secs_since "$t0" 1) s"
}

# ---------------------------------------------------------------- credentials
# make_test_cert: a self-signed RSA-2048 certificate for localhost and
# 127.0.0.1 in $TMP/cert.pem (clients can verify it with --cacert), its key in
# $TMP/key.pem.
make_test_cert() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
    chmod 600 "$TMP/key.pem"
}

# make_password: sets PASSWORD (user "bench"'s password) and HASH, its argon2id
# PHC string from `recvault hash-password` (after require_recvault_bin).
make_password() {
    PASSWORD=bench-password-1
    HASH=$(printf '%s' "$PASSWORD" | "$RECVAULT_BIN" hash-password 2>/dev/null | tail -n1)
}

# make_ingest_token: sets TOKEN, a random ingest bearer token, and TOKEN_HASH,
# its hex SHA-256 (the config holds "sha256:$TOKEN_HASH").
make_ingest_token() {
    TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    TOKEN_HASH=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
}

# ---------------------------------------------------------------- recvault configs
# write_recvault_config file storage tenant-keys user-credential [section...]:
# writes a recvault config to FILE. STORAGE is "s3" (the moto bucket; after
# start_moto) or "local" ($TMP/objects). Every config has SFTP on a free port
# (host key $TMP/recvault_host_key, made on first start), the audit log in
# $TMP/audit.log, log level warn, and tenant "bench" (prefix tenants/bench/)
# with the TENANT-KEYS lines (e.g. ingest_tokens), if any; a non-empty
# USER-CREDENTIAL line (password = ... or authorized_keys = ...) adds its user
# "bench" with list and download permissions. Each SECTION (a whole TOML
# table, e.g. from ftps_toml or ingest_toml) goes between [sftp] and [audit],
# so all tables come before [[tenants]].
write_recvault_config() {
    local file=$1 storage=$2 tenant_keys=$3 credential=$4 section
    shift 4
    {
        echo "[storage]"
        case $storage in
        s3) printf 'backend = "s3"\nbucket = "%s"\nregion = "us-east-1"\nendpoint = "%s"\nforce_path_style = true\n' \
            "$MOTO_BUCKET" "$MOTO_ENDPOINT" ;;
        local) printf 'backend = "local"\npath = "%s"\n' "$TMP/objects" ;;
        *) die "write_recvault_config: storage must be s3 or local, not $storage" ;;
        esac
        cat <<EOF

[sftp]
listen = "127.0.0.1:0"
host_key = "$TMP/recvault_host_key"

EOF
        for section in "$@"; do printf '%s\n\n' "$section"; done
        cat <<EOF
[audit]
path = "$TMP/audit.log"

[log]
level = "warn"

[[tenants]]
id = "bench"
prefix = "tenants/bench/"
EOF
        if [[ -n $tenant_keys ]]; then printf '%s\n' "$tenant_keys"; fi
        if [[ -n $credential ]]; then
            printf '\n[[tenants.users]]\nname = "bench"\n%s\npermissions = ["list", "download"]\n' "$credential"
        fi
    } >"$file"
}

# ftps_toml: an [ftps] table on a free port with make_test_cert's certificate.
ftps_toml() {
    printf '[ftps]\nlisten = "127.0.0.1:0"\ncertificate = "%s"\nprivate_key = "%s"' "$TMP/cert.pem" "$TMP/key.pem"
}

# ingest_toml: an [ingest] table on a free port, spooling to $TMP/spool.
ingest_toml() {
    printf '[ingest]\nlisten = "127.0.0.1:0"\nspool_dir = "%s"' "$TMP/spool"
}

# write_recvault_configs user-credential [section...]: the download
# benchmarks' two configs, $TMP/recvault-s3.toml (the moto bucket; after
# start_moto) and $TMP/recvault-local.toml ($TMP/objects), serving tenant
# "bench" to user "bench" (see write_recvault_config).
write_recvault_configs() {
    local credential=$1
    shift
    write_recvault_config "$TMP/recvault-s3.toml" s3 "" "$credential" "$@"
    write_recvault_config "$TMP/recvault-local.toml" local "" "$credential" "$@"
}

# ftps_curve URL OUT SIZE: downloads URL over FTPS (make_test_cert's
# certificate, user bench with make_password's password) to OUT while
# sampling the bytes received every 0.1 s; prints "t10 t50 t100" (seconds
# to 10, 50 and 100 % of SIZE) and writes the samples ("seconds bytes") to
# OUT.curve.
ftps_curve() {
    local url=$1 out=$2 size=$3 t0 pid t10= t50= t100= got t
    : >"$out.curve"
    t0=$(now)
    curl -sS --ssl-reqd --cacert "$TMP/cert.pem" --user "bench:$PASSWORD" -o "$out" "$url" &
    pid=$!
    while :; do
        got=$(stat -c %s "$out" 2>/dev/null || echo 0)
        t=$(secs_since "$t0")
        printf '%s %s\n' "$t" "$got" >>"$out.curve"
        [[ -z $t10 ]] && ((got * 10 >= size)) && t10=$t
        [[ -z $t50 ]] && ((got * 2 >= size)) && t50=$t
        if ((got >= size)); then t100=$t; break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    wait "$pid" || die "download of $url failed"
    [[ -n $t100 ]] || t100=$(secs_since "$t0")
    printf '%s %s %s\n' "${t10:-$t100}" "${t50:-$t100}" "$t100"
}
