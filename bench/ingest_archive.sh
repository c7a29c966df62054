#!/usr/bin/env bash
# Ingest + archive benchmark: one call session (four Janus MJR streams and
# info.json, BENCH_SESSION_MB of MJR in total) pushed to recvault's ingest
# listener and archived as a tar.gz into moto's S3 server, against what a
# script would do with the same files: `tar czf` then `aws s3 cp` into the
# same bucket. Also recvault's peak RSS (VmHWM) for the full session and for a
# session a quarter of its size, each on a fresh process.
#
# A benchmark, not a test: it prints figures and ratios and never fails on
# timing. It exits non-zero only when the setup itself breaks (a server does
# not start, a push does not end archived, an object is missing).
#
# Environment (defaults in brackets):
#   RECVAULT_BIN      recvault binary, relative to the repo root [target/release/recvault]
#   BENCH_SESSION_MB  MJR bytes of the full session, in MB (10^6 bytes) [780, about a 1-hour call]
#   MOTO_PYTHON       python with moto and boto3 [.venv/bin/python if present, else python3];
#                     the AWS CLI (awscli) is used from it and pip-installed into it if it is a
#                     venv without one; failing that the script side uploads with boto3
#   BENCH_KEEP_TMP    set to keep the work directory (sessions, configs, logs) after the run
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # cd to the repo root, RECVAULT_BIN, MOTO_PYTHON, log, die, cleanup

BENCH_SESSION_MB=${BENCH_SESSION_MB:-780}

