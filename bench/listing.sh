#!/usr/bin/env bash
# Day listing benchmark (SPEC §16): one day of BENCH_SESSIONS sessions (each
# an info.json and a RAW archive; one in BENCH_DERIVED_EVERY also has derived
# files stored), listed through a model of an S3 link (examples/link_proxy.rs,
# the tests' fault proxy: BENCH_DELAY_MS before the first byte of every
# response) by
#
#   - recvault over SFTP (paramiko listdir_attr: OPENDIR, READDIR…, the same
#     facts as `ls -l`) and over FTPS (ftplib MLSD), first and repeated, in
#     one session each;
#   - recvault's content API: GET /v1/calls for that day filtered on one
#     agent (1 in 40 sessions), every cursor page, first and repeated;
#   - the peer: a plain delimited listing of the same prefix (boto3
#     list_objects_v2 with Delimiter "/", every page), as a client listing
#     the bucket itself would.
#
# Prints seconds, the S3 requests each listing cost (counted by the proxy),
# and the ratio first-recvault / plain (goal <= 1.2); repeated listings in ms,
# the median of five (goal <= 50), beside what one storage request for the
# day index costs through the link (a LIST of its prefix, a HEAD of it).
# Repeats come in two kinds: at once (within recvault's [limits]
# listing_fresh_ms, answered from memory) and each after a pause beyond it
# (BENCH_LATE_SECS, 1.2 s: each asks storage whether the day changed). The day index is built first with `recvault reindex`.
#
# A benchmark, not a test: it never fails on timing; it exits non-zero only
# when its setup breaks or a listing is incomplete.
#
# Environment (defaults in brackets):
#   RECVAULT_BIN         recvault binary, relative to the repo root [target/release/recvault]
#   BENCH_SESSIONS       sessions in the day [10000]
#   BENCH_DERIVED_EVERY  one session in N has derived files stored [10]
#   BENCH_DELAY_MS       first-byte delay of the link model [30]
#   MOTO_PYTHON          python with moto, boto3 and paramiko [.venv/bin/python if present, else python3]
#   BENCH_KEEP_TMP       set to keep the work directory (logs, configs) after the run
#   BENCH_LATE_SECS      pause before each "after the window" repeat [1.2]
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SESSIONS=${BENCH_SESSIONS:-10000}
BENCH_DERIVED_EVERY=${BENCH_DERIVED_EVERY:-10}
BENCH_DELAY_MS=${BENCH_DELAY_MS:-30}
for v in BENCH_SESSIONS BENCH_DERIVED_EVERY; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer"
done
[[ $BENCH_DELAY_MS =~ ^[0-9]+$ ]] || die "BENCH_DELAY_MS must be a whole number of milliseconds"
require_recvault_bin
LINK_PROXY_BIN=${LINK_PROXY_BIN:-$(dirname "$RECVAULT_BIN")/examples/link_proxy}
[[ -x $LINK_PROXY_BIN ]] || die "$LINK_PROXY_BIN not found (cargo build --release --examples)"
require_tools openssl awk ssh-keygen xargs seq
require_moto_python
"$MOTO_PYTHON" -c 'import paramiko' 2>/dev/null || die "$MOTO_PYTHON cannot import paramiko"
make_work_dir
start_moto
make_test_cert
make_password

export AWS_ACCESS_KEY_ID=$MOTO_KEY AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1
PREFIX=tenants/bench/
DAY_PREFIX=${PREFIX}sessions/2026/11/23/

# ---------------------------------------------------------------- data
log "seeding $BENCH_SESSIONS sessions (derived files for one in $BENCH_DERIVED_EVERY)"
t0=$(now)
"$MOTO_PYTHON" - "$MOTO_ENDPOINT" "$MOTO_BUCKET" "$DAY_PREFIX" "$BENCH_SESSIONS" "$BENCH_DERIVED_EVERY" <<'EOF'
import json, sys
from concurrent.futures import ThreadPoolExecutor
import boto3

