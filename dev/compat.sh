#!/usr/bin/env bash
# dev/compat.sh — a driver's own test suite through pgsplit, as a compatibility check.
#
# Usage: dev/compat.sh psycopg
#
# psycopg: runs psycopg 3.3.4's test suite (../shared/peers/psycopg-suite.sh, which installs
# the pinned wheels into a venv) through a pgsplit of its own, in transaction pooling with
# routing on, as superuser postgres on database psycopg_test. Steps: dev/cluster.sh up;
# create psycopg_test on the primary (if missing) and wait for the replicas; write a config
# derived from config.toml (listen on COMPAT_PORT, the cluster's ports, database
# psycopg_test, user postgres); start pgsplit; run the suite; print its summary line
# (passed/failed/skipped/errors); stop pgsplit. The pgsplit log stays in
# $PGSPLIT_CLUSTER_DIR/log/compat-pgsplit.log.
#
# Settings (environment):
#   COMPAT_PORT      pgsplit's port (default 36432)
#   COMPAT_SELECT    run only these test files or folders of the selection (paths under
#                    the suite's tests/, space-separated), e.g. "tests/test_pipeline.py
#                    tests/pq" (default: the whole selection, about 5,100 tests, ~5 min)
#   COMPAT_EXTRA     more pytest arguments (word-split), e.g. "-x" or "--deselect ID"
#   COMPAT_KNOWN_OK=1  failures of the tests that cannot pass through pgsplit (listed in
#                    dev/compat-known.txt, explained in docs/compatibility.md) do not count
#                    against the exit status; any other failure or error does, and is named
#   COMPAT_READ_YOUR_WRITES  routing.read_your_writes for this run (default: as shipped,
#                    "lsn"); "cluster" makes what one connection committed visible to the
#                    next read on any other, as the suite expects of a single server
#   COMPAT_SUITE     the runner (default ../shared/peers/psycopg-suite.sh next to the repo,
#                    else /work/shared/peers/psycopg-suite.sh)
#   PGSPLIT_BIN      the binary (default: target/release/pgsplit if built, else
#                    target/debug/pgsplit; PGSPLIT_BUILD=1 runs cargo build first)
#   PSYCO_*          passed on to the runner (PSYCO_TEST_TIMEOUT, PSYCO_RUN_TIMEOUT, ...)
# Exit status: 0 when the suite ran to its summary line with no failure and no error,
# 1 otherwise, 2 on a usage error.
set -euo pipefail

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
-h | --help)
    usage
    exit 0
    ;;
psycopg) ;;
*)
    echo "$(basename "$0"): unknown or missing suite '${1:-}' (known: psycopg)" >&2
    exit 2
    ;;
esac

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

COMPAT_PORT="${COMPAT_PORT:-36432}"
COMPAT_DB=psycopg_test
COMPAT_USER=postgres
COMPAT_PASSWORD=postgres # the dev cluster's superuser (dev/cluster.sh help)

SUITE="${COMPAT_SUITE:-}"
if [[ -z "$SUITE" ]]; then
    for candidate in "$REPO_ROOT/../shared/peers/psycopg-suite.sh" /work/shared/peers/psycopg-suite.sh; do
        [[ -x "$candidate" ]] && SUITE="$candidate" && break
    done
fi
[[ -n "$SUITE" && -x "$SUITE" ]] || lib_die "psycopg-suite.sh not found (set COMPAT_SUITE)"

if [[ "$PGSPLIT_BIN" == "$REPO_ROOT/target/release/pgsplit" ]]; then
    target="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
    if [[ "${PGSPLIT_BUILD:-0}" == 1 ]]; then
        (cargo build --bin pgsplit)
        PGSPLIT_BIN="$target/debug/pgsplit"
    elif [[ -x "$target/release/pgsplit" ]]; then
        PGSPLIT_BIN="$target/release/pgsplit"
    else
        PGSPLIT_BIN="$target/debug/pgsplit"
    fi
fi
[[ -x "$PGSPLIT_BIN" ]] || lib_die "$PGSPLIT_BIN not found (cargo build, or set PGSPLIT_BIN)"

