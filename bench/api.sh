#!/usr/bin/env bash
# Content API download benchmark: one large file over HTTP from recvault's
# /v1 API (moto and local backends) against nginx serving the same file from
# local disk (Debian nginx, sendfile on), and recvault's SFTP on the local
# backend, in the same run; prints MB/s and the ratios.
#
# A benchmark, not a test: it prints figures and never fails on timing. It
# exits non-zero only when the setup breaks (a server does not start, a
# download fails or its SHA-256 differs).
#
# Environment (defaults in brackets):
#   RECVAULT_BIN     recvault binary, relative to the repo root [target/release/recvault]
#   BENCH_SIZE_MIB   size of the random file in MiB [1024]
#   BENCH_RUNS       downloads per peer; the best run is reported [3]
#   MOTO_PYTHON      python with moto and boto3 [.venv/bin/python if present, else python3]
#   BENCH_KEEP_TMP   set to keep the work directory after the run
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH_SIZE_MIB=${BENCH_SIZE_MIB:-1024}
BENCH_RUNS=${BENCH_RUNS:-3}
[[ $BENCH_SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZE_MIB must be a positive integer"
[[ $BENCH_RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer"
require_recvault_bin
require_tools curl sftp ssh-keygen sha256sum awk
[[ -x /usr/sbin/nginx ]] || die "/usr/sbin/nginx is not installed (apt-get install nginx-light)"
require_moto_python
make_work_dir

declare -A BEST_MBS=() RUNS_MBS=()

# ---------------------------------------------------------------- data
write_bench_file
chmod 755 "$TMP" "$TMP/objects"
mkdir -p "$TMP/www"
chmod 755 "$TMP/www"
ln "$TMP/src.bin" "$TMP/www/bench-1.tar.gz" 2>/dev/null || cp "$TMP/src.bin" "$TMP/www/bench-1.tar.gz"
chmod 644 "$TMP/www/bench-1.tar.gz"
ssh-keygen -q -t ed25519 -N '' -C bench-client -f "$TMP/client"

start_moto
upload_bench_file

# ---------------------------------------------------------------- recvault
API_KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
API_HASH=$(printf '%s' "$API_KEY" | sha256sum | cut -d' ' -f1)
API_TOML=$(printf '[api]\nlisten = "127.0.0.1:0"\nlink_key_file = "%s"\noutbox_dir = "%s"' "$TMP/link.key" "$TMP/outbox")
KEY_TOML=$(printf '[[tenants.api_keys]]\nname = "bench"\nkey = "sha256:%s"\nscopes = ["calls:read", "media:read"]' "$API_HASH")
write_recvault_config "$TMP/recvault-s3.toml" s3 "$KEY_TOML" "authorized_keys = [\"$(cat "$TMP/client.pub")\"]" "$API_TOML"
write_recvault_config "$TMP/recvault-local.toml" local "$KEY_TOML" "authorized_keys = [\"$(cat "$TMP/client.pub")\"]" "$API_TOML"
URL_PATH=/v1/calls/2026-11-23_bench-1/media/bench-1.tar.gz

for backend in s3 local; do
    label="recvault API ($([[ $backend == s3 ]] && echo moto || echo local))"
    AWS_ACCESS_KEY_ID=$MOTO_KEY AWS_SECRET_ACCESS_KEY=$MOTO_SECRET AWS_REGION=us-east-1 \
        run_recvault "recvault-$backend" "$TMP/recvault-$backend.toml" api
    timed "$label" curl -sS --fail -H "Authorization: Bearer $API_KEY" -o "$TMP/out.bin" "http://127.0.0.1:$RV_PORT$URL_PATH"
    if [[ $backend == local ]]; then
        SFTP_PORT=
        for ((i = 0; i < 100 && ${#SFTP_PORT} == 0; i++)); do
            SFTP_PORT=$(listening_port "recvault-$backend" sftp)
            [[ -n $SFTP_PORT ]] || sleep 0.1
        done
        [[ -n $SFTP_PORT ]] || die "recvault ($backend) printed no SFTP listening line"
        printf 'get %s %s\n' "$BENCH_TREE_PATH" "$TMP/out.bin" >"$TMP/batch"
        timed "recvault SFTP (local)" sftp -q -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
            -o BatchMode=yes -i "$TMP/client" -P "$SFTP_PORT" -b "$TMP/batch" bench@127.0.0.1
    fi
    stop_pid "$RV_PID"
done

# ---------------------------------------------------------------- nginx
NGINX_PORT=$(free_port)
cat >"$TMP/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err warn;
events { worker_connections 64; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $TMP/nginx-body;
    proxy_temp_path $TMP/nginx-proxy;
    fastcgi_temp_path $TMP/nginx-fastcgi;
    uwsgi_temp_path $TMP/nginx-uwsgi;
    scgi_temp_path $TMP/nginx-scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $TMP/www;
    }
}
EOF
/usr/sbin/nginx -c "$TMP/nginx.conf" </dev/null 2>"$TMP/nginx.log" 3>&- 4>&- &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$NGINX_PORT" 30 "$NGINX_PID" || { cat "$TMP/nginx.log" "$TMP/nginx.err" >&2; die "nginx did not start"; }
timed "nginx (local)" curl -sS --fail -o "$TMP/out.bin" "http://127.0.0.1:$NGINX_PORT/bench-1.tar.gz"
stop_pid "$NGINX_PID"

# ---------------------------------------------------------------- report
printf '\nHTTP download, %d MiB, one curl stream over loopback (plain HTTP), best of %d\n' "$BENCH_SIZE_MIB" "$BENCH_RUNS"
printf '%-24s %10s   %s\n' peer "MB/s" "runs"
for label in "recvault API (moto)" "recvault API (local)" "recvault SFTP (local)" "nginx (local)"; do
    printf '%-24s %10s   %s\n' "$label" "${BEST_MBS[$label]}" "${RUNS_MBS[$label]}"
done
printf '\nrecvault API(local)/nginx      = %s (target >= 0.9)\n' "$(ratio "${BEST_MBS["recvault API (local)"]}" "${BEST_MBS["nginx (local)"]}")"
printf 'recvault API(moto)/nginx       = %s\n' "$(ratio "${BEST_MBS["recvault API (moto)"]}" "${BEST_MBS["nginx (local)"]}")"
printf 'recvault API(local)/SFTP(local) = %s\n' "$(ratio "${BEST_MBS["recvault API (local)"]}" "${BEST_MBS["recvault SFTP (local)"]}")"
