#!/usr/bin/env bash
# dev/lag-demo.sh — the lag guard, live: the tuning walk-through from docs/lag-guard.md.
#
#   1. cargo build --release; dev/cluster.sh up; pgsplit --config config.toml in the background
#   2. a read load through pgsplit (pgbench -S, database bench) for the whole demo
#   3. replay paused on replica1 while ~8 MB are written on the primary: replica1 falls
#      behind, but the default max_replica_lag (16MB) tolerates it; SHOW LAG says what a
#      lower threshold would do
#   4. SET max_replica_lag = '4MB' in the admin console: replica1 leaves the read rotation
#   5. replay resumed: replica1 catches up and comes back; SHOW REPLICAS, the log lines and
#      the read load's result (no errors) at the end
#
# pgsplit is stopped and replay resumed on exit, however the script ends.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}
lib_no_arguments "$@"

cd "$REPO_ROOT"
need_pg_clients
ADMIN_URL="postgres://admin:admin@$PGSPLIT_HOST:$PGSPLIT_PORT/pgsplit"
BENCH_URL="postgres://app:secret@$PGSPLIT_HOST:$PGSPLIT_PORT/bench"
LOAD_OUT="$LOG_DIR/lag-demo-pgbench.txt"
LOAD_PID=""

admin() {
    echo
    echo "admin=# $1"
    "$PSQL" -X "$ADMIN_URL" -c "$1"
}

cleanup() {
    "$REPO_ROOT/dev/cluster.sh" resume 1 >/dev/null 2>&1 || true
    [[ -z "$LOAD_PID" ]] || kill "$LOAD_PID" 2>/dev/null || true
    node_psql "$PRIMARY_PORT" -d app -c "DROP TABLE IF EXISTS lag_demo_fill" 2>/dev/null || true
    stop_pgsplit
}

build_pgsplit
echo "== dev/cluster.sh up"
"$REPO_ROOT/dev/cluster.sh" up
start_pgsplit
trap cleanup EXIT

echo "== pgbench -i -s 1 bench (on the primary), then a read load through pgsplit"
node_psql "$PRIMARY_PORT" -d postgres -c "GRANT ALL ON DATABASE bench TO app" >/dev/null
PGPASSWORD=secret "$PGBENCH" -q -i -s 1 "postgres://app:secret@127.0.0.1:$PRIMARY_PORT/bench" 2>&1 | tail -1
sleep 1
"$PGBENCH" -S -n -c 4 -j 2 -T 30 "$BENCH_URL" >"$LOAD_OUT" 2>&1 &
LOAD_PID=$!
sleep 2
admin "SHOW REPLICAS"

echo
echo "== replay paused on replica1; 8 MB written on the primary"
"$REPO_ROOT/dev/cluster.sh" pause 1 >/dev/null
node_psql "$PRIMARY_PORT" -d app -c "CREATE TABLE lag_demo_fill AS SELECT repeat('x', 1000) AS x FROM generate_series(1, 8000)"
sleep 2
admin "SHOW REPLICAS"
admin "SHOW LAG"

echo
echo "== the default 16MB tolerates it; SHOW LAG says 4MB would have ejected replica1 for this spell"
admin "SET max_replica_lag = '4MB'"
sleep 1
admin "SHOW REPLICAS"

echo
echo "== replay resumed"
"$REPO_ROOT/dev/cluster.sh" resume 1 >/dev/null
sleep 3
admin "SHOW REPLICAS"
admin "SHOW STATS"

wait "$LOAD_PID" || true
LOAD_PID=""
echo
echo "== the read load (pgbench -S through pgsplit, 30 s)"
grep -E "number of (transactions actually processed|failed)|tps" "$LOAD_OUT" || cat "$LOAD_OUT"
echo
echo "== what pgsplit logged"
grep -E "read rotation|admin|lag settings" "$PGSPLIT_LOG_FILE" || true
