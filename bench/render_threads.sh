#!/usr/bin/env bash
# Encoder threads: the first read of one call's MP4 rendered with one x264
# encoder ([limits] render_threads = 1, the peer: what every render did
# before) against the same call archived with two (render_threads = 2: two
# single-threaded encoders on alternate GOPs, see src/media/render/x264.rs),
# on the local backend over FTPS. Then the two-encoder render is repeated in
# the same process and in another process set to one encoder (the recorded
# count wins), and the three files are compared byte for byte.
#
# A benchmark, not a test: it prints figures and ratios and never fails on
# timing. It exits non-zero only when the setup breaks or the bytes differ.
#
# Environment (defaults in brackets):
#   RECVAULT_BIN     recvault binary, relative to the repo root [target/release/recvault]
#   BENCH_SECONDS    length of the call [3600]
#   BENCH_KEEP_TMP   set to keep the work directory
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-3600}
[[ $BENCH_SECONDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer"
require_recvault_bin
require_tools ffmpeg curl openssl awk cmp
make_work_dir
make_test_cert
make_password
make_ingest_token

# serve NAME THREADS: a recvault set to THREADS encoders, one render at a time.
serve() {
    write_recvault_config "$TMP/$1.toml" local "ingest_tokens = [\"sha256:$TOKEN_HASH\"]" "password = \"$HASH\"" \
        "$(ftps_toml)" "$(ingest_toml)" "$(printf '[limits]\nrender_concurrency = 1\nrender_threads = %s' "$2")"
    run_recvault "$1" "$TMP/$1.toml" ftps
}
serve one 1
ONE_FTPS=$RV_PORT
ONE_INGEST=$(listening_port one ingest)
serve two 2
TWO_FTPS=$RV_PORT
TWO_INGEST=$(listening_port two ingest)

# ingest ID INGEST-PORT: makes the synthetic call ID and pushes it.
ingest() {
    "$RECVAULT_BIN" fixture "$TMP/calls" --id "$1" --seconds "$BENCH_SECONDS" >/dev/null
    "$RECVAULT_BIN" push "$TMP/calls/$1" --url "http://127.0.0.1:$2" --token "$TOKEN" --wait 900 >/dev/null ||
        die "push of $1 failed"
}

# read_curve PORT ID OUT: a first read of ID's MP4 over FTPS, the bytes
# received sampled every 0.1 s; prints "t10 t50 t100 size".
read_curve() {
    local url="ftp://127.0.0.1:$1/2026/11/23/$2/$2.mp4" size
    size=$(curl -sS --ssl-reqd --cacert "$TMP/cert.pem" --user "bench:$PASSWORD" -I "$url" |
        sed -n 's/^Content-Length: \([0-9]*\).*/\1/p' | tr -d '\r')
    [[ -n $size ]] || die "no size for $2.mp4"
    printf '%s %s\n' "$(ftps_curve "$url" "$3" "$size")" "$size"
}

# forget ID: once ID's rendered MP4 is stored (the upload ends a moment
# after the last byte reached the reader), removes it, so the next read
# renders it again.
forget() {
    local deadline=$((SECONDS + 120))
    until find "$TMP/objects" -path "*/$1/derived/$1.mp4" | grep -q .; do
        ((SECONDS < deadline)) || die "the render of $1 was not stored within 120 s"
        sleep 0.2
    done
    sleep 1
    find "$TMP/objects" -path "*/$1/derived/$1.mp4*" -delete
}

# cpu PID: user+system CPU seconds of PID and its reaped children so far.
cpu() { awk '{printf "%.2f", ($14 + $15 + $16 + $17) / 100}' "/proc/$1/stat"; }

ingest call-1t "$ONE_INGEST"
ingest call-2t "$TWO_INGEST"
log "calls archived; rendering with one encoder"
read -r A10 A50 A100 ASIZE < <(read_curve "$ONE_FTPS" call-1t "$TMP/one.mp4")
log "one encoder: 10 % ${A10} s, 50 % ${A50} s, 100 % ${A100} s ($ASIZE bytes)"
read -r B10 B50 B100 BSIZE < <(read_curve "$TWO_FTPS" call-2t "$TMP/two.mp4")
log "two encoders: 10 % ${B10} s, 50 % ${B50} s, 100 % ${B100} s ($BSIZE bytes)"
forget call-2t
read -r C10 C50 C100 _ < <(read_curve "$TWO_FTPS" call-2t "$TMP/two-again.mp4")
forget call-2t
read -r D10 D50 D100 _ < <(read_curve "$ONE_FTPS" call-2t "$TMP/two-other.mp4")
same_run=no; cmp -s "$TMP/two.mp4" "$TMP/two-again.mp4" && same_run=yes
same_proc=no; cmp -s "$TMP/two.mp4" "$TMP/two-other.mp4" && same_proc=yes

printf '\nMP4 first read, %d-second synthetic call (recvault fixture), local backend, FTPS, %s cores\n' \
    "$BENCH_SECONDS" "$(nproc)"
printf '%-52s %8s %8s %8s %12s\n' "" "10 %" "50 %" "100 %" "bytes"
printf '%-52s %8s %8s %8s %12s\n' "one encoder (render_threads = 1, the peer)" "$A10" "$A50" "$A100" "$ASIZE"
printf '%-52s %8s %8s %8s %12s\n' "two encoders (render_threads = 2)" "$B10" "$B50" "$B100" "$BSIZE"
printf '%-52s %8s %8s %8s\n' "two encoders, rendered again, same process" "$C10" "$C50" "$C100"
printf '%-52s %8s %8s %8s\n' "two encoders recorded, process set to one" "$D10" "$D50" "$D100"
printf 'whole file, two / one = %s (target <= 0.6)\n' "$(ratio "$B100" "$A100")"
printf 'byte-identical: again in the same process %s, in the other process %s\n' "$same_run" "$same_proc"
printf 'CPU seconds of the processes (renders included): one %s, two %s\n' "$(cpu "${PIDS[0]}")" "$(cpu "${PIDS[1]}")"
[[ $same_run == yes && $same_proc == yes ]] || die "the two-encoder renders differ in bytes"
