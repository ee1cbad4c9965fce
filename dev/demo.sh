#!/usr/bin/env bash
# dev/demo.sh — the README demo: pgbench through pgsplit, then where the statements went.
#
#   1. cargo build --release
#   2. dev/cluster.sh up            (primary 15432, replicas 15433 / 15434)
#   3. target/release/pgsplit --config config.toml   in the background, on 127.0.0.1:6432
#   4. pgbench -i -s 1, a TPC-B-like run and a select-only (-S) run, all through pgsplit as
#      postgres://app:secret@127.0.0.1:6432/app
#   5. per node, the change in pg_stat_database for database app during each run: writes
#      should land on the primary, the select-only run mostly on the replicas.
#
# pgsplit is stopped on exit, however the script ends.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

DURATION="${DEMO_DURATION:-10}"
CLIENTS="${DEMO_CLIENTS:-8}"
THREADS="${DEMO_THREADS:-2}"
# PostgreSQL 15 flushes an idle backend's statistics up to 10 s late; pooled server
# connections sit idle after a run, so wait that long before reading pg_stat_database.
STATS_WAIT="${DEMO_STATS_WAIT:-11}"

usage() {
    cat <<EOF
Usage: dev/demo.sh [-h|--help]

Builds pgsplit, starts the dev cluster and pgsplit, runs pgbench through pgsplit and shows
how many transactions and tuples each node served.

Environment:
  DEMO_DURATION=$DURATION    seconds per pgbench run
  DEMO_CLIENTS=$CLIENTS      pgbench clients (-c)
  DEMO_THREADS=$THREADS      pgbench threads (-j)
  DEMO_STATS_WAIT=$STATS_WAIT   seconds to wait for statistics to settle after each run
  PGSPLIT_SKIP_BUILD=1       do not run cargo build
  PGSPLIT_BIN                pgsplit binary (default target/release/pgsplit)
  PGSPLIT_CONFIG             config file (default config.toml)
  PGSPLIT_CLUSTER_DIR        dev cluster directory (default /tmp/pgsplit-cluster)
EOF
}

lib_no_arguments "$@"

cd "$REPO_ROOT"
need_pg_clients

URL="postgres://app:secret@$PGSPLIT_HOST:$PGSPLIT_PORT/app"
export PGPASSWORD=secret

# ---- statistics per node ---------------------------------------------------------------------
NODES=(primary replica1 replica2)
declare -A NODE_PORT=([primary]=$PRIMARY_PORT [replica1]=$REPLICA1_PORT [replica2]=$REPLICA2_PORT)
STAT_COLS=(xact_commit xact_rollback tup_returned tup_fetched tup_inserted tup_updated tup_deleted)
declare -A SNAP=() # SNAP[label/node] = "n1 n2 ..." in STAT_COLS order

# Record pg_stat_database for database app on every node under LABEL.
snapshot() {
    local label="$1" node cols
    cols="$(IFS=,; echo "${STAT_COLS[*]}")"
    for node in "${NODES[@]}"; do
        SNAP[$label/$node]="$(node_psql "${NODE_PORT[$node]}" -d postgres -F ' ' \
            -c "SELECT $cols FROM pg_stat_database WHERE datname = 'app'")"
    done
}

# Print, per node, the change between snapshots FROM and TO.
print_deltas() {
    local title="$1" from="$2" to="$3" node i
    echo
    echo "-- $title"
    printf '%-9s' node
    printf ' %13s' "${STAT_COLS[@]}"
    echo
    for node in "${NODES[@]}"; do
        local -a a b
        read -r -a a <<<"${SNAP[$from/$node]}"
        read -r -a b <<<"${SNAP[$to/$node]}"
        printf '%-9s' "$node"
        for i in "${!STAT_COLS[@]}"; do printf ' %13d' $((b[i] - a[i])); done
        echo
    done
}

settle_stats() {
    echo "== waiting ${STATS_WAIT}s for server statistics to be flushed"
    sleep "$STATS_WAIT"
}

# ---- run ---------------------------------------------------------------------------------------
build_pgsplit
echo "== dev/cluster.sh up"
"$REPO_ROOT/dev/cluster.sh" up
start_pgsplit

echo
echo "== pgbench -i -s 1 through pgsplit ($URL)"
"$PGBENCH" -i -s 1 "$URL"

settle_stats
snapshot start

echo
echo "== pgbench TPC-B-like: -c $CLIENTS -j $THREADS -T $DURATION"
"$PGBENCH" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$URL"
settle_stats
snapshot tpcb

echo
echo "== pgbench select-only: -S -c $CLIENTS -j $THREADS -T $DURATION"
"$PGBENCH" -S -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$URL"
settle_stats
snapshot select

echo
echo "== where did statements go (pg_stat_database, database app, change per node)"
print_deltas "TPC-B-like run (writes: expect the primary)" start tpcb
print_deltas "select-only run (reads: expect the replicas)" tpcb select
print_deltas "both runs" start select
echo
echo "pgsplit log: $PGSPLIT_LOG_FILE"
