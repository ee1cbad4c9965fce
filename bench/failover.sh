#!/usr/bin/env bash
# bench/failover.sh — how long writes through pgsplit stop at a switchover and a failover,
# and what clients see meanwhile.
#
#   bench/failover.sh
#
# Each run rebuilds the dev cluster (one primary, two replicas), starts pgsplit (release
# build, the repository's config.toml with routing on and pool.primary_wait_timeout = 20s),
# then runs for DURATION seconds, through pgsplit: pgbench's TPC-B-like script (-c CLIENTS)
# and a probe that writes one row every 10 ms on one connection (psycopg, autocommit),
# recording when each write succeeded and on which node. After LEAD seconds the primary
# stops (`dev/cluster.sh stop-primary fast` for a switchover, `immediate` for a failover)
# and replica1 is promoted (`dev/cluster.sh promote 1`). Reported per kind: the time from
# `pg_ctl promote` returning to the probe's first write on the promoted node (median of
# RUNS), the probe's failed writes, and the pgbench clients that aborted on an error.
# Writes to bench/results/last-failover.txt. Run as root on a Debian machine.
set -euo pipefail
export LC_ALL=C
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

RUNS="${RUNS:-5}"
DURATION="${DURATION:-20}"
LEAD="${LEAD:-5}"
CLIENTS="${CLIENTS:-8}"
SCALE="${SCALE:-10}"
OUT="$REPO_ROOT/bench/results/last-failover.txt"
usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    echo
    echo "Environment: RUNS ($RUNS), DURATION ($DURATION s), LEAD ($LEAD s), CLIENTS ($CLIENTS), SCALE ($SCALE)."
}
lib_no_arguments "$@"
cd "$REPO_ROOT"
need_pg_clients
/usr/bin/python3 -c 'import psycopg' 2>/dev/null || lib_die "python3-psycopg not found (apt-get install python3-psycopg)"
export PGPASSWORD=secret

DIR="$PGSPLIT_CLUSTER_DIR/bench-failover"
rm -rf "$DIR"
mkdir -p "$DIR"
build_pgsplit >/dev/null
CLUSTER="$REPO_ROOT/dev/cluster.sh"
PORT=6461
PID=""
stop_proxy() {
    [[ -n "$PID" ]] && { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    PID=""
}
trap 'stop_proxy; "$CLUSTER" rebuild >/dev/null 2>&1 || true' EXIT

bench_pgsplit_config "$DIR/pgsplit.toml" "$PORT" true \
    -e "/^\[pool\]/,/^\[/ s/^primary_wait_timeout = .*/primary_wait_timeout = \"20s\"/"

# The probe: one autocommit connection writing a row every 10 ms until its time is up;
# prints "EPOCH ok PORT" or "EPOCH error MESSAGE" per attempt.
PROBE='
import sys, time, psycopg
dsn, until = sys.argv[1], time.time() + float(sys.argv[2])
conn = None
while time.time() < until:
    try:
        if conn is None or conn.closed:
            conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
        port = conn.execute("insert into failover_probe default values returning inet_server_port()").fetchone()[0]
        print(f"{time.time():.6f} ok {port}", flush=True)
    except psycopg.Error as e:
        print(f"{time.time():.6f} error {str(e).splitlines()[0] if str(e) else type(e).__name__}", flush=True)
        if conn is not None and conn.closed:
            conn = None
    time.sleep(0.01)
'

# One run of kind $1 (switchover | failover); prints "DELAY_MS PROBE_ERRORS ABORTED TXS".
run_once() {
    local kind="$1" mode=fast promoted pgbench_pid probe_pid
    [[ "$kind" == failover ]] && mode=immediate
    "$CLUSTER" rebuild >/dev/null
    bench_data_at_scale "$SCALE" >/dev/null
    node_psql "$PRIMARY_PORT" -d bench -c 'DROP TABLE IF EXISTS failover_probe' \
        -c 'CREATE TABLE failover_probe (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())' \
        -c 'GRANT ALL ON failover_probe, failover_probe_id_seq TO app' >/dev/null
    "$PGSPLIT_BIN" --config "$DIR/pgsplit.toml" >"$DIR/pgsplit-$kind.log" 2>&1 &
    PID=$!
    wait_listening "$PORT" "$PID" "pgsplit (log: $DIR/pgsplit-$kind.log)"
    sleep 2 # the replicas join the read rotation after their first checks
    local url="postgres://app:secret@127.0.0.1:$PORT/bench"
    "$PGBENCH" -n -M simple -c "$CLIENTS" -j 2 -T "$DURATION" "$url" >"$DIR/pgbench.out" 2>&1 &
    pgbench_pid=$!
    /usr/bin/python3 -c "$PROBE" "$url" "$DURATION" >"$DIR/probe.out" 2>&1 &
    probe_pid=$!
    sleep "$LEAD"
    "$CLUSTER" stop-primary "$mode" >/dev/null
    "$CLUSTER" promote 1 >/dev/null
    promoted="$(date +%s.%N)"
    wait "$probe_pid" || true
    wait "$pgbench_pid" || true
    stop_proxy
    awk -v t0="$promoted" -v new="$REPLICA1_PORT" -v pgbench="$DIR/pgbench.out" '
        $2 == "error" { errors++ }
        $2 == "ok" && $3 == new && $1 > t0 && delay == "" { delay = ($1 - t0) * 1000 }
        END {
            while ((getline line < pgbench) > 0) {
                if (line ~ /client [0-9]+ .*aborted/) aborted++
                if (line ~ /number of transactions actually processed/) { n = split(line, f, " "); txs = f[n] }
            }
            printf "%s %d %d %s\n", (delay == "" ? "none" : sprintf("%.0f", delay)), errors, aborted, (txs == "" ? 0 : txs)
        }' "$DIR/probe.out"
}

median() { tr ' ' '\n' | grep -v '^$' | grep -v none | sort -g | awk '{a[NR] = $1} END {print (NR ? a[int((NR + 1) / 2)] : "none")}'; }
declare -A DELAYS=() ERRORS=() ABORTED=() TXS=()
for run in $(seq 1 "$RUNS"); do
    for kind in switchover failover; do
        read -r delay errors aborted txs <<<"$(run_once "$kind")"
        echo "== run $run/$RUNS $kind: first write on the promoted node ${delay} ms after promote; probe errors $errors; pgbench clients aborted $aborted of $CLIENTS; $txs transactions"
        DELAYS[$kind]+="$delay "
        ERRORS[$kind]+="$errors "
        ABORTED[$kind]+="$aborted "
        TXS[$kind]+="$txs "
    done
done

{
    echo "bench/failover.sh: $RUNS runs of each kind; pgbench TPC-B-like -M simple -c $CLIENTS -T $DURATION and a probe writing every 10 ms, through pgsplit (routing on, 250 ms checks); primary stopped after $LEAD s, then replica1 promoted; $(date -u '+%Y-%m-%d %H:%M UTC'); git $(git rev-parse --short HEAD); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "kind         how the primary stops   median ms promote->first write   runs (ms)            probe errors   pgbench clients aborted (of $CLIENTS)"
    for kind in switchover failover; do
        how="pg_ctl stop -m fast"
        [[ "$kind" == failover ]] && how="pg_ctl stop -m immediate"
        printf "%-12s %-23s %-32s %-20s %-14s %s\n" "$kind" "$how" "$(median <<<"${DELAYS[$kind]}")" \
            "${DELAYS[$kind]}" "${ERRORS[$kind]}" "${ABORTED[$kind]}"
    done
} | tee "$OUT"