endpoint, bucket, day, n, every = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

def one(i):
    sid = f"call-{i:05d}"
    h, m = divmod(i % 1440, 60)
    raw = bytes([i % 251]) * 64
    info = {
        "session_id": sid,
        "started_at": f"2026-11-23T{h:02d}:{m:02d}:00Z",
        "ended_at": f"2026-11-23T{h:02d}:{m:02d}:40Z",
        "agent": {"id": f"agent-{i % 40}", "name": f"Agent {i % 40}"},
        "user": {"id": f"caller-{i}"},
        "queue": ["sales", "support", "billing"][i % 3],
        "tags": {"lang": "en"},
        "recvault": {"v": 1, "objects": {f"{sid}.tar.gz": {"size": len(raw), "sha256": "00" * 32}},
                     "derived": {f"{sid}.mp3": {"size": 15360}, f"{sid}.mp4": {"size": 900000}}},
    }
    s3.put_object(Bucket=bucket, Key=f"{day}{sid}/{sid}.tar.gz", Body=raw)
    s3.put_object(Bucket=bucket, Key=f"{day}{sid}/info.json", Body=json.dumps(info).encode())
    if i % every == 0:
        for name in (f"{sid}.mp3", f"{sid}.mp3.sums", f"agent.webm", f"user.webm"):
            s3.put_object(Bucket=bucket, Key=f"{day}{sid}/derived/{name}", Body=b"x" * 32)

with ThreadPoolExecutor(16) as pool:
    list(pool.map(one, range(n)))
EOF
log "seeded in $(secs_since "$t0" 1) s"

# ---------------------------------------------------------------- the link
PROXY_PORT=$(free_port)
COUNT_FILE=$TMP/requests
"$LINK_PROXY_BIN" "$PROXY_PORT" "$MOTO_ENDPOINT" --rate-mbps 0 --first-byte-ms "$BENCH_DELAY_MS" \
    --count-file "$COUNT_FILE" >"$TMP/proxy.out" 2>"$TMP/proxy.err" 3>&- 4>&- &
PIDS+=("$!")
wait_port "$PROXY_PORT" 30 "$!" || die "the delay proxy did not start: $(cat "$TMP/proxy.err")"
PROXY=http://127.0.0.1:$PROXY_PORT
log "link model: $BENCH_DELAY_MS ms before each response's first byte, at $PROXY"

MOTO_ENDPOINT_DIRECT=$MOTO_ENDPOINT
MOTO_ENDPOINT=$PROXY
API_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
write_recvault_config "$TMP/recvault.toml" s3 \
    "$(printf '[[tenants.api_keys]]\nname = "bench"\nkey = "sha256:%s"\nscopes = ["calls:read"]' "$(printf '%s' "$API_KEY" | sha256sum | cut -d' ' -f1)")" \
    "password = \"$HASH\"" "$(ftps_toml)" \
    "$(printf '[jobs]\nstate_dir = "%s"' "$TMP/jobs")" \
    "$(printf '[api]\nlisten = "127.0.0.1:0"\nlink_key_file = "%s"\noutbox_dir = "%s"' "$TMP/link.key" "$TMP/outbox")"
MOTO_ENDPOINT=$MOTO_ENDPOINT_DIRECT

log "building the day index: recvault reindex (through the link)"
t0=$(now)
"$RECVAULT_BIN" reindex --config "$TMP/recvault.toml" >"$TMP/reindex.out" 2>"$TMP/reindex.err" 3>&- 4>&- ||
    die "reindex failed: $(cat "$TMP/reindex.out" "$TMP/reindex.err")"
log "reindex: $(tr '\n' ' ' <"$TMP/reindex.out")in $(secs_since "$t0" 1) s"

