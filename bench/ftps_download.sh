#!/usr/bin/env bash
# FTPS download benchmark: recvault (S3 backend on moto, and local backend)
# against vsftpd (Debian, ssl_enable=YES, local disk), all on loopback, with
# the same client (curl --ssl-reqd, explicit FTPS, passive, PROT P) and the
# same TLS settings (TLS 1.2, ECDHE-RSA-AES128-GCM-SHA256, one RSA-2048
# certificate for every server).
#
# A benchmark, not a test: it prints figures and ratios and never fails on
# timing. It exits non-zero only when the setup itself breaks.
#
# Environment (defaults in brackets):
#   RECVAULT_BIN     recvault binary, relative to the repo root [target/release/recvault]
#   BENCH_SIZE_MIB   size of the random file in MiB [1024]
#   BENCH_RUNS       downloads per peer; the best run is reported [3]
#   MOTO_PYTHON      python with moto and boto3 [.venv/bin/python if present, else python3]
#   BENCH_KEEP_TMP   set to keep the work directory (logs, configs) after the run
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SIZE_MIB=${BENCH_SIZE_MIB:-1024}
BENCH_RUNS=${BENCH_RUNS:-3}
[[ $BENCH_SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MIB must be a positive integer"
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
require_recvault_bin
require_tools curl openssl sha256sum awk
[[ -x /usr/sbin/vsftpd ]] || die "/usr/sbin/vsftpd is not installed (apt-get install vsftpd)"
require_moto_python
make_work_dir

TLS_OPTS=(--tls-max 1.2 --ciphers ECDHE-RSA-AES128-GCM-SHA256)
declare -A BEST_MBS=() RUNS_MBS=()

# bench_download label url user:password
bench_download() {
    timed "$1" curl -sS --ssl-reqd --cacert "$TMP/cert.pem" "${TLS_OPTS[@]}" --user "$3" -o "$TMP/out.bin" "$2"
}

# ---------------------------------------------------------------- data
write_bench_file
FTP_PATH=$BENCH_TREE_PATH
mkdir -p "$TMP/vsroot"
chmod 755 "$TMP" "$TMP/vsroot"
ln "$TMP/src.bin" "$TMP/vsroot/bench-1.tar.gz" 2>/dev/null || cp "$TMP/src.bin" "$TMP/vsroot/bench-1.tar.gz"
chmod 644 "$TMP/vsroot/bench-1.tar.gz"

make_test_cert

# ---------------------------------------------------------------- moto
start_moto
upload_bench_file

# ---------------------------------------------------------------- recvault
make_password
write_recvault_configs "password = \"$HASH\"" "$(ftps_toml)"

for backend in s3 local; do
    label="recvault ($([[ $backend == s3 ]] && echo moto || echo local))"
    AWS_ACCESS_KEY_ID=$MOTO_KEY AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1 \
        run_recvault "recvault-$backend" "$TMP/recvault-$backend.toml" ftps
    bench_download "$label" "ftp://127.0.0.1:$RV_PORT$FTP_PATH" "bench:$PASSWORD"
    stop_pid "$RV_PID"
done

# ---------------------------------------------------------------- vsftpd
start_vsftpd "$TMP/vsroot" ssl_ciphers=ECDHE-RSA-AES128-GCM-SHA256
bench_download "vsftpd (local)" "ftp://127.0.0.1:$VS_PORT/bench-1.tar.gz" "anonymous:"

# ---------------------------------------------------------------- report
printf '\nFTPS single-stream download, %d MiB, curl --ssl-reqd, TLS 1.2 AES128-GCM, best of %d\n' "$BENCH_SIZE_MIB" "$BENCH_RUNS"
printf '%-18s %10s   %s\n' peer "MB/s" "runs"
for label in "recvault (moto)" "recvault (local)" "vsftpd (local)"; do
    printf '%-18s %10s   %s\n' "$label" "${BEST_MBS[$label]}" "${RUNS_MBS[$label]}"
done
printf '\nrecvault(moto)/vsftpd  = %s (target >= 0.9)\n' "$(ratio "${BEST_MBS["recvault (moto)"]}" "${BEST_MBS["vsftpd (local)"]}")"
printf 'recvault(local)/vsftpd = %s (target >= 0.9)\n' "$(ratio "${BEST_MBS["recvault (local)"]}" "${BEST_MBS["vsftpd (local)"]}")"
