#!/usr/bin/env bash
# bench/threads.sh — does pgsplit scale with worker_threads? One run against PgBouncer.
#
#   bench/threads.sh
#
# Starts pgsplit with routing off (pooling only, every statement to the primary, like
# PgBouncer) twice, with worker_threads = 1 and 2, and PgBouncer (single-threaded), all with
# pools of POOL_SIZE, and runs `pgbench -n -S -M simple` against each in two layouts:
#   shared   nothing pinned: proxy, pgbench and PostgreSQL share every core
#   pinned   the proxy on the last core (taskset), pgbench and the primary's processes on
#            the others, so that the proxy's core is its own and the proxy is the bottleneck
# ROUNDS rounds with the order rotating; TPS and the proxy's CPU per transaction, medians.
# Writes bench/results/last-threads.txt. On a 2-core machine the pinned layout leaves one core to
# the proxy, so two worker threads share it: the figures say what threads cost, not what
# they gain; run it where the proxy can have 2 cores of its own for that.
set -euo pipefail
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-16}"
POOL_SIZE="${POOL_SIZE:-20}"
OUT="$REPO_ROOT/bench/results/last-threads.txt"

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    echo
    echo "Environment: ROUNDS ($ROUNDS), DURATION ($DURATION s), CLIENTS ($CLIENTS), POOL_SIZE ($POOL_SIZE)."
}
lib_no_arguments "$@"
cd "$REPO_ROOT"
need_pg_clients
for tool in pgbouncer taskset; do
    command -v "$tool" >/dev/null 2>&1 || lib_die "$tool not found (apt-get install pgbouncer util-linux)"
done
export PGPASSWORD=secret PGSSLMODE=disable
CORES="$(nproc)"
((CORES >= 2)) || lib_die "needs at least 2 cores"
PROXY_CPU=$((CORES - 1))
LOAD_CPUS="0-$((CORES - 2))"
ALL_CPUS="0-$((CORES - 1))"

DIR="$PGSPLIT_CLUSTER_DIR/bench-threads"
rm -rf "$DIR"
mkdir -p "$DIR"
build_pgsplit >/dev/null
"$REPO_ROOT/dev/cluster.sh" up >/dev/null
bench_data_at_scale 10 >/dev/null

# The primary's postmaster and every process it has forked (new backends inherit its CPUs).
primary_pids() {
    local postmaster
    postmaster="$(head -n1 "$PGSPLIT_CLUSTER_DIR/primary/postmaster.pid")"
    echo "$postmaster" $(pgrep -P "$postmaster" || true)
}
pin_primary() { # CPUS
    local pid
    for pid in $(primary_pids); do taskset -a -p -c "$1" "$pid" >/dev/null 2>&1 || true; done
}

declare -A PID=() PORT=([w1]=6501 [w2]=6502 [pgbouncer]=6503)
stop_all() {
    for t in "${!PID[@]}"; do kill -TERM "${PID[$t]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pin_primary "$ALL_CPUS"
}
trap stop_all EXIT

for t in w1 w2; do
    bench_pgsplit_config "$DIR/$t.toml" "${PORT[$t]}" false \
        -e "/^\[pool\]/,/^\[/ s/^max_size = .*/max_size = $POOL_SIZE/" \
        -e "/^\[proxy\]/,/^\[/ s/^worker_threads = .*/worker_threads = ${t#w}/"
    "$PGSPLIT_BIN" --config "$DIR/$t.toml" >"$DIR/$t.log" 2>&1 &
    PID[$t]=$!
done
bench_pgbouncer_config "$DIR" "${PORT[pgbouncer]}" "$POOL_SIZE" 600
pgbouncer "${PGBOUNCER_AS[@]}" "$DIR/pgbouncer.ini" >"$DIR/pgbouncer.log" 2>&1 &
PID[pgbouncer]=$!
for t in "${!PID[@]}"; do
    wait_listening "${PORT[$t]}" "${PID[$t]}" "$t (log: $DIR/$t.log)"
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
hz="$(getconf CLK_TCK)"
targets=(w1 w2 pgbouncer)
declare -A TPS=() CPU=()
for layout in shared pinned; do
    load=()
    if [[ "$layout" == pinned ]]; then
        for t in "${targets[@]}"; do taskset -a -p -c "$PROXY_CPU" "${PID[$t]}" >/dev/null; done
        pin_primary "$LOAD_CPUS"
        load=(taskset -c "$LOAD_CPUS")
    fi
    for round in $(seq 1 "$ROUNDS"); do
        for i in 0 1 2; do
            t="${targets[$(((i + round - 1) % 3))]}"
            "$PGBENCH" -n -S -M simple -c "$POOL_SIZE" -t 20 "postgres://app:secret@127.0.0.1:${PORT[$t]}/bench" >/dev/null 2>&1 # warm
            before="$(cpu_ticks "${PID[$t]}")"
            out="$("${load[@]}" "$PGBENCH" -n -S -M simple -c "$CLIENTS" -j 2 -T "$DURATION" \
                "postgres://app:secret@127.0.0.1:${PORT[$t]}/bench" 2>&1)" || lib_die "pgbench against $t failed: $out"
            after="$(cpu_ticks "${PID[$t]}")"
            tps="$(awk '/^tps/ {print $3}' <<<"$out")"
            txs="$(awk '/number of transactions actually processed/ {print $NF}' <<<"$out")"
            cpu="$(awk -v a="$after" -v b="$before" -v n="$txs" -v hz="$hz" 'BEGIN {printf "%.1f", (a - b) / hz * 1e6 / n}')"
            echo "== $layout round $round/$ROUNDS $t: $tps tps, $cpu µs CPU/tx"
            TPS[$layout-$t]+="$tps "
            CPU[$layout-$t]+="$cpu "
        done
    done
done

{
    echo "bench/threads.sh: pgbench -n -S -M simple -c $CLIENTS -j 2 -T $DURATION, scale 10, pools of $POOL_SIZE, $ROUNDS rounds; $(date -u '+%Y-%m-%d %H:%M UTC'); git $(git rev-parse --short HEAD); $CORES cores; pinned: proxy on CPU $PROXY_CPU, pgbench and the primary on $LOAD_CPUS"
    echo "layout  target                         median tps  median µs CPU/tx  vs pgbouncer (tps)"
    for layout in shared pinned; do
        base="$(median <<<"${TPS[$layout-pgbouncer]}")"
        for t in "${targets[@]}"; do
            name="$t"
            [[ "$t" == w1 ]] && name="pgsplit worker_threads = 1"
            [[ "$t" == w2 ]] && name="pgsplit worker_threads = 2"
            m="$(median <<<"${TPS[$layout-$t]}")"
            printf '%-7s %-30s %11.0f %17s  %.3fx\n' "$layout" "$name" "$m" \
                "$(median <<<"${CPU[$layout-$t]}")" "$(awk -v a="$m" -v b="$base" 'BEGIN {print a / b}')"
        done
    done
} | tee "$OUT"
echo "(written to bench/results/last-threads.txt; logs in $DIR)"
