#!/usr/bin/env bash
# bench/tls.sh — pgbench -S over TLS through pgsplit and through PgBouncer, in one run.
#
#   bench/tls.sh
#
# Makes a self-signed certificate for 127.0.0.1, starts pgsplit (the repository's
# config.toml with a [tls] section, client_mode = "allow"; once with routing on, once with
# routing off) and PgBouncer (transaction pooling to the primary, client_tls_sslmode =
# allow, the same certificate), all with pools of POOL_SIZE, then runs `pgbench -n -S -M
# simple` with sslmode=require against each and straight against the primary and a replica
# (whose TLS the dev cluster has), ROUNDS rounds with the order rotating. For each run it records TPS and the
# proxy process's CPU time per transaction ((utime + stime) / transactions). Prints per-run
# figures, medians and ratios against PgBouncer, and writes them to bench/results/last-tls.txt.
# Run as root on a Debian machine (PgBouncer is started as the postgres OS user).
set -euo pipefail
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-16}"
THREADS="${THREADS:-2}"
SCALE="${SCALE:-10}"
POOL_SIZE="${POOL_SIZE:-20}"
OUT="$REPO_ROOT/bench/results/last-tls.txt"

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    echo
    echo "Environment: ROUNDS ($ROUNDS), DURATION ($DURATION s), CLIENTS ($CLIENTS), THREADS ($THREADS), SCALE ($SCALE), POOL_SIZE ($POOL_SIZE)."
}
lib_no_arguments "$@"
cd "$REPO_ROOT"
need_pg_clients
command -v pgbouncer >/dev/null 2>&1 || lib_die "pgbouncer not found (apt-get install pgbouncer)"
command -v openssl >/dev/null 2>&1 || lib_die "openssl not found"
export PGPASSWORD=secret

DIR="$PGSPLIT_CLUSTER_DIR/bench-tls"
rm -rf "$DIR"
mkdir -p "$DIR"
build_pgsplit >/dev/null
"$REPO_ROOT/dev/cluster.sh" up >/dev/null
bench_data_at_scale "$SCALE" >/dev/null

# ---- certificate ----------------------------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$DIR/server.key" -out "$DIR/server.crt" 2>/dev/null

# ---- the proxies ----------------------------------------------------------------------------
# direct, replica1, replicas: pgbench straight to the primary, to a replica, and to both
# replicas at once (half the clients each), with no proxy and so no proxy CPU: with routing
# on, pgsplit's reads are served by both replicas.
declare -A PID=() PORT=([pgsplit]=6451 [pgsplit-norouting]=6452 [pgbouncer]=6453
    [direct]=$PRIMARY_PORT [replica1]=$REPLICA1_PORT [replica2]=$REPLICA2_PORT)
