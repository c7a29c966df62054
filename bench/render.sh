#!/usr/bin/env bash
# Derived-media benchmark: recvault's first-read render of a call's MP4 and
# MP3 against (b) what a contact centre runs today (janus-pp-rec on the four
# MJR files, then one ffmpeg command composing and encoding with the same
# encoder settings) and (c) the encoder's own limit: ffmpeg encoding, at the
# same settings, the very frames and PCM recvault encoded (its output decoded
# to raw files first, untimed: x264 and LAME take longer or shorter by
# content, so the limit must be measured on the same pictures and sound).
# For reference it also times the encoder on generated frames (testsrc2) and
# a sine, which are easier to encode than a call. Also recvault's time to
# first byte for a short and a long call. Needs about 14 MB of disk per
# second of call for the raw frames.
#
# A benchmark, not a test: it prints figures and ratios and never fails on
# timing. It exits non-zero only when the setup breaks.
#
# Environment (defaults in brackets):
#   RECVAULT_BIN     recvault binary, relative to the repo root [target/release/recvault]
#   BENCH_SECONDS    length of the benchmark call [300]
#   BENCH_LONG       length of the long call (its MP4's first-read curve, its MP3's first byte) [3600]; 0 skips it
#   BENCH_KEEP_TMP   set to keep the work directory
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-300}
BENCH_LONG=${BENCH_LONG:-3600}
[[ $BENCH_SECONDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer"
[[ $BENCH_LONG =~ ^[0-9]+$ ]] || die "BENCH_LONG must be a non-negative integer"
require_recvault_bin
require_tools ffmpeg janus-pp-rec curl openssl awk
make_work_dir

# ---------------------------------------------------------------- recvault
make_test_cert
make_password
make_ingest_token
write_recvault_config "$TMP/recvault.toml" local "ingest_tokens = [\"sha256:$TOKEN_HASH\"]" "password = \"$HASH\"" \
    "$(ftps_toml)" "$(ingest_toml)"
run_recvault recvault "$TMP/recvault.toml" ftps
FTPS_PORT=$RV_PORT
INGEST_PORT=$(listening_port recvault ingest)
[[ -n $INGEST_PORT ]] || die "no ingest port in the log"

# ingest ID SECONDS: makes a synthetic call and pushes it.
ingest() {
    local t0
    t0=$(now)
    "$RECVAULT_BIN" fixture "$TMP/calls" --id "$1" --seconds "$2" >/dev/null
    log "fixture $1 ($2 s) written in $(secs_since "$t0") s"
    "$RECVAULT_BIN" push "$TMP/calls/$1" --url "http://127.0.0.1:$INGEST_PORT" --token "$TOKEN" --wait 600 >/dev/null ||
        die "push of $1 failed"
}

# fetch URL-PATH OUT [range]: downloads over FTPS to OUT; prints "first_byte_s total_s bytes".
fetch() {
    local range=()
    [[ -n ${3:-} ]] && range=(-r "$3")
    curl -sS --ssl-reqd --cacert "$TMP/cert.pem" --user "bench:$PASSWORD" "${range[@]}" \
        -o "$2" -w '%{time_starttransfer} %{time_total} %{size_download}\n' \
        "ftp://127.0.0.1:$FTPS_PORT$1"
}

# curve URL-PATH OUT SIZE: ftps_curve of the path on this script's recvault.
curve() { ftps_curve "ftp://127.0.0.1:$FTPS_PORT$1" "$2" "$3"; }

# render_ms ID: how long ID's MP4 render took, from the audit trail.
render_ms() {
    grep -a "\"path\":\"/2026/11/23/$1/$1.mp4\"" "$TMP/audit.log" | grep -a '"event":"render"' |
        sed -n 's/.*"duration_ms":\([0-9]*\).*/\1/p' | tail -n1
}

# listed_size PATH: the size recvault lists for a file (FTPS SIZE).
listed_size() {
    curl -sS --ssl-reqd --cacert "$TMP/cert.pem" --user "bench:$PASSWORD" -I \
        "ftp://127.0.0.1:$FTPS_PORT$1" | sed -n 's/^Content-Length: \([0-9]*\).*/\1/p' | tr -d '\r'
}

ID=call-$BENCH_SECONDS
ingest "$ID" "$BENCH_SECONDS"
DAY=/2026/11/23/$ID

MP4_SIZE=$(listed_size "$DAY/$ID.mp4")
[[ -n $MP4_SIZE ]] || die "no size for $DAY/$ID.mp4"
t0=$(now)
read -r MP4_T10 MP4_T50 MP4_TOTAL < <(curve "$DAY/$ID.mp4" "$TMP/recvault.mp4" "$MP4_SIZE")
MP4_BYTES=$(stat -c %s "$TMP/recvault.mp4")
MP4_RENDER=$(awk -v ms="$(render_ms "$ID")" 'BEGIN {printf "%.2f", ms / 1000}')
log "recvault MP4: 10 % at ${MP4_T10} s, 50 % at ${MP4_T50} s, whole ${MP4_TOTAL} s, $MP4_BYTES bytes; render ${MP4_RENDER} s"
PARTY_FILES=$(for n in agent.webm user.mp4 user.webm agent.mp4; do
    sz=$(listed_size "$DAY/$n" 2>/dev/null || true)
    if [[ -n $sz ]]; then printf '%s %s bytes; ' "$n" "$sz"; fi
done)
read -r MP3_TTFB MP3_TOTAL MP3_BYTES < <(fetch "$DAY/$ID.mp3" "$TMP/recvault.mp3")
log "recvault MP3: first byte ${MP3_TTFB} s, whole ${MP3_TOTAL} s, $MP3_BYTES bytes"

# ---------------------------------------------------------------- (b) janus-pp-rec + ffmpeg
CALL=$TMP/calls/$ID
X264=(-c:v libx264 -preset veryfast -threads 1 -bf 0 -g 30 -b:v 800k -maxrate 800k -bufsize 1600k -pix_fmt yuv420p)
AAC=(-c:a aac -b:a 64k)
FRAG=(-movflags frag_keyframe+empty_moov+default_base_moof)
TILE="fps=15,scale=640:480:force_original_aspect_ratio=decrease,pad=640:480:(ow-iw)/2:(oh-ih)/2,format=yuv420p"
t0=$(now)
janus-pp-rec "$CALL/agent-video.mjr" "$TMP/a.webm" >/dev/null 2>&1
janus-pp-rec "$CALL/user-video.mjr" "$TMP/u.mkv" >/dev/null 2>&1
janus-pp-rec "$CALL/agent-audio.mjr" "$TMP/a.wav" >/dev/null 2>&1
janus-pp-rec "$CALL/user-audio.mjr" "$TMP/u.opus" >/dev/null 2>&1
JANUS_S=$(secs_since "$t0")
t1=$(now)
ffmpeg -hide_banner -loglevel error -y -i "$TMP/a.webm" -i "$TMP/u.mkv" -i "$TMP/a.wav" -i "$TMP/u.opus" \
    -filter_complex "[0:v]$TILE[l];[1:v]$TILE[r];[l][r]hstack[v];[2:a][3:a]amix=inputs=2:normalize=0,aresample=48000[a]" \
    -map '[v]' -map '[a]' "${X264[@]}" "${AAC[@]}" "${FRAG[@]}" -t "$BENCH_SECONDS" "$TMP/script.mp4"
SCRIPT_MP4=$(awk -v a="$JANUS_S" -v b="$(secs_since "$t1")" 'BEGIN {printf "%.2f", a + b}')
t1=$(now)
ffmpeg -hide_banner -loglevel error -y -i "$TMP/a.wav" -i "$TMP/u.opus" \
    -filter_complex "[0:a][1:a]amix=inputs=2:normalize=0,aresample=48000[a]" -map '[a]' -ac 1 \
    -c:a libmp3lame -b:a 128k -reservoir 0 -t "$BENCH_SECONDS" "$TMP/script.mp3"
SCRIPT_MP3=$(secs_since "$t1")
log "script: janus-pp-rec x4 ${JANUS_S} s; MP4 total ${SCRIPT_MP4} s; MP3 (ffmpeg after janus-pp-rec) ${SCRIPT_MP3} s"

# ---------------------------------------------------------------- (c) encoder limit
# recvault's own frames and PCM, decoded to raw files (untimed), then encoded.
ffmpeg -hide_banner -loglevel error -y -i "$TMP/recvault.mp4" \
    -map 0:v -f rawvideo -pix_fmt yuv420p "$TMP/frames.yuv" \
    -map 0:a -f s16le -ar 48000 -ac 1 "$TMP/mix4.pcm"
ffmpeg -hide_banner -loglevel error -y -i "$TMP/recvault.mp3" -f s16le -ar 48000 -ac 1 "$TMP/mix3.pcm"
t0=$(now)
ffmpeg -hide_banner -loglevel error -y -f rawvideo -pix_fmt yuv420p -s 1280x480 -framerate 15 -i "$TMP/frames.yuv" \
    -f s16le -ar 48000 -ac 1 -i "$TMP/mix4.pcm" \
    -map 0:v -map 1:a "${X264[@]}" "${AAC[@]}" "${FRAG[@]}" "$TMP/limit.mp4"
LIMIT_MP4=$(secs_since "$t0")
rm -f "$TMP/frames.yuv"
t0=$(now)
ffmpeg -hide_banner -loglevel error -y -f s16le -ar 48000 -ac 1 -i "$TMP/mix3.pcm" \
    -c:a libmp3lame -b:a 128k -reservoir 0 -threads 1 -write_xing 0 -id3v2_version 0 -f mp3 "$TMP/limit.mp3"
LIMIT_MP3=$(secs_since "$t0")
# For reference: generated content, easier to encode.
t0=$(now)
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1280x480:rate=15" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$BENCH_SECONDS" \
    -map 0:v -map 1:a "${X264[@]}" "${AAC[@]}" "${FRAG[@]}" "$TMP/testsrc.mp4"
GEN_MP4=$(secs_since "$t0")
t0=$(now)
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$BENCH_SECONDS" \
    -ac 1 -c:a libmp3lame -b:a 128k -reservoir 0 "$TMP/sine.mp3"
GEN_MP3=$(secs_since "$t0")
log "encoder alone, recvault's content: MP4 ${LIMIT_MP4} s, MP3 ${LIMIT_MP3} s; generated content: MP4 ${GEN_MP4} s, MP3 ${GEN_MP3} s"

# ---------------------------------------------------------------- long call: first byte
if ((BENCH_LONG > 0)); then
    LID=call-$BENCH_LONG
    ingest "$LID" "$BENCH_LONG"
    LSIZE=$(listed_size "/2026/11/23/$LID/$LID.mp4")
    read -r LONG_T10 LONG_T50 LONG_T100 < <(curve "/2026/11/23/$LID/$LID.mp4" "$TMP/long.mp4" "$LSIZE")
    LONG_RENDER=$(awk -v ms="$(render_ms "$LID")" 'BEGIN {printf "%.2f", ms / 1000}')
    rm -f "$TMP/long.mp4"
    read -r LONG_MP3_TTFB _ _ < <(fetch "/2026/11/23/$LID/$LID.mp3" "$TMP/out.bin" 0-65535)
fi

# ---------------------------------------------------------------- report
printf '\nDerived media, %d-second synthetic call (VP8 + H.264 320x240@15, PCMU + Opus), one machine\n' "$BENCH_SECONDS"
printf '%-44s %10s\n' "" "seconds"
printf '%-44s %10s\n' "(a) recvault MP4, first read (whole file)" "$MP4_TOTAL"
printf '%-44s %10s\n' "(b) janus-pp-rec x4 + ffmpeg compose/encode" "$SCRIPT_MP4"
printf '%-44s %10s\n' "(c) ffmpeg encoding recvault's frames (raw)" "$LIMIT_MP4"
printf '%-44s %10s\n' "    (ffmpeg encoding generated testsrc2)" "$GEN_MP4"
printf 'MP4 (a)/(c) = %s (target <= 1.1)   (a)/(b) = %s (target <= 0.9)\n' \
    "$(ratio "$MP4_TOTAL" "$LIMIT_MP4")" "$(ratio "$MP4_TOTAL" "$SCRIPT_MP4")"
printf '%-44s %10s\n' "(a) recvault MP3, first read (whole file)" "$MP3_TOTAL"
printf '%-44s %10s\n' "(b) janus-pp-rec x2 (audio) + ffmpeg mix/encode" \
    "$(awk -v a="$JANUS_S" -v b="$SCRIPT_MP3" 'BEGIN {printf "%.2f", a / 2 + b}')"
printf '%-44s %10s\n' "(c) ffmpeg encoding recvault's mix (raw)" "$LIMIT_MP3"
printf '%-44s %10s\n' "    (ffmpeg encoding a generated sine)" "$GEN_MP3"
printf 'MP3 (a)/(c) = %s (target <= 1.1)   (a)/(b) = %s (target <= 0.9; (b) counts half of the four janus-pp-rec runs)\n' \
    "$(ratio "$MP3_TOTAL" "$LIMIT_MP3")" \
    "$(ratio "$MP3_TOTAL" "$(awk -v a="$JANUS_S" -v b="$SCRIPT_MP3" 'BEGIN {printf "%.2f", a / 2 + b}')")"
printf 'first read of the MP4 (bytes over time, samples in recvault.mp4.curve): 10 %% at %s s, 50 %% at %s s, 100 %% at %s s; render %s s\n' \
    "$MP4_T10" "$MP4_T50" "$MP4_TOTAL" "$MP4_RENDER"
printf 'time to 50 %% / render time = %s (target <= 0.6)\n' "$(ratio "$MP4_T50" "$MP4_RENDER")"
printf 'per-party files: %s\n' "${PARTY_FILES:-none}"
printf 'time to first byte, %d s call: MP3 %s s (target <= 3)\n' "$BENCH_SECONDS" "$MP3_TTFB"
if ((BENCH_LONG > 0)); then
    printf 'first read of the %d s call'"'"'s MP4: 10 %% at %s s, 50 %% at %s s, 100 %% at %s s; render %s s; 50 %% / render = %s (target <= 0.6)\n' \
        "$BENCH_LONG" "$LONG_T10" "$LONG_T50" "$LONG_T100" "$LONG_RENDER" "$(ratio "$LONG_T50" "$LONG_RENDER")"
    printf 'time to first byte, %d s call: MP3 %s s (target <= 3)\n' "$BENCH_LONG" "$LONG_MP3_TTFB"
fi
