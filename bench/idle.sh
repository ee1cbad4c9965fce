#!/usr/bin/env bash
# bench/idle.sh — memory per idle client connection: pgsplit against PgBouncer.
#
#   bench/idle.sh
#
# Starts pgsplit (the repository's config.toml, routing on, pools of POOL_SIZE) and PgBouncer
# (transaction pooling to the primary, pools of POOL_SIZE), both with room for CLIENTS
# clients. For each it warms the pool with a few queries, reads the process's resident memory
# (VmRSS), opens CLIENTS client connections (SCRAM logins with psycopg, one `SELECT 1` each,
# then idle), reads VmRSS again and prints the growth per client connection. Writes
# bench/results/last-idle.txt. Needs python3-psycopg and pgbouncer; run as root on a Debian machine
# (PgBouncer is started as the postgres OS user).
set -euo pipefail
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

CLIENTS="${CLIENTS:-2000}"
POOL_SIZE="${POOL_SIZE:-20}"
OUT="$REPO_ROOT/bench/results/last-idle.txt"

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    echo
    echo "Environment: CLIENTS ($CLIENTS), POOL_SIZE ($POOL_SIZE)."
}
lib_no_arguments "$@"
cd "$REPO_ROOT"
need_pg_clients
command -v pgbouncer >/dev/null 2>&1 || lib_die "pgbouncer not found (apt-get install pgbouncer)"
/usr/bin/python3 -c "import psycopg" 2>/dev/null || lib_die "psycopg not found (apt-get install python3-psycopg)"
# Each client is a socket in the proxy and one in the python process.
ulimit -n $((CLIENTS * 2 + 1000))

DIR="$PGSPLIT_CLUSTER_DIR/bench-idle"
rm -rf "$DIR"
mkdir -p "$DIR"
build_pgsplit >/dev/null
"$REPO_ROOT/dev/cluster.sh" up >/dev/null
bench_data_at_scale 10 >/dev/null

declare -A PID=() PORT=([pgsplit]=6491 [pgbouncer]=6492)
stop_all() {
    for t in "${!PID[@]}"; do kill -TERM "${PID[$t]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all EXIT

bench_pgsplit_config "$DIR/pgsplit.toml" "${PORT[pgsplit]}" true \
    -e "/^\[pool\]/,/^\[/ s/^max_size = .*/max_size = $POOL_SIZE/" \
    -e "/^\[proxy\]/,/^\[/ s/^max_client_conn = .*/max_client_conn = $((CLIENTS + 100))/"
"$PGSPLIT_BIN" --config "$DIR/pgsplit.toml" >"$DIR/pgsplit.log" 2>&1 &
PID[pgsplit]=$!

bench_pgbouncer_config "$DIR" "${PORT[pgbouncer]}" "$POOL_SIZE" $((CLIENTS + 100))
pgbouncer "${PGBOUNCER_AS[@]}" "$DIR/pgbouncer.ini" >"$DIR/pgbouncer.log" 2>&1 &
PID[pgbouncer]=$!

for t in "${!PID[@]}"; do
    wait_listening "${PORT[$t]}" "${PID[$t]}" "$t (log: $DIR/$t.log)"
done
sleep 3 # replicas join the read rotation after their first checks

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# Opens $2 clients to port $1, each runs SELECT 1; when all are open and idle, prints
# "open" and waits for a line on stdin before closing them.
clients_py='
# asyncio: psycopg 3.1 waits with select() outside it, which stops at descriptor 1024.
import asyncio, sys, psycopg
async def main(port, n):
    conns = []
    try:
        for _ in range(n):
            c = await psycopg.AsyncConnection.connect(f"host=127.0.0.1 port={port} dbname=bench user=app password=secret sslmode=disable", autocommit=True)
            await (await c.execute("SELECT 1")).fetchone()
            conns.append(c)
    except Exception as e:
        print(f"client {len(conns) + 1}: {type(e).__name__}: {e}".replace("\n", " "), flush=True)
        sys.exit(1)
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for c in conns:
        await c.close()
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
'

declare -A ROW=()
for t in pgsplit pgbouncer; do
    PGPASSWORD=secret "$PGBENCH" -n -S -M simple -c "$POOL_SIZE" -t 50 \
        "postgres://app:secret@127.0.0.1:${PORT[$t]}/bench?sslmode=disable" >/dev/null 2>&1 ||
        lib_die "pgbench warm-up through $t failed"
    before="$(rss_kb "${PID[$t]}")"
    started=$SECONDS
    coproc CLIENTS_PROC { /usr/bin/python3 -c "$clients_py" "${PORT[$t]}" "$CLIENTS" 2>&1; }
    read -r line <&"${CLIENTS_PROC[0]}" || true
    [[ "$line" == open ]] || lib_die "opening $CLIENTS clients through $t failed: $line"
    took=$((SECONDS - started))
    sleep 1
    after="$(rss_kb "${PID[$t]}")"
    echo done >&"${CLIENTS_PROC[1]}"
    wait "$CLIENTS_PROC_PID" || true
    per="$(awk -v a="$after" -v b="$before" -v n="$CLIENTS" 'BEGIN {printf "%.1f", (a - b) / n}')"
    echo "== $t: RSS $before kB before, $after kB with $CLIENTS idle clients ($took s to open): $per kB per client"
    ROW[$t]="$(printf '%-10s %10s %10s %14s' "$t" "$before" "$after" "$per")"
done

{
    echo "bench/idle.sh: $CLIENTS idle client connections (SCRAM, one SELECT 1 each), pools of $POOL_SIZE; $(date -u '+%Y-%m-%d %H:%M UTC'); git $(git rev-parse --short HEAD); $(nproc) cores"
    echo "target     RSS before  RSS after  kB per client"
    echo "${ROW[pgsplit]}"
    echo "${ROW[pgbouncer]}"
} | tee "$OUT"
echo "(written to bench/results/last-idle.txt; logs in $DIR)"