stop_all() {
    for t in "${!PID[@]}"; do kill -TERM "${PID[$t]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all EXIT

for t in pgsplit pgsplit-norouting; do
    routing=true
    [[ "$t" == pgsplit-norouting ]] && routing=false
    bench_pgsplit_config "$DIR/$t.toml" "${PORT[$t]}" "$routing" \
        -e "/^\[pool\]/,/^\[/ s/^max_size = .*/max_size = $POOL_SIZE/" \
        -e "/^\[tls\]/,/^\[/ s|^client_mode = .*|client_mode = \"allow\"\ncert_file = \"$DIR/server.crt\"\nkey_file = \"$DIR/server.key\"|"
    "$PGSPLIT_BIN" --config "$DIR/$t.toml" >"$DIR/$t.log" 2>&1 &
    PID[$t]=$!
done

chmod 0600 "$DIR/server.key"
bench_pgbouncer_config "$DIR" "${PORT[pgbouncer]}" "$POOL_SIZE" 600 \
    "client_tls_sslmode = allow" "client_tls_cert_file = $DIR/server.crt" \
    "client_tls_key_file = $DIR/server.key"
pgbouncer "${PGBOUNCER_AS[@]}" "$DIR/pgbouncer.ini" >"$DIR/pgbouncer.log" 2>&1 &
PID[pgbouncer]=$!

for t in "${!PID[@]}"; do
    wait_listening "${PORT[$t]}" "${PID[$t]}" "$t (log: $DIR/$t.log)"
done
sleep 3 # replicas join the read rotation after their first checks

# ---- runs -----------------------------------------------------------------------------------
cpu_ticks() { # PID, or nothing for a target without a proxy
    if [[ -n "$1" ]]; then awk '{print $14 + $15}' "/proc/$1/stat"; else echo 0; fi
}
# pgbench -S against target $1 for DURATION; prints "TPS TRANSACTIONS". Target replicas runs
# two at once, half the clients each against replica1 and replica2, and adds them up.
run_pgbench() {
    local ports=("${PORT[$1]:-}") clients="$CLIENTS" threads="$THREADS" p i=0 pids=() ok=1
    if [[ "$1" == replicas ]]; then
        ports=("${PORT[replica1]}" "${PORT[replica2]}")
        clients=$((CLIENTS / 2))
        threads=1
    fi
    for p in "${ports[@]}"; do
        PGSSLMODE=require "$PGBENCH" -n -S -M simple -c "$clients" -j "$threads" -T "$DURATION" \
            "postgres://app:secret@127.0.0.1:$p/bench" >"$DIR/pgbench-$i.out" 2>&1 &
        pids+=($!)
        i=$((i + 1))
    done
    for p in "${pids[@]}"; do wait "$p" || ok=0; done
    ((ok)) || lib_die "pgbench against $1 failed: $(cat "$DIR"/pgbench-*.out)"
    awk '/^tps/ {tps += $3} /number of transactions actually processed/ {n += $NF}
        END {print tps, n}' "$DIR"/pgbench-*.out
    rm -f "$DIR"/pgbench-*.out
}
targets=(pgsplit pgsplit-norouting pgbouncer direct replica1 replicas)
declare -A TPS=() CPU=()
hz="$(getconf CLK_TCK)"
for round in $(seq 1 "$ROUNDS"); do
    n=${#targets[@]}
    for i in $(seq 0 $((n - 1))); do
        t="${targets[$(((i + round - 1) % n))]}"
        before="$(cpu_ticks "${PID[$t]:-}")"
        read -r tps txs <<<"$(run_pgbench "$t")"
        after="$(cpu_ticks "${PID[$t]:-}")"
        cpu=-
        [[ -n "${PID[$t]:-}" ]] &&
            cpu="$(awk -v a="$after" -v b="$before" -v n="$txs" -v hz="$hz" 'BEGIN {printf "%.1f", (a - b) / hz * 1e6 / n}')"
        echo "== round $round/$ROUNDS $t: $tps tps, $cpu µs CPU/tx"
        TPS[$t]+="$tps "
        CPU[$t]+="$cpu "
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
{
    echo "bench/tls.sh: pgbench -n -S -M simple -c $CLIENTS -j $THREADS -T $DURATION, sslmode=require, scale $SCALE, $ROUNDS rounds; $(date -u '+%Y-%m-%d %H:%M UTC'); git $(git rev-parse --short HEAD); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "target              median tps  median µs CPU/tx  vs pgbouncer (tps, CPU/tx)   runs (tps)"
    base_tps="$(median <<<"${TPS[pgbouncer]}")"
    base_cpu="$(median <<<"${CPU[pgbouncer]}")"
    for t in "${targets[@]}"; do
        m_tps="$(median <<<"${TPS[$t]}")"
        m_cpu="$(median <<<"${CPU[$t]}")"
        ratio="$(awk -v a="$m_tps" -v b="$base_tps" -v c="$m_cpu" -v d="$base_cpu" \
            'BEGIN {printf "%.3fx, ", a / b; if (c == "-") printf "-"; else printf "%.3fx", c / d}')"
        printf '%-19s %11s %17s  %-28s %s\n' "$t" "$m_tps" "$m_cpu" "$ratio" "${TPS[$t]}"
    done
} | tee "$OUT"
echo "(written to bench/results/last-tls.txt; logs in $DIR)"
