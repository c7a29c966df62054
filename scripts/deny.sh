#!/usr/bin/env bash
# Supply-chain checks of every dependency against deny.toml: licences, banned
# crates, sources (crates.io only). Installs cargo-deny (from crates.io) when
# it is missing.
#
# Known advisories (RustSec) are checked too when RECVAULT_ADVISORY_DB names
# a local copy of the database: the folder `cargo deny fetch` fills
# (~/.cargo/advisory-dbs), copied from a machine that reaches GitHub. These
# machines reach only package registries, so without it the check is skipped
# and the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "^cargo-deny $DENY_VERSION"; then
    echo "installing cargo-deny $DENY_VERSION"
    cargo install --locked --quiet cargo-deny --version "$DENY_VERSION"
fi
cargo deny check --hide-inclusion-graph licenses bans sources
if [[ -n ${RECVAULT_ADVISORY_DB:-} ]]; then
    [[ -d $RECVAULT_ADVISORY_DB ]] || { echo "RECVAULT_ADVISORY_DB=$RECVAULT_ADVISORY_DB is not a folder" >&2; exit 1; }
    for db in "$RECVAULT_ADVISORY_DB"/*/; do
        [[ -d $db/.git ]] || continue
        echo "advisory database $(basename "$db"): last change $(git -C "$db" log -1 --format=%cs)"
    done
    config=$(mktemp)
    trap 'rm -f "$config"' EXIT
    sed "s|^\[advisories\]\$|[advisories]\ndb-path = \"$RECVAULT_ADVISORY_DB\"|" deny.toml >"$config"
    cargo deny --offline --config "$config" check advisories
else
    echo "cargo deny: known advisories NOT checked: no local RustSec database (set RECVAULT_ADVISORY_DB; see scripts/deny.sh)"
fi