[[ $BENCH_SESSION_MB =~ ^[1-9][0-9]*$ ]] || die "BENCH_SESSION_MB must be a positive integer"
((BENCH_SESSION_MB >= 4)) || die "BENCH_SESSION_MB must be at least 4 (the quarter session is BENCH_SESSION_MB/4)"
require_recvault_bin
require_tools tar gzip sha256sum awk sed
require_moto_python
MOTO_PYTHON=$(command -v "$MOTO_PYTHON")
[[ $MOTO_PYTHON == /* ]] || MOTO_PYTHON=$REPO_ROOT/$MOTO_PYTHON

make_work_dir   # $TMP, and the trap that stops every server and removes it on exit

# ---------------------------------------------------------------- helpers
status_kib() { # pid field: a /proc/PID/status field (VmHWM, VmRSS) in KiB, empty once it is gone
    proc_kib "$@" || true
}

# Flush dirty pages (the generated sessions, the previous run's spool and
# tarball) so their writeback is not billed to the next timed step.
settle() { sync -f "$TMP" 2>/dev/null || sync; }

# ---------------------------------------------------------------- sessions
# gen_session.py DIR SESSION_ID MB: writes the four MJR streams and info.json
# into DIR and prints a JSON manifest (per stream: bytes, packets; duration).
# The call lasts 3600 * MB / 780 s (780 MB per hour); audio is opus, 20 ms
# packets of 160 bytes; video is vp8 at 30 fps, each frame split into RTP
# packets of at most 1200 bytes; the video streams take the bytes the audio
# leaves. Payloads come from os.urandom: real media does not compress.
cat >"$TMP/gen_session.py" <<'EOF'
import calendar, json, os, random, struct, sys, time

out_dir, sid, mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
total = int(mb * 1e6)
duration_s = 3600.0 * mb / 780.0
start = calendar.timegm(time.strptime("2026-11-23T09:00:00Z", "%Y-%m-%dT%H:%M:%SZ"))
iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
rng = random.Random(sid)
FRAME = struct.Struct(">4sIHBBHII")   # MEET, time ms, length, then the 12-byte RTP header
OVERHEAD = FRAME.size                 # 10 + 12 = 22 bytes per packet besides the payload
MAX_RTP = 1200

class Rand:
    """Random bytes from os.urandom, fetched 4 MiB at a time."""
    def __init__(self):
        self.buf, self.pos = b"", 0
    def take(self, n):
        if self.pos + n > len(self.buf):
            self.buf, self.pos = os.urandom(max(n, 4 << 20)), 0
        self.pos += n
        return self.buf[self.pos - n:self.pos]

rand = Rand()

class Stream:
    def __init__(self, name, kind, codec, pt):
        self.path = os.path.join(out_dir, name)
        self.f = open(self.path, "wb")
        hdr = json.dumps({"t": kind, "c": codec, "s": start * 1000000,
                          "u": (start + 1) * 1000000}, separators=(",", ":")).encode()
        self.f.write(b"MJR00002" + struct.pack(">H", len(hdr)) + hdr)
        self.size = 10 + len(hdr)
        self.pt, self.packets, self.out = pt, 0, bytearray()
        self.seq, self.ts, self.ssrc = rng.randrange(1 << 16), rng.randrange(1 << 32), rng.randrange(1, 1 << 32)
    def packet(self, t_ms, payload_len, ts, marker=False):
        self.out += FRAME.pack(b"MEET", t_ms, 12 + payload_len, 0x80,
                               self.pt | (0x80 if marker else 0), self.seq, ts & 0xFFFFFFFF, self.ssrc)
        self.out += rand.take(payload_len)
        self.seq = (self.seq + 1) & 0xFFFF
        self.packets += 1
        self.size += OVERHEAD + payload_len
        if len(self.out) >= 4 << 20:
            self.f.write(self.out)
            self.out = bytearray()
    def close(self):
        self.f.write(self.out)
        self.f.close()

os.makedirs(out_dir, exist_ok=True)
audio_packets = max(1, round(duration_s * 50))
streams = {}
for who in ("agent", "user"):
    a = streams[f"{who}-audio.mjr"] = Stream(f"{who}-audio.mjr", "a", "opus", 111)
    for i in range(audio_packets):
        a.packet(i * 20, 160, a.ts + i * 960)
    a.close()
for who in ("agent", "user"):
    streams[f"{who}-video.mjr"] = Stream(f"{who}-video.mjr", "v", "vp8", 96)
video = [streams["agent-video.mjr"], streams["user-video.mjr"]]
frames = max(1, round(duration_s * 30))
left = total - sum(s.size for s in streams.values())
if left < len(video) * frames * (OVERHEAD + 1):
    sys.exit(f"{mb} MB is too small for {frames} video frames per stream")
for n, v in enumerate(video):
    budget = left // 2 if n == 0 else left - (left // 2)
    base = v.ts
    for i in range(frames):
        rest = frames - i
        want = budget if rest == 1 else int(budget / rest * rng.uniform(0.6, 1.4))
        want = max(OVERHEAD + 1, min(want, budget - (rest - 1) * (OVERHEAD + 1)))
        k = -(-want // (MAX_RTP + 10))          # packets (each at most 1200 bytes of RTP)
        payload = want - k * OVERHEAD
        if payload < k:                          # too small to split that way: one packet
            k, payload = 1, want - OVERHEAD
        budget -= payload + k * OVERHEAD
        for j in range(k):
            part = payload // k + (1 if j < payload % k else 0)
            v.packet(i * 1000 // 30, part, base + i * 3000, marker=(j == k - 1))
    v.close()

info = {"session_id": sid, "started_at": iso(start), "ended_at": iso(start + round(duration_s)),
        "agent": {"id": "a1", "name": "A"}, "user": {"id": "u1", "name": "U"}}
with open(os.path.join(out_dir, "info.json"), "w") as f:
    f.write(json.dumps(info, separators=(",", ":")))
json.dump({"session_id": sid, "duration_s": round(duration_s), "info": info,
           "mjr_bytes": sum(os.path.getsize(s.path) for s in streams.values()),
           "streams": {k: {"bytes": os.path.getsize(s.path), "packets": s.packets}
                       for k, s in streams.items()}}, sys.stdout)
EOF

# s3check.py ID MANIFEST: checks that session ID's archive and index exist in
# moto, that the index records every stream with the generator's packet
# count and no loss, and prints "ARCHIVE_BYTES summary".
cat >"$TMP/s3check.py" <<'EOF'
import json, os, sys
import boto3

sid, manifest = sys.argv[1], json.load(open(sys.argv[2]))
s3 = boto3.client("s3", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1")
bucket = os.environ["MOTO_BUCKET"]
prefix = f"tenants/bench/sessions/2026/11/23/{sid}/"
try:
    size = s3.head_object(Bucket=bucket, Key=f"{prefix}{sid}.tar.gz")["ContentLength"]
    index = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}info.json")["Body"].read())
except Exception as e:
    sys.exit(f"{prefix}: {e}")
got = index.get("recvault", {}).get("streams", {})
problems = []
for name, want in manifest["streams"].items():
    s = got.get(name)
    if s is None:
        problems.append(f"{name} not indexed")
    elif s.get("packets") != want["packets"] or s.get("lost"):
        problems.append(f"{name}: {s.get('packets')} packets, {s.get('lost')} lost (generated {want['packets']})")
recorded = index.get("recvault", {}).get("objects", {}).get(f"{sid}.tar.gz", {}).get("size")
if recorded != size:
    problems.append(f"index records {recorded} archive bytes, the object has {size}")
if problems:
    sys.exit(f"{prefix}: " + "; ".join(problems))
print(size, f"{prefix}{{{sid}.tar.gz,info.json}} present; index lists {len(got)} streams, packet counts match")
EOF

QUARTER_MB=$(awk -v m="$BENCH_SESSION_MB" 'BEGIN {printf "%.2f", m / 4}')
S1=$TMP/sessions/bench-1
S2=$TMP/sessions/bench-2
log "work dir $TMP; generating session bench-1 ($BENCH_SESSION_MB MB of MJR) and bench-2 ($QUARTER_MB MB)"
t0=$(now)
"$MOTO_PYTHON" "$TMP/gen_session.py" "$S1" bench-1 "$BENCH_SESSION_MB" >"$TMP/bench-1.manifest.json" ||
    die "generating bench-1 failed"
"$MOTO_PYTHON" "$TMP/gen_session.py" "$S2" bench-2 "$QUARTER_MB" >"$TMP/bench-2.manifest.json" ||
    die "generating bench-2 failed"
log "generated in $(secs_since "$t0") s:"
for id in bench-1 bench-2; do
    "$MOTO_PYTHON" -c '
import json, sys
m = json.load(open(sys.argv[1]))
print("  %s: %d MJR bytes, %d s call; " % (m["session_id"], m["mjr_bytes"], m["duration_s"]) + ", ".join(
    "%s %.1f MB / %d packets" % (k, v["bytes"] / 1e6, v["packets"]) for k, v in m["streams"].items()))' \
        "$TMP/$id.manifest.json" >&2
done
MJR_BYTES_1=$("$MOTO_PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["mjr_bytes"])' "$TMP/bench-1.manifest.json")
MJR_BYTES_2=$("$MOTO_PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["mjr_bytes"])' "$TMP/bench-2.manifest.json")

# ---------------------------------------------------------------- AWS CLI
# The script side uses the AWS CLI from MOTO_PYTHON's venv, installing it
# there (with the venv's botocore kept as it is) when it is missing.
UPLOADER=
if "$MOTO_PYTHON" -c 'import awscli' 2>/dev/null; then
    UPLOADER=awscli
elif "$MOTO_PYTHON" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    log "installing awscli into $(dirname "$(dirname "$MOTO_PYTHON")") (pip)"
    botocore_v=$("$MOTO_PYTHON" -c 'import botocore; print(botocore.__version__)')
    if "$MOTO_PYTHON" -m pip install -q --disable-pip-version-check awscli "botocore==$botocore_v" \
        >"$TMP/pip.log" 2>&1 && "$MOTO_PYTHON" -c 'import awscli' 2>/dev/null; then
        UPLOADER=awscli
    else
        tail -n 5 "$TMP/pip.log" >&2
    fi
else
    log "$MOTO_PYTHON is not a venv: not installing awscli into it"
fi
if [[ $UPLOADER == awscli ]]; then
    UPLOADER_LABEL="aws s3 cp (awscli $("$MOTO_PYTHON" -c 'import awscli; print(awscli.__version__)'))"
else
    UPLOADER=boto3
    UPLOADER_LABEL="boto3 upload_file (multipart; the AWS CLI could not be installed)"
    log "WARNING: no AWS CLI; the script side uploads with boto3's upload_file instead"
fi

# ---------------------------------------------------------------- moto
start_moto
export MOTO_ENDPOINT MOTO_BUCKET
# For every S3 client below (boto3, the AWS CLI, recvault): moto's key, no user config
# (empty config and credentials files, so ~/.aws is not read).
: >"$TMP/aws-config"
: >"$TMP/aws-credentials"
export AWS_ACCESS_KEY_ID=$MOTO_KEY AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1 \
    AWS_DEFAULT_REGION=us-east-1 AWS_CONFIG_FILE=$TMP/aws-config AWS_SHARED_CREDENTIALS_FILE=$TMP/aws-credentials \
    AWS_EC2_METADATA_DISABLED=true

# ---------------------------------------------------------------- recvault
make_ingest_token
write_recvault_config "$TMP/recvault.toml" s3 "ingest_tokens = [\"sha256:$TOKEN_HASH\"]" "" \
    "$(ingest_toml)" $'[limits]\ningest_min_free_bytes = 1048576'

# start_recvault name: starts `serve`, sets RV_PID and RV_PORT (ingest).
start_recvault() {
    run_recvault "$1" "$TMP/recvault.toml" ingest
    log "recvault ($1) pid $RV_PID, ingest on 127.0.0.1:$RV_PORT"
}

declare -A PUSH_SECS=() HWM_KIB=() IDLE_HWM_KIB=() ARCHIVE_BYTES=() CHECK=()

# bench_push id dir: a fresh recvault, one timed `recvault push`, its VmHWM, the objects checked.
bench_push() {
    local id=$1 dir=$2 t0 rc=0 out
    start_recvault "recvault-$id"
    sleep 0.5
    IDLE_HWM_KIB[$id]=$(status_kib "$RV_PID" VmHWM)
    settle
    log "$id: recvault push (upload, complete, wait until archived)..."
    t0=$(now)
    "$RECVAULT_BIN" push "$dir" --url "http://127.0.0.1:$RV_PORT" --token "$TOKEN" --wait 1800 \
        </dev/null >"$TMP/push-$id.out" 2>"$TMP/push-$id.err" 3>&- || rc=$?
    PUSH_SECS[$id]=$(secs_since "$t0")
    HWM_KIB[$id]=$(status_kib "$RV_PID" VmHWM)
    if ((rc != 0)) || ! grep -qx archived "$TMP/push-$id.out"; then
        log "push exit status $rc after ${PUSH_SECS[$id]} s; its stdout and stderr:"
        cat "$TMP/push-$id.out" "$TMP/push-$id.err" >&2
        log "recvault ($id) stderr:"
        sed 's/\x1b\[[0-9;]*m//g' "$TMP/recvault-$id.log" | tail -n 30 >&2
        kill -0 "$RV_PID" 2>/dev/null || log "recvault (pid $RV_PID) is no longer running"
        die "$id: recvault push did not end archived"
    fi
    [[ -n ${HWM_KIB[$id]} ]] || { sed 's/\x1b\[[0-9;]*m//g' "$TMP/recvault-$id.log" | tail -n 30 >&2; die "recvault ($id) exited during the push"; }
    log "$id: archived in ${PUSH_SECS[$id]} s; recvault VmHWM ${HWM_KIB[$id]} KiB (${IDLE_HWM_KIB[$id]} KiB when idle)"
    stop_pid "$RV_PID"
    out=$("$MOTO_PYTHON" "$TMP/s3check.py" "$id" "$TMP/$id.manifest.json") || die "$id: the archived objects do not check out"
    ARCHIVE_BYTES[$id]=${out%% *}
    CHECK[$id]=${out#* }
    log "$id: ${CHECK[$id]}; archive ${ARCHIVE_BYTES[$id]} bytes"
}

bench_push bench-1 "$S1"

# ---------------------------------------------------------------- the script: tar czf + aws s3 cp
TARBALL=$TMP/bench-1.tar.gz
SCRIPT_KEY=script/bench-1.tar.gz
settle
log "script: tar czf $TARBALL -C $S1 ."
t0=$(now)
tar czf "$TARBALL" -C "$S1" . || die "tar czf failed"
TAR_SECS=$(secs_since "$t0")
TAR_BYTES=$(stat -c %s "$TARBALL")
log "script: tar czf took $TAR_SECS s ($TAR_BYTES bytes); uploading with $UPLOADER_LABEL"
t0=$(now)
if [[ $UPLOADER == awscli ]]; then
    "$MOTO_PYTHON" -m awscli s3 cp "$TARBALL" "s3://$MOTO_BUCKET/$SCRIPT_KEY" \
        --endpoint-url "$MOTO_ENDPOINT" --only-show-errors </dev/null 3>&- || die "aws s3 cp failed"
else
    "$MOTO_PYTHON" -c 'import os, sys, boto3; boto3.client("s3", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1").upload_file(sys.argv[1], os.environ["MOTO_BUCKET"], sys.argv[2])' \
        "$TARBALL" "$SCRIPT_KEY" </dev/null 3>&- || die "boto3 upload_file failed"
fi
UPLOAD_SECS=$(secs_since "$t0")
SCRIPT_SECS=$(awk -v a="$TAR_SECS" -v b="$UPLOAD_SECS" 'BEGIN {printf "%.2f", a + b}')
stored=$("$MOTO_PYTHON" -c 'import os, sys, boto3; print(boto3.client("s3", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1").head_object(Bucket=os.environ["MOTO_BUCKET"], Key=sys.argv[1])["ContentLength"])' "$SCRIPT_KEY") ||
    die "s3://$MOTO_BUCKET/$SCRIPT_KEY is missing after the upload"
[[ $stored == "$TAR_BYTES" ]] || die "s3://$MOTO_BUCKET/$SCRIPT_KEY has $stored bytes, the tarball $TAR_BYTES"
log "script: upload took $UPLOAD_SECS s; tar + upload $SCRIPT_SECS s"
rm -f "$TARBALL"

# ---------------------------------------------------------------- the quarter session, fresh process
bench_push bench-2 "$S2"

# ---------------------------------------------------------------- server logs
show_server_logs '^recvault: \(ingest\|sftp\) listening on' recvault-bench-1 recvault-bench-2

# ---------------------------------------------------------------- report
mb() { awk -v n="$1" 'BEGIN {printf "%.1f", n / 1e6}'; }
mbs() { awk -v n="$1" -v s="$2" 'BEGIN {if (s > 0) printf "%.1f", n / 1e6 / s; else print "n/a"}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
RATIO=$(ratio "${PUSH_SECS[bench-1]}" "$SCRIPT_SECS")
RATIO_OK=$(awk -v r="$RATIO" 'BEGIN {if (r == "n/a") print "n/a"; else print (r + 0 <= 1.0 ? "met" : "NOT met")}')
HWM_RATIO=$(awk -v a="${HWM_KIB[bench-1]}" -v b="${HWM_KIB[bench-2]}" 'BEGIN {printf "%.2f", a / b}')
HWM_OK=$(awk -v a="${HWM_KIB[bench-1]}" -v b="${HWM_KIB[bench-2]}" 'BEGIN {print (a <= 1.25 * b ? "met" : "NOT met")}')

echo
echo "== recvault ingest + archive benchmark =="
printf 'session bench-1: %s MJR bytes (%s MB) in 4 streams + info.json; bench-2: %s MJR bytes (%s MB)\n' \
    "$MJR_BYTES_1" "$(mb "$MJR_BYTES_1")" "$MJR_BYTES_2" "$(mb "$MJR_BYTES_2")"
printf 'recvault %s, S3 = moto on loopback (%s)\n' "$RECVAULT_BIN" "$MOTO_ENDPOINT"
printf 'script uploader: %s\n' "$UPLOADER_LABEL"
echo
printf '%-44s %9s %8s %14s\n' "bench-1 ($(mb "$MJR_BYTES_1") MB)" "seconds" "MB/s" "archive bytes"
printf '%-44s %9s %8s %14s\n' "recvault push -> archived" "${PUSH_SECS[bench-1]}" \
    "$(mbs "$MJR_BYTES_1" "${PUSH_SECS[bench-1]}")" "${ARCHIVE_BYTES[bench-1]}"
printf '%-44s %9s %8s %14s\n' "script: tar czf + upload" "$SCRIPT_SECS" "$(mbs "$MJR_BYTES_1" "$SCRIPT_SECS")" "$TAR_BYTES"
printf '%-44s %9s %8s\n' "  tar czf" "$TAR_SECS" "$(mbs "$MJR_BYTES_1" "$TAR_SECS")"
printf '%-44s %9s %8s\n' "  ${UPLOADER_LABEL%% (*}" "$UPLOAD_SECS" "$(mbs "$TAR_BYTES" "$UPLOAD_SECS")"
echo
printf '%-44s %9s   target <= 1.0: %s\n' "ratio recvault / script" "$RATIO" "$RATIO_OK"
echo
printf '%-44s %12s %12s %9s\n' "recvault peak RSS (VmHWM, fresh process)" "after push" "idle" "push s"
printf '%-44s %8s MiB %8s MiB %9s\n' "bench-1, $(mb "$MJR_BYTES_1") MB" "$(mib "${HWM_KIB[bench-1]}")" \
    "$(mib "${IDLE_HWM_KIB[bench-1]}")" "${PUSH_SECS[bench-1]}"
printf '%-44s %8s MiB %8s MiB %9s\n' "bench-2, $(mb "$MJR_BYTES_2") MB (1/4)" "$(mib "${HWM_KIB[bench-2]}")" \
    "$(mib "${IDLE_HWM_KIB[bench-2]}")" "${PUSH_SECS[bench-2]}"
printf '%-44s %9s   target: independent of session size (<= 1.25): %s\n' "peak RSS full / quarter" "$HWM_RATIO" "$HWM_OK"
echo
echo "checks: bench-1 ${CHECK[bench-1]}"
echo "        bench-2 ${CHECK[bench-2]}"
