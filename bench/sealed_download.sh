#!/usr/bin/env bash
# Encryption at rest: SFTP download of one archive (1 GiB by default) from a
# tenant with encryption = "recvault" (Tink AES-256-GCM-HKDF streaming, 1 MiB
# segments) against the same archive in a clear tenant, same server, same
# run, local backend (so the figures are recvault's own cost, not the
# store's). The encrypted copy is made by `recvault reencrypt` (timed too).
#
# Prints, per tenant, every run's MB/s and the recvault process's
# CPU-seconds per GiB served (utime+stime from /proc), and the ratios
# encrypted/clear. A benchmark, not a test: it never fails on timing; it
# exits non-zero only when the setup breaks or a download differs.
#
# Environment (defaults in brackets):
#   RECVAULT_BIN     recvault binary [target/release/recvault]
#   BENCH_SIZE_MIB   archive size in MiB [1024]
#   BENCH_RUNS       downloads per tenant, alternating [3]
#   BENCH_CIPHER     the SSH cipher [aes128-gcm@openssh.com]
#   BENCH_KEEP_TMP   set to keep the work directory
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SIZE_MIB=${BENCH_SIZE_MIB:-1024}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_CIPHER=${BENCH_CIPHER:-aes128-gcm@openssh.com}
[[ $BENCH_SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MIB must be a positive integer"
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
require_recvault_bin
require_tools sftp ssh-keygen sha256sum awk
make_work_dir

write_bench_file
SEALED_DIR=${SESSION_DIR/tenants\/bench/tenants\/sealed}
mkdir -p "$TMP/objects/$SEALED_DIR"
cp "$TMP/objects/$OBJ_KEY" "$TMP/objects/$SEALED_DIR/bench-1.tar.gz"
cp "$TMP/objects/$INFO_KEY" "$TMP/objects/$SEALED_DIR/info.json"
ssh-keygen -q -t ed25519 -N '' -C bench-client -f "$TMP/client"
"$RECVAULT_BIN" keys new "$TMP/sealed.keyset.json" >/dev/null
CLIENT_PUB=$(cat "$TMP/client.pub")
cat >"$TMP/recvault.toml" <<TOML
[storage]
backend = "local"
path = "$TMP/objects"

[sftp]
listen = "127.0.0.1:0"
host_key = "$TMP/recvault_host_key"

[jobs]
state_dir = "$TMP/jobs"

[audit]
path = "$TMP/audit.log"

[log]
level = "warn"

[[tenants]]
id = "bench"
prefix = "tenants/bench/"

[[tenants.users]]
name = "clear"
authorized_keys = ["$CLIENT_PUB"]

[[tenants]]
id = "sealed"
prefix = "tenants/sealed/"
encryption = "recvault"
keyset = "$TMP/sealed.keyset.json"

[[tenants.users]]
name = "sealed"
authorized_keys = ["$CLIENT_PUB"]
TOML

t0=$(now)
"$RECVAULT_BIN" reencrypt --config "$TMP/recvault.toml" --tenant sealed >"$TMP/reencrypt.out" 2>&1 ||
    { cat "$TMP/reencrypt.out" >&2; die "recvault reencrypt failed"; }
REENCRYPT_SECS=$(secs_since "$t0" 2)
grep -q "sealed bench-1.tar.gz" "$TMP/reencrypt.out" || { cat "$TMP/reencrypt.out" >&2; die "reencrypt did not seal the archive"; }
STORED=$(stat -c %s "$TMP/objects/$SEALED_DIR/bench-1.tar.gz")
log "reencrypt: ${REENCRYPT_SECS} s for ${BENCH_SIZE_MIB} MiB; stored ciphertext $STORED bytes for $SIZE_BYTES"

run_recvault recvault "$TMP/recvault.toml" sftp
log "recvault pid $RV_PID on 127.0.0.1:$RV_PORT"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)
SSH_OPTS=(-q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -i "$TMP/client" -c "$BENCH_CIPHER")
declare -A RUNS=() CPU=() BEST=()
download() { # user
    local user=$1 out="$TMP/out.bin" t0 secs c0 c1 mbs sum
    printf 'get /2026/11/23/bench-1/bench-1.tar.gz %s\n' "$out" >"$TMP/batch"
    rm -f "$out"
    c0=$(cpu_ticks "$RV_PID")
    t0=$(now)
    sftp "${SSH_OPTS[@]}" -P "$RV_PORT" -b "$TMP/batch" "$user@127.0.0.1" >"$TMP/sftp.out" 2>&1 ||
        { cat "$TMP/sftp.out" >&2; die "$user: download failed"; }
    secs=$(secs_since "$t0" 3)
    c1=$(cpu_ticks "$RV_PID")
    sum=$(sha256sum "$out" | cut -d' ' -f1)
    [[ $sum == "$SRC_SHA" ]] || die "$user: the download differs (sha256 $sum, expected $SRC_SHA)"
    rm -f "$out"
    mbs=$(awk -v n="$SIZE_BYTES" -v s="$secs" 'BEGIN {printf "%.1f", n / 1e6 / s}')
    local cpu_gib
    cpu_gib=$(awk -v t=$((c1 - c0)) -v hz="$TICKS" -v n="$SIZE_BYTES" 'BEGIN {printf "%.2f", t / hz / (n / 1073741824)}')
    log "$user: ${secs} s, ${mbs} MB/s, recvault ${cpu_gib} CPU-s/GiB"
    RUNS[$user]+="${RUNS[$user]:+ }$mbs"
    CPU[$user]+="${CPU[$user]:+ }$cpu_gib"
    awk -v a="$mbs" -v b="${BEST[$user]:-0}" 'BEGIN {exit !(a > b)}' && BEST[$user]=$mbs
    return 0
}
for ((i = 1; i <= BENCH_RUNS; i++)); do
    download clear
    download sealed
done
median() { tr ' ' '\n' <<<"$1" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
CPU_CLEAR=$(median "${CPU[clear]}")
CPU_SEALED=$(median "${CPU[sealed]}")
cat <<REPORT

== SFTP download of a ${BENCH_SIZE_MIB} MiB archive, cipher $BENCH_CIPHER, local backend, $(nproc) cores
clear tenant      MB/s: ${RUNS[clear]} (best ${BEST[clear]}); CPU-s/GiB: ${CPU[clear]} (median $CPU_CLEAR)
encrypted tenant  MB/s: ${RUNS[sealed]} (best ${BEST[sealed]}); CPU-s/GiB: ${CPU[sealed]} (median $CPU_SEALED)
throughput encrypted/clear (best runs): $(ratio "${BEST[sealed]}" "${BEST[clear]}")   (goal >= 0.9)
throughput encrypted/clear (medians):   $(ratio "$(median "${RUNS[sealed]}")" "$(median "${RUNS[clear]}")")
CPU encrypted/clear (medians):          $(ratio "$CPU_SEALED" "$CPU_CLEAR")
reencrypt of the archive: ${REENCRYPT_SECS} s
REPORT
