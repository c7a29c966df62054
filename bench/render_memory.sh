#!/usr/bin/env bash
# Memory of a long call's media work: recvault's peak resident memory
# (VmHWM; ffmpeg runs in processes of its own and is not counted) while it
# archives a synthetic call (validation and the party files' remux) and then
# renders its MP4 and MP3 on first read, against janus-pp-rec (the
# reference converter) turning the same call's largest MJR into a file.
# Optionally the same for another recvault binary (an earlier build), so a
# change's effect shows in one run.
#
# A benchmark, not a test: it prints figures and ratios and never fails on
# them. It exits non-zero only when the setup breaks.
#
# Environment (defaults in brackets):
#   RECVAULT_BIN     recvault binary, relative to the repo root [target/release/recvault]
#   PEER_BIN         another recvault binary to measure the same way [none]
#   BENCH_SECONDS    length of the call [1200]
#   BENCH_KEEP_TMP   set to keep the work directory
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-1200}
[[ $BENCH_SECONDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer"
require_recvault_bin
require_tools ffmpeg janus-pp-rec curl openssl awk /usr/bin/time
make_work_dir
make_test_cert
make_password
make_ingest_token

ID=call-mem
DAY=/2026/11/23/$ID
"$RECVAULT_BIN" fixture "$TMP/calls" --id "$ID" --seconds "$BENCH_SECONDS" >/dev/null
CALL=$TMP/calls/$ID
MJR_KIB=$(du -k "$CALL"/*.mjr | awk '{s += $1} END {print s}')
BIGGEST=$(ls -S "$CALL"/*.mjr | head -n1)

# measure NAME BIN: archives and renders the call with BIN; prints
# "peak_after_archive_kib peak_after_renders_kib baseline_kib".
measure() {
    local name=$1 bin=$2 port ingest_port base archived rendered
    rm -rf "$TMP/objects" "$TMP/spool"
    write_recvault_config "$TMP/$name.toml" local "ingest_tokens = [\"sha256:$TOKEN_HASH\"]" "password = \"$HASH\"" \
        "$(ftps_toml)" "$(ingest_toml)"
    RECVAULT_BIN=$bin run_recvault "$name" "$TMP/$name.toml" ftps
    port=$RV_PORT
    ingest_port=$(listening_port "$name" ingest)
    [[ -n $ingest_port ]] || die "no ingest port in the $name log"
    base=$(proc_kib "$RV_PID" VmHWM)
    "$bin" push "$CALL" --url "http://127.0.0.1:$ingest_port" --token "$TOKEN" --wait 900 >/dev/null ||
        die "push with $name failed"
    archived=$(proc_kib "$RV_PID" VmHWM)
    for f in "$ID.mp4" "$ID.mp3"; do
        curl -sS --ssl-reqd --cacert "$TMP/cert.pem" --user "bench:$PASSWORD" -o "$TMP/out.bin" \
            "ftp://127.0.0.1:$port$DAY/$f" || die "download of $f from $name failed"
    done
    rendered=$(proc_kib "$RV_PID" VmHWM)
    stop_pid "$RV_PID"
    printf '%s %s %s\n' "$archived" "$rendered" "$base"
}

read -r A_ARCH A_REND A_BASE < <(measure recvault "$RECVAULT_BIN")
log "recvault: peak ${A_ARCH} KiB after archiving, ${A_REND} KiB after the renders (start ${A_BASE} KiB)"
if [[ -n ${PEER_BIN:-} ]]; then
    PEER_BIN=$(realpath "$PEER_BIN")
    read -r P_ARCH P_REND P_BASE < <(measure peer "$PEER_BIN")
    log "peer build: peak ${P_ARCH} KiB after archiving, ${P_REND} KiB after the renders (start ${P_BASE} KiB)"
fi
# janus_kib OUT: janus-pp-rec's peak KiB turning the largest MJR into OUT
# (it picks the container by the extension); empty when it fails.
janus_kib() {
    if /usr/bin/time -o "$TMP/janus.time" -f '%M' janus-pp-rec "$BIGGEST" "$1" >/dev/null 2>&1; then
        tail -n1 "$TMP/janus.time"
    fi
}
JANUS_KIB=$(janus_kib "$TMP/janus.out.webm")
[[ -n $JANUS_KIB ]] || JANUS_KIB=$(janus_kib "$TMP/janus.out.mp4")
[[ -n $JANUS_KIB ]] || die "janus-pp-rec could not convert $BIGGEST"

printf '\nMemory of a %d-second synthetic call (MJR files: %s KiB in all; largest %s, %s KiB)\n' \
    "$BENCH_SECONDS" "$MJR_KIB" "$(basename "$BIGGEST")" "$(du -k "$BIGGEST" | awk '{print $1}')"
printf '%-52s %12s\n' "" "peak KiB"
printf '%-52s %12s\n' "recvault: archive (validate, party-file remux)" "$A_ARCH"
printf '%-52s %12s\n' "recvault: + MP4 and MP3 first reads" "$A_REND"
if [[ -n ${PEER_BIN:-} ]]; then
    printf '%-52s %12s\n' "peer build: archive" "$P_ARCH"
    printf '%-52s %12s\n' "peer build: + MP4 and MP3 first reads" "$P_REND"
    printf 'recvault/peer build (renders) = %s\n' "$(ratio "$A_REND" "$P_REND")"
fi
printf '%-52s %12s\n' "janus-pp-rec on the largest MJR" "$JANUS_KIB"
printf 'recvault peak growth / MJR bytes = %s   recvault peak / janus-pp-rec = %s\n' \
    "$(ratio "$((A_REND - A_BASE))" "$MJR_KIB")" "$(ratio "$A_REND" "$JANUS_KIB")"