# --ignore=FILE for every test file in TARBALL that is not under one of PATHS.
ignore_all_but() { # TARBALL PATHS
    local file keep path
    tar -tzf "$1" | grep -E '^tests/.*test_[^/]*\.py$' | while read -r file; do
        keep=0
        for path in $2; do
            path="${path%/}"
            [[ "$file" == "$path" || "$file" == "$path"/* ]] && keep=1
        done
        ((keep)) || printf -- '--ignore=%s ' "$file"
    done
}

# The lines of FAILED (the runner's "FAILED|ERROR id - message" lines) whose test is not
# in KNOWN: an entry names a test id exactly, or a test without its parameters (then any
# of its parameter sets).
news() { # FAILED KNOWN
    local kind id rest entry known
    while read -r kind id rest; do
        known=0
        while read -r entry; do
            [[ -z "$entry" || "$entry" == \#* ]] && continue
            if [[ "$id" == "$entry" || "$id" == "$entry["* ]]; then
                known=1
                break
            fi
        done <"$2"
        ((known)) || echo "$kind $id $rest"
    done < <(grep -E '^(FAILED|ERROR) ' "$1" || true)
}

# ---- the cluster and the database ----
dev/cluster.sh up >/dev/null
while IFS='=' read -r key value; do
    case "$key" in
    PRIMARY_PORT) PRIMARY_PORT="$value" ;;
    REPLICA1_PORT) REPLICA1_PORT="$value" ;;
    REPLICA2_PORT) REPLICA2_PORT="$value" ;;
    esac
done <"$PGSPLIT_CLUSTER_DIR/cluster.env"

prepared="$(node_psql "$PRIMARY_PORT" -d postgres -c 'SHOW max_prepared_transactions')"
if [[ "$prepared" == 0 ]]; then
    lib_die "the primary has max_prepared_transactions = 0 (a cluster made before dev/cluster.sh set it);" \
        "recreate it with dev/cluster.sh destroy && dev/cluster.sh up, or set it on every node and restart"
fi
if [[ "$(node_psql "$PRIMARY_PORT" -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$COMPAT_DB'")" == 0 ]]; then
    echo "== creating database $COMPAT_DB on the primary"
    node_psql "$PRIMARY_PORT" -d postgres -c "CREATE DATABASE $COMPAT_DB"
fi
# Some tests need the extension; created here so that they do not skip.
node_psql "$PRIMARY_PORT" -d "$COMPAT_DB" -c 'CREATE EXTENSION IF NOT EXISTS hstore' >/dev/null 2>&1 || true
replicas_replayed_within 60 || lib_die "replicas did not catch up"

# ---- pgsplit ----
CONFIG="$LOG_DIR/compat-pgsplit.toml"
mkdir -p "$LOG_DIR"
# A patient connect timeout (the integration tests have one too, tests/common): a loaded
# machine can take more than the shipped 5 s to log in to a node, which is not what the
# suite tests. (Still under the suite's 30 s per test.)
bench_pgsplit_config "$CONFIG" "$COMPAT_PORT" true \
    -e "/^\[proxy\]/,/^\[/ s/^server_connect_timeout = .*/server_connect_timeout = \"15s\"/" \
    -e "/^\[routing\]/,/^\[/ s/^read_your_writes = .*/read_your_writes = \"${COMPAT_READ_YOUR_WRITES:-lsn}\"/" \
    -e "s/^port = 15432\$/port = $PRIMARY_PORT/" \
    -e "s/^port = 15433\$/port = $REPLICA1_PORT/" \
    -e "s/^port = 15434\$/port = $REPLICA2_PORT/"
cat >>"$CONFIG" <<EOF

# ---- dev/compat.sh: the driver test suite's database and superuser ----
[[databases]]
name = "$COMPAT_DB"

[[users]]
name = "$COMPAT_USER"
password = "$COMPAT_PASSWORD"
auth = "scram-sha-256"
EOF
"$PGSPLIT_BIN" --config "$CONFIG" --check >/dev/null || lib_die "the derived config $CONFIG is invalid"

PGSPLIT_PORT="$COMPAT_PORT"
PGSPLIT_CONFIG="$CONFIG"
PGSPLIT_LOG_FILE="$LOG_DIR/compat-pgsplit.log"
start_pgsplit

# ---- the suite ----
extra="${COMPAT_EXTRA:-}"
if [[ -n "${COMPAT_SELECT:-}" ]]; then
    # The runner always collects tests/: every test file outside the selection is ignored.
    extra="$extra $(ignore_all_but "$(dirname "$SUITE")/psycopg-3.3.4-tests.tar.gz" "$COMPAT_SELECT")"
    [[ "$extra" == *--ignore=* ]] || lib_die "COMPAT_SELECT '$COMPAT_SELECT' leaves out no test file"
fi
DSN="host=127.0.0.1 port=$COMPAT_PORT user=$COMPAT_USER password=$COMPAT_PASSWORD dbname=$COMPAT_DB"
echo "== psycopg suite through pgsplit ($DSN)"
export PSYCO_OUT="${PSYCO_OUT:-/tmp/psyco-runs/pgsplit-$(date +%Y%m%d-%H%M%S)}"
set +e
summary="$(PSYCO_EXTRA="$extra" "$SUITE" "$DSN" "pgsplit" | tail -n 1)"
set -e
echo "$summary"
stop_pgsplit
[[ "$summary" =~ ([0-9]+)\ failed,\ [0-9]+\ skipped,\ ([0-9]+)\ errors ]] || exit 1
[[ "$summary" != *" 0 passed"* ]] || exit 1
if [[ "${COMPAT_KNOWN_OK:-0}" == 1 ]]; then
    new="$(news "$PSYCO_OUT/failed.txt" "$REPO_ROOT/dev/compat-known.txt")"
    if [[ -n "$new" ]]; then
        echo "== failures not in dev/compat-known.txt:"
        echo "$new"
        exit 1
    fi
    echo "== every failure is a known one (dev/compat-known.txt)"
    exit 0
fi
[[ "${BASH_REMATCH[1]}" == 0 && "${BASH_REMATCH[2]}" == 0 ]] || exit 1
exit 0