# measure MODE [sftp-port ftps-port|folder [key]]: one listing kind, first and repeated
# in one session; appends "MODE first-s again-s first-requests again-requests"
# to $TMP/results.
measure() {
    API_KEY=$API_KEY "$MOTO_PYTHON" - "$1" "$PROXY" "$MOTO_BUCKET" "$DAY_PREFIX" "${2:-0}" "${3:-0}" "${4:-$PASSWORD}" \
        "$TMP/cert.pem" "$COUNT_FILE" "$BENCH_SESSIONS" "$TMP/results" <<'EOF'
import ftplib, ssl, sys, time
import boto3, paramiko

(mode, endpoint, bucket, day, sftp_port, ftps_port, password, cert, count_file, n, results) = sys.argv[1:12]
n = int(n)

def requests():
    return int(open(count_file).read().strip() or 0)

def timed(label, f, want=n):
    r0, t0 = requests(), time.perf_counter()
    names = f()
    secs = time.perf_counter() - t0
    reqs = requests() - r0
    if len(names) != want:
        sys.exit(f"{label}: listed {len(names)} sessions, not {want}")
    print(f"[bench] {label}: {secs:.3f} s, {reqs} S3 requests", flush=True)
    return secs, reqs

def repeated(label, f, want=n):
    # Five repeats; the median (and the slowest, printed) tells more than one.
    runs = sorted(timed(f"{label} #{i + 1}", f, want) for i in range(5))
    print(f"[bench] {label}: median {runs[2][0] * 1000:.0f} ms, slowest {runs[4][0] * 1000:.0f} ms", flush=True)
    return runs[2]

def record(first, again):
    with open(results, "a") as f:
        f.write(f"{mode} {first[0]:.6f} {again[0]:.6f} {first[1]} {again[1]}\n")

def late(label, f, want=n):
    # Five repeats each after a pause longer than recvault's listing_fresh_ms
    # window: every one asks storage whether the day changed.
    import os
    pause = float(os.environ.get("BENCH_LATE_SECS", "1.2"))
    def after():
        time.sleep(pause)
        return f()
    runs = sorted(timed(f"{label} #{i + 1}", after, want) for i in range(5))
    print(f"[bench] {label}: median {runs[2][0] * 1000 - pause * 1000:.0f} ms", flush=True)
    with open(results, "a") as out:
        out.write(f"{mode}-late {runs[2][0] - pause:.6f} {runs[2][0] - pause:.6f} {runs[2][1]} {runs[2][1]}\n")

if mode == "plain":
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    def plain():
        names, token = [], None
        while True:
            kw = {"Bucket": bucket, "Prefix": day, "Delimiter": "/"}
            if token:
                kw["ContinuationToken"] = token
            page = s3.list_objects_v2(**kw)
            names += [p["Prefix"][len(day):-1] for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                return names
            token = page["NextContinuationToken"]
    record(timed("plain delimited listing (boto3), first", plain),
           repeated("plain delimited listing (boto3), repeated", plain))
elif mode == "floor":
    # What one storage request for the day index costs through the link:
    # the floor of a repeated search that checks the index is current.
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    index = day.replace("sessions/", "index/").rstrip("/")
    def median(f):
        # The median of five after a warm-up, as the repeated listings.
        f()
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return sorted(ts)[2]
    lst = median(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=index))
    head = median(lambda: s3.head_object(Bucket=bucket, Key=index + ".json"))
    print(f"[bench] one LIST of the day's index prefix: {lst * 1000:.0f} ms; one HEAD of the index: {head * 1000:.0f} ms", flush=True)
    with open(results, "a") as f:
        f.write(f"floor-list {lst:.6f} {lst:.6f} 1 1\nfloor-head {head:.6f} {head:.6f} 1 1\n")
elif mode in ("sftp", "openssh"):
    t = paramiko.Transport(("127.0.0.1", int(sftp_port)))
    if mode == "sftp":
        t.connect(username="bench", password=password)
        folder, who = "/2026/11/23", "recvault SFTP"
    else:
        # password holds the key file and ftps_port the folder for this peer.
        import getpass
        t.connect(username=getpass.getuser(), pkey=paramiko.Ed25519Key.from_private_key_file(password))
        folder, who = ftps_port, "OpenSSH sftp-server (local disk)"
    sftp = paramiko.SFTPClient.from_transport(t)
    def sftp_list():
        return sorted(a.filename for a in sftp.listdir_attr(folder))
    record(timed(f"{who} listdir_attr, first", sftp_list),
           repeated(f"{who} listdir_attr, repeated", sftp_list))
    if mode == "sftp":
        late(f"{who} listdir_attr, repeated after the fresh window", sftp_list)
    t.close()
elif mode == "api":
    import json, os, urllib.request
    want = sum(1 for i in range(n) if i % 40 == 7)
    def api_list():
        ids, cursor = [], None
        while True:
            url = f"http://127.0.0.1:{sftp_port}/v1/calls?from=2026-11-23&to=2026-11-23&agent=agent-7&limit=1000"
            if cursor:
                url += f"&cursor={cursor}"
            req = urllib.request.Request(url, headers={"Authorization": "Bearer " + os.environ["API_KEY"]})
            body = json.load(urllib.request.urlopen(req, timeout=120))
            ids += [c["session_id"] for c in body["calls"]]
            cursor = body["next_cursor"]
            if not cursor:
                return ids
    record(timed("recvault API GET /v1/calls?agent=, first", api_list, want),
           repeated("recvault API GET /v1/calls?agent=, repeated", api_list, want))
    late("recvault API GET /v1/calls?agent=, repeated after the fresh window", api_list, want)
elif mode == "vsftpd":
    # vsftpd has no MLSD: LIST, the nearest (a line per folder).
    ctx = ssl.create_default_context(cafile=cert)
    ftp = ftplib.FTP_TLS(context=ctx)
    ftp.connect("127.0.0.1", int(sftp_port))
    ftp.auth()
    ftp.login()
    ftp.prot_p()
    def vs_list():
        lines = []
        ftp.retrlines("LIST " + ftps_port, lines.append)
        return sorted(l.split()[-1] for l in lines if l.startswith("d"))
    record(timed("vsftpd LIST (local disk)", vs_list), repeated("vsftpd LIST (local disk), repeated", vs_list))
    ftp.quit()
else:
    ctx = ssl.create_default_context(cafile=cert)
    ftp = ftplib.FTP_TLS(context=ctx)
    ftp.connect("127.0.0.1", int(ftps_port))
    ftp.auth()
    ftp.login("bench", password)
    ftp.prot_p()
    def mlsd():
        return [name for name, facts in ftp.mlsd("/2026/11/23") if facts.get("type") == "dir"]
    record(timed("recvault FTPS MLSD, first", mlsd), repeated("recvault FTPS MLSD, repeated", mlsd))
    late("recvault FTPS MLSD, repeated after the fresh window", mlsd)
    ftp.quit()
EOF
}

