#!/usr/bin/env bash
# dev/test.sh — the project's test command: start the dev cluster, then run cargo test.
#
# Usage: dev/test.sh [ARGS...]
#   ARGS go to the test binaries (after `--`), e.g. `dev/test.sh lag` runs tests matching
#   "lag", `dev/test.sh --nocapture` shows their output.
#
# Tests find the cluster through the exported PGSPLIT_* variables below (see dev/cluster.sh
# help for the users and passwords).
set -euo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

export PGSPLIT_CLUSTER_DIR="${PGSPLIT_CLUSTER_DIR:-/tmp/pgsplit-cluster}"
export PGSPLIT_PRIMARY_PORT="${PGSPLIT_PRIMARY_PORT:-15432}"
export PGSPLIT_REPLICA1_PORT="${PGSPLIT_REPLICA1_PORT:-15433}"
export PGSPLIT_REPLICA2_PORT="${PGSPLIT_REPLICA2_PORT:-15434}"
# The CA of the nodes' TLS certificate (dev/cluster.sh makes it).
export PGSPLIT_CLUSTER_CA="$PGSPLIT_CLUSTER_DIR/tls/ca.crt"

command -v cargo >/dev/null 2>&1 || {
    echo "dev/test.sh: error: cargo not found in PATH (is ~/.cargo/bin in PATH?)" >&2
    exit 1
}

dev/cluster.sh up

# Tests get the ports the cluster really has (written when it was created).
while IFS='=' read -r key value; do
    case "$key" in
    PRIMARY_PORT | REPLICA1_PORT | REPLICA2_PORT) export "PGSPLIT_$key=$value" ;;
    esac
done <"$PGSPLIT_CLUSTER_DIR/cluster.env"

# The drivers of the driver matrix (tests/drivers.rs): asyncpg, node-postgres, JDBC.
export PGSPLIT_DRIVERS_DIR="${PGSPLIT_DRIVERS_DIR:-/tmp/pgsplit-drivers}"
dev/drivers.sh

# ---- the test command (the project decides the final flags here) -----------------------------
# Benches (criterion) are built by clippy --all-targets; they run with cargo bench.
exec cargo test --lib --bins --tests --no-fail-fast -- --test-threads=4 "$@"
