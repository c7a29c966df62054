#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need when it is missing:
# the clients they drive (OpenSSH's sftp/ssh/ssh-keygen, sshpass, rclone,
# lftp, curl, PuTTY's psftp, sshfs, python3 with venv for ftplib and moto, openssl, tar, kill, setpriv,
# mkfifo, ffmpeg/ffprobe and janus-pp-rec for the media tests, prometheus and promtool for the metrics test,
# chromium and node for the browser tests; Debian packages), Playwright's library (npm, in tests/browser/node_modules) and moto's S3 and KMS server, paramiko, Tink, requests and schemathesis (PyPI, in ./.venv). Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v sftp >/dev/null 2>&1 || missing+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v sshpass >/dev/null 2>&1 || missing+=(sshpass)
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
command -v lftp >/dev/null 2>&1 || missing+=(lftp)
command -v psftp >/dev/null 2>&1 || missing+=(putty-tools)
command -v sshfs >/dev/null 2>&1 || missing+=(sshfs)
command -v setsid >/dev/null 2>&1 || missing+=(util-linux)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)  # ffmpeg runs under setpriv --pdeathsig
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# Debian's python3 makes virtual environments only with python3-venv.
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v tar >/dev/null 2>&1 || missing+=(tar)
command -v mkfifo >/dev/null 2>&1 || missing+=(coreutils)  # the MP4/WebM renders' input pipes
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v janus-pp-rec >/dev/null 2>&1 || missing+=(janus-tools)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)  # the admin listener's scrape test (prometheus, promtool)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)  # the three-node test (a TCP balancer with PROXY protocol v2)
type -P kill >/dev/null 2>&1 || missing+=(procps)  # the binary: `command -v` finds the builtin
command -v timeout >/dev/null 2>&1 || missing+=(coreutils)
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the browser tests (Playwright drives it)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! .venv/bin/python -c "import moto, flask, flask_cors, boto3, paramiko, tink, requests, schemathesis" >/dev/null 2>&1; then
  echo "installing moto's S3 server, paramiko, Google's Tink, requests and schemathesis into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q "moto[s3]" flask flask-cors paramiko tink requests schemathesis
fi
export MOTO_PYTHON="$PWD/.venv/bin/python"

# Playwright's library (no browser download: the tests use Debian's chromium).
if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
  echo "installing playwright-core into tests/browser/node_modules"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo test --all-targets "$@"