: >"$TMP/results"
measure plain
measure floor
# The client's own cost: OpenSSH's sftp-server listing a local folder of as
# many (empty) session folders; no storage behind it.
log "the OpenSSH peer: $BENCH_SESSIONS folders on local disk"
mkdir -p "$TMP/peer/2026/11/23"
(cd "$TMP/peer/2026/11/23" && seq -f 'call-%05g' 0 $((BENCH_SESSIONS - 1)) | xargs mkdir)
ssh-keygen -q -t ed25519 -N '' -C bench-client -f "$TMP/client_key"
start_sshd "$TMP/client_key.pub"
measure openssh "$SSHD_PORT" "$TMP/peer/2026/11/23" "$TMP/client_key"
stop_pid "$SSHD_PID"
if [[ -x /usr/sbin/vsftpd ]]; then
    # And for FTPS: vsftpd (anonymous, TLS) listing the same folders.
    chmod 755 "$TMP" "$TMP/peer" "$TMP/peer/2026" "$TMP/peer/2026/11" "$TMP/peer/2026/11/23"
    start_vsftpd "$TMP/peer"
    measure vsftpd "$VS_PORT" /2026/11/23
    stop_pid "$VS_PID"
fi
# A fresh server for each protocol, so that "first" is a cold listing.
for proto in sftp ftps api; do
    run_recvault "recvault-$proto" "$TMP/recvault.toml" sftp
    if [[ $proto == api ]]; then
        measure api "$(listening_port "recvault-$proto" api)"
    else
        measure "$proto" "$RV_PORT" "$(listening_port "recvault-$proto" ftps)"
    fi
    show_server_logs 'listening on' "recvault-$proto"
    stop_pid "$RV_PID"
done

awk -v delay="$BENCH_DELAY_MS" -v n="$BENCH_SESSIONS" '
{ first[$1] = $2; again[$1] = $3; rf[$1] = $4; ra[$1] = $5 }
END {
    plain = first["plain"] < again["plain"] ? first["plain"] : again["plain"]
    printf "[bench] %d sessions in one day, link model %d ms to first byte\n", n, delay
    printf "[bench] %-34s %9s %9s %8s %8s\n", "", "first s", "again ms", "req 1st", "req again"
    printf "[bench] %-34s %9.3f %9.0f %8d %8d\n", "plain delimited listing (boto3)", first["plain"], again["plain"] * 1000, rf["plain"], ra["plain"]
    printf "[bench] %-34s %9.3f %9.0f %8d %8d\n", "recvault SFTP (listdir_attr)", first["sftp"], again["sftp"] * 1000, rf["sftp"], ra["sftp"]
    printf "[bench] %-34s %9.3f %9.0f %8s %8s\n", "OpenSSH, local disk (listdir_attr)", first["openssh"], again["openssh"] * 1000, "-", "-"
    printf "[bench] %-34s %9.3f %9.0f %8d %8d\n", "recvault FTPS (MLSD)", first["ftps"], again["ftps"] * 1000, rf["ftps"], ra["ftps"]
    printf "[bench] %-34s %9.3f %9.0f %8d %8d\n", "recvault API (agent filter, pages)", first["api"], again["api"] * 1000, rf["api"], ra["api"]
    if ("vsftpd" in first) printf "[bench] %-34s %9.3f %9.0f %8s %8s\n", "vsftpd, local disk (LIST)", first["vsftpd"], again["vsftpd"] * 1000, "-", "-"
    printf "[bench] ratio first listing / best plain listing: SFTP %.2f, FTPS %.2f, API %.2f (goal <= 1.2)\n", first["sftp"] / plain, first["ftps"] / plain, first["api"] / plain
    printf "[bench] repeated listing: SFTP %.0f ms, FTPS %.0f ms, API %.0f ms (goal <= 50 ms)\n", again["sftp"] * 1000, again["ftps"] * 1000, again["api"] * 1000
    printf "[bench] repeated after the listing_fresh_ms window (asks storage): SFTP %.0f ms, FTPS %.0f ms, API %.0f ms; S3 requests %d, %d, %d\n", again["sftp-late"] * 1000, again["ftps-late"] * 1000, again["api-late"] * 1000, ra["sftp-late"], ra["ftps-late"], ra["api-late"]
    printf "[bench]   one storage request through the link (boto3): LIST of the index prefix %.0f ms, HEAD of the index %.0f ms\n", first["floor-list"] * 1000, first["floor-head"] * 1000
    printf "[bench]   of which the client and protocol alone (a server on local disk): SFTP %.0f ms (OpenSSH)", again["openssh"] * 1000
    if ("vsftpd" in first) printf ", FTPS %.0f ms (vsftpd LIST)", again["vsftpd"] * 1000
    printf "\n[bench]   recvault itself: SFTP %.0f ms", (again["sftp"] - again["openssh"]) * 1000
    if ("vsftpd" in first) printf ", FTPS %.0f ms", (again["ftps"] - again["vsftpd"]) * 1000
    printf "\n"
}' "$TMP/results"
