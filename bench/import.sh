#!/usr/bin/env bash
# bench/import.sh — the bulk-import scenario: reads through a proxy while the primary imports.
#
#   bench/import.sh pgsplit 6432      # a pgsplit already listening on 127.0.0.1:6432
#   bench/import.sh pgpool 9999       # a Pgpool-II (streaming replication, load balancing)
#
# 1. Recreates database `import` on the primary (owner app).
# 2. Starts examples/import_probe (see its module comment) against the proxy on PORT, database
#    app: a writer, pinned clients that read their own writes, plain readers, and a sampler
#    of each replica's lag and of the proxy's view of it (pgsplit: /metrics; Pgpool-II:
#    SHOW POOL_NODES). pgsplit only: a token writer that hands its causal token to token
#    readers on other connections, which present it in a leading comment.
# 3. After IMPORT_STEADY seconds of steady state, runs `pgbench -i -s IMPORT_SCALE import`
#    directly on the primary.
# 4. Waits until both replicas have replayed everything, IMPORT_TAIL more seconds, then stops
#    the probe.
# 5. Renders bench/results/charts/import-KIND.png (gnuplot) and writes OUT_DIR/import-KIND.md, the
#    summary bench/run.sh pastes into bench/results/RESULTS.md.
#
# With IMPORT_START_PROXY=1 the script starts its own proxy on PORT and stops it at the end:
# a pgsplit from a copy of PGSPLIT_CONFIG with the cluster's ports, or a Pgpool-II
# configured for the cluster (see start_pgpool).
set -euo pipefail
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

usage() {
    cat <<EOF
Usage: bench/import.sh pgsplit|pgpool PORT

Environment:
  IMPORT_SCALE=50          pgbench -i scale of the import (database import, on the primary)
  IMPORT_STEADY=5          seconds of steady state before the import
  IMPORT_TAIL=5            seconds after both replicas have caught up
  IMPORT_MAX_SECONDS=1800  the probe stops after this long in any case
  IMPORT_THRESHOLD         the proxy's lag threshold in bytes; with IMPORT_START_PROXY=1
                           it is also configured into the proxy (default: pgsplit's
                           pgsplit_max_replica_lag_bytes from /metrics; Pgpool-II's
                           delay_threshold from PGPOOL SHOW; else 16777216)
  IMPORT_CHECK_MS          the proxy's check interval in ms (default: pgsplit 250, or
                           SHOW check_interval on the admin console; Pgpool-II:
                           sr_check_period from PGPOOL SHOW)
  IMPORT_METRICS_URL       pgsplit's metrics (default http://127.0.0.1:9930/metrics)
  IMPORT_PROBE_ARGS        extra probe options, e.g. "--readers 8 --read-pause-ms 2"
  IMPORT_TOKEN_READERS=2   pgsplit: connections reading with the token writer's causal
                           token (0: no token row; Pgpool-II has no tokens: none)
  IMPORT_START_PROXY=1     start the proxy on PORT, stop it at the end. pgsplit: config
                           generated from PGSPLIT_CONFIG with the cluster's ports, metrics
                           on IMPORT_METRICS_LISTEN (default 127.0.0.1:PORT+1). pgpool:
                           streaming replication, statement-level load balancing,
                           delay_threshold IMPORT_THRESHOLD, sr_check_period
                           PGPOOL_SR_CHECK_PERIOD (1), pcp on PORT+2
  Without it the proxy must already listen on PORT.
  OUT_DIR                  where the TSV, the probe's output and import-KIND.md go
                           (default \$PGSPLIT_CLUSTER_DIR/log/import)
  PGSPLIT_SKIP_BUILD=1     do not build (pgsplit, the probe); PROBE_BIN names the probe binary
  PGSPLIT_CLUSTER_DIR, PGSPLIT_PRIMARY_PORT, PGSPLIT_REPLICA{1,2}_PORT   the dev cluster

The proxy must accept user app / secret on database app and route to the dev cluster's nodes.
EOF
}

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
    usage
    exit 0
fi
(($# == 2)) || {
    usage >&2
    exit 2
}
KIND="$1"
PORT="$2"
[[ "$KIND" == pgsplit || "$KIND" == pgpool ]] || lib_die "kind must be pgsplit or pgpool, got '$KIND'"
[[ "$PORT" =~ ^[0-9]+$ ]] || lib_die "PORT must be a number, got '$PORT'"

IMPORT_SCALE="${IMPORT_SCALE:-50}"
IMPORT_STEADY="${IMPORT_STEADY:-5}"
IMPORT_TAIL="${IMPORT_TAIL:-5}"
IMPORT_MAX_SECONDS="${IMPORT_MAX_SECONDS:-1800}"
IMPORT_TOKEN_READERS="${IMPORT_TOKEN_READERS:-2}"
[[ "$IMPORT_TOKEN_READERS" =~ ^[0-9]+$ ]] || lib_die "IMPORT_TOKEN_READERS must be a whole number, got '$IMPORT_TOKEN_READERS'"
OUT_DIR="${OUT_DIR:-$LOG_DIR/import}"
CHART_DIR="$REPO_ROOT/bench/results/charts"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
PROBE_BIN="${PROBE_BIN:-$TARGET_DIR/release/examples/import_probe}"
TSV="$OUT_DIR/import-$KIND.tsv"
PROBE_OUT="$OUT_DIR/import-$KIND.probe.txt"
PROBE_ERR="$OUT_DIR/import-$KIND.probe.log"
SUMMARY_MD="$OUT_DIR/import-$KIND.md"
CHART="$CHART_DIR/import-$KIND.png"
PROXY_DSN="host=127.0.0.1 port=$PORT user=app password=secret dbname=app"
PRIMARY_DSN="host=127.0.0.1 port=$PRIMARY_PORT user=postgres password=postgres dbname=app"

need_pg_clients
command -v gnuplot >/dev/null || lib_die "gnuplot not found; install with: apt-get install gnuplot-nox"
mkdir -p "$OUT_DIR" "$CHART_DIR"
cd "$REPO_ROOT"

# ---- build -------------------------------------------------------------------------------------
if [[ "${PGSPLIT_SKIP_BUILD:-0}" != 1 ]]; then
    echo "== cargo build --release --example import_probe"
    cargo build --release --example import_probe
fi
[[ -x "$PROBE_BIN" ]] || lib_die "probe binary $PROBE_BIN not found (build it, or set PROBE_BIN)"

# ---- the proxy ---------------------------------------------------------------------------------
PROBE_PID=""
cleanup() {
    if [[ -n "$PROBE_PID" ]] && kill -0 "$PROBE_PID" 2>/dev/null; then
        kill -TERM "$PROBE_PID" 2>/dev/null || true
        wait "$PROBE_PID" 2>/dev/null || true
    fi
    stop_pgsplit
    stop_pgpool
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Start Pgpool-II on PORT for the dev cluster: streaming replication, load balancing per
# statement, delay_threshold = IMPORT_THRESHOLD (16 MB) checked every PGPOOL_SR_CHECK_PERIOD
# (1 s); clear-text pool_passwd, no pool_hba. Files and log in OUT_DIR/pgpool.
PGPOOL_PID=""
start_pgpool() {
    local dir="$OUT_DIR/pgpool" i port
    command -v pgpool >/dev/null || lib_die "pgpool not found; install with: apt-get install pgpool2"
    rm -rf "$dir"
    mkdir -p "$dir"
    {
        echo "backend_clustering_mode = 'streaming_replication'"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PORT"
        echo "unix_socket_directories = '$dir'"
        echo "pcp_listen_addresses = ''"
        echo "pcp_port = $((PORT + 2))"
        echo "pcp_socket_dir = '$dir'"
        echo "pid_file_name = '$dir/pgpool.pid'"
        echo "logdir = '$dir'"
        echo "enable_pool_hba = off"
        echo "pool_passwd = '$dir/pool_passwd'"
        echo "num_init_children = 32"
        echo "max_pool = 2"
        echo "load_balance_mode = on"
        echo "statement_level_load_balance = on"
        echo "sr_check_period = ${PGPOOL_SR_CHECK_PERIOD:-1}"
        echo "sr_check_user = 'postgres'"
        echo "sr_check_password = 'postgres'"
        echo "sr_check_database = 'postgres'"
        echo "delay_threshold = ${IMPORT_THRESHOLD:-16777216}"
        echo "health_check_period = 0"
        echo "failover_on_backend_error = off"
        echo "use_watchdog = off"
        i=0
        for port in "$PRIMARY_PORT" "$REPLICA1_PORT" "$REPLICA2_PORT"; do
            echo "backend_hostname$i = '127.0.0.1'"
            echo "backend_port$i = $port"
            echo "backend_weight$i = $((i == 0 ? 0 : 1))"
            echo "backend_flag$i = 'DISALLOW_TO_FAILOVER'"
            [[ $i == 0 ]] || echo "backend_application_name$i = 'replica$i'"
            i=$((i + 1))
        done
    } >"$dir/pgpool.conf"
    printf 'app:TEXTsecret\npostgres:TEXTpostgres\n' >"$dir/pool_passwd"
    : >"$dir/pcp.conf"
    : >"$dir/pool_hba.conf"
    chmod 600 "$dir/pool_passwd"
    echo "== starting pgpool on 127.0.0.1:$PORT (config and log in $dir)"
    pgpool -n -f "$dir/pgpool.conf" -F "$dir/pcp.conf" -a "$dir/pool_hba.conf" >"$dir/pgpool.log" 2>&1 &
    PGPOOL_PID=$!
    local deadline=$((SECONDS + 30))
    until port_open "$PORT"; do
        kill -0 "$PGPOOL_PID" 2>/dev/null || {
            tail -n 20 "$dir/pgpool.log" >&2
            PGPOOL_PID=""
            lib_die "pgpool exited; see $dir/pgpool.log"
        }
        ((SECONDS < deadline)) || lib_die "pgpool did not listen on $PORT within 30 s; see $dir/pgpool.log"
        sleep 0.2
    done
}

stop_pgpool() {
    [[ -n "$PGPOOL_PID" ]] || return 0
    kill -INT "$PGPOOL_PID" 2>/dev/null || true # fast shutdown
    wait "$PGPOOL_PID" 2>/dev/null || true
    PGPOOL_PID=""
}

METRICS_URL="${IMPORT_METRICS_URL:-http://127.0.0.1:9930/metrics}"
if [[ "${IMPORT_START_PROXY:-0}" == 1 && "$KIND" == pgpool ]]; then
    start_pgpool
elif [[ "${IMPORT_START_PROXY:-0}" == 1 ]]; then
    [[ "${PGSPLIT_SKIP_BUILD:-0}" == 1 ]] || cargo build --release
    metrics_listen="${IMPORT_METRICS_LISTEN:-127.0.0.1:$((PORT + 1))}"
    METRICS_URL="${IMPORT_METRICS_URL:-http://$metrics_listen/metrics}"
    generated="$OUT_DIR/pgsplit-import.toml"
    # The shipped config with this cluster's ports, listen and metrics addresses (and
    # max_replica_lag = IMPORT_THRESHOLD if set).
    awk -v listen="127.0.0.1:$PORT" -v metrics="$metrics_listen" -v lag="${IMPORT_THRESHOLD:-}" \
        -v p0="$PRIMARY_PORT" -v p1="$REPLICA1_PORT" -v p2="$REPLICA2_PORT" '
        /^\[/ { section = $0 }
        section == "[proxy]" && /^listen = / { $0 = "listen = \"" listen "\"" }
        section == "[metrics]" && /^listen = / { $0 = "listen = \"" metrics "\"" }
        section == "[lag]" && /^max_replica_lag = / && lag != "" { $0 = "max_replica_lag = " lag }
        /^port = 15432$/ { $0 = "port = " p0 }
        /^port = 15433$/ { $0 = "port = " p1 }
        /^port = 15434$/ { $0 = "port = " p2 }
        { print }' "$PGSPLIT_CONFIG" >"$generated"
    # shellcheck disable=SC2034  # read by start_pgsplit (dev/lib.sh)
    PGSPLIT_CONFIG="$generated" PGSPLIT_PORT="$PORT" PGSPLIT_LOG_FILE="$OUT_DIR/pgsplit-import.log"
    start_pgsplit
    trap cleanup EXIT
fi
port_open "$PORT" || lib_die "nothing listens on 127.0.0.1:$PORT (start the $KIND under test first, or IMPORT_START_PROXY=1)"

# "250ms", "1s", "2min" (a bare number in DEFAULT_UNIT: ms or s) -> milliseconds; else empty.
to_ms() {
    awk -v v="$1" -v unit="$2" 'BEGIN {
        if (!match(v, /^[0-9.]+/)) exit
        n = substr(v, 1, RLENGTH); u = tolower(substr(v, RLENGTH + 1)); if (u == "") u = unit
        f = (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "min" || u == "m") ? 60000 : 0
        if (f) printf "%.0f", n * f }'
}
# "4MB", "16kB", "16777216" -> bytes (1024-based); else empty.
to_bytes() {
    awk -v v="$1" 'BEGIN {
        if (!match(v, /^[0-9.]+/)) exit
        n = substr(v, 1, RLENGTH); u = tolower(substr(v, RLENGTH + 1))
        f = (u == "" || u == "b") ? 1 : (u == "kb") ? 1024 : (u == "mb") ? 1048576 : (u == "gb") ? 1073741824 : 0
        if (f) printf "%.0f", n * f }'
}

# The proxy's threshold and check interval, as the probe must judge late reads by them.
PROBE_VIEW=()
threshold="${IMPORT_THRESHOLD:-}"
check_ms="${IMPORT_CHECK_MS:-}"
if [[ "$KIND" == pgsplit ]]; then
    PROBE_VIEW=(--metrics "$METRICS_URL" --token-readers "$IMPORT_TOKEN_READERS")
    metrics="$(curl -fsS --max-time 5 "$METRICS_URL" 2>/dev/null || true)"
    [[ -n "$metrics" ]] || lib_die "cannot read pgsplit metrics at $METRICS_URL (set IMPORT_METRICS_URL)"
    if [[ -z "$threshold" ]]; then
        threshold="$(awk '$1 == "pgsplit_max_replica_lag_bytes" { printf "%.0f", $2 }' <<<"$metrics")"
    fi
    if [[ -z "$check_ms" ]]; then
        interval="$("$PSQL" -X -w -At "postgres://admin:admin@127.0.0.1:$PORT/pgsplit" \
            -c 'SHOW check_interval' 2>/dev/null || true)"
        check_ms="$(to_ms "${interval// /}" ms)"
    fi
else
    PROBE_VIEW=(--pgpool-show-nodes)
    pgpool_show() {
        "$PSQL" -X -w -At "postgres://app:secret@127.0.0.1:$PORT/app" -c "PGPOOL SHOW $1" 2>/dev/null || true
    }
    # PGPOOL SHOW answers with units: "4MB", "1s".
    [[ -n "$threshold" ]] || threshold="$(to_bytes "$(pgpool_show delay_threshold)")"
    [[ -n "$check_ms" ]] || check_ms="$(to_ms "$(pgpool_show sr_check_period)" s)"
fi
[[ "$threshold" =~ ^[0-9]+$ && "$threshold" -gt 0 ]] || threshold=16777216
[[ "$check_ms" =~ ^[0-9]+$ && "$check_ms" -gt 0 ]] || check_ms=250
echo "== $KIND on port $PORT: threshold $threshold bytes, check interval $check_ms ms"

# ---- database import ---------------------------------------------------------------------------
echo "== recreating database import on the primary (port $PRIMARY_PORT)"
node_psql "$PRIMARY_PORT" -d postgres -c 'DROP DATABASE IF EXISTS import WITH (FORCE)'
node_psql "$PRIMARY_PORT" -d postgres -c 'CREATE DATABASE import OWNER app'

# Wait until both replicas have replayed up to the primary's current position.
wait_caught_up() {
    replicas_replayed_within 600 || lib_die "the replicas did not catch up within 600 s"
}
wait_caught_up

# ---- the run -----------------------------------------------------------------------------------
read -r -a extra_args <<<"${IMPORT_PROBE_ARGS:-}"
echo "== starting the probe (TSV: $TSV, log: $PROBE_ERR)"
"$PROBE_BIN" --proxy "$PROXY_DSN" --primary "$PRIMARY_DSN" \
    --nodes "primary=$PRIMARY_PORT,replica1=$REPLICA1_PORT,replica2=$REPLICA2_PORT" \
    --seconds "$IMPORT_MAX_SECONDS" --threshold-bytes "$threshold" --check-interval-ms "$check_ms" \
    --out "$TSV" "${PROBE_VIEW[@]}" "${extra_args[@]}" >"$PROBE_OUT" 2>"$PROBE_ERR" &
PROBE_PID=$!

# The probe writes its header once setup is done; then steady state.
deadline=$((SECONDS + 90))
until [[ -s "$TSV" ]]; do
    kill -0 "$PROBE_PID" 2>/dev/null || {
        cat "$PROBE_ERR" >&2
        PROBE_PID=""
        lib_die "the probe exited during setup"
    }
    ((SECONDS < deadline)) || lib_die "the probe did not start within 90 s; see $PROBE_ERR"
    sleep 0.2
done
probe_epoch="$(date +%s.%N)"
sleep "$IMPORT_STEADY"

echo "== pgbench -i -s $IMPORT_SCALE import (directly on the primary)"
import_start="$(date +%s.%N)"
PGPASSWORD=secret "$PGBENCH" -i -q -s "$IMPORT_SCALE" -h 127.0.0.1 -p "$PRIMARY_PORT" -U app import \
    >"$OUT_DIR/import-$KIND.pgbench.log" 2>&1 || {
    tail -n 5 "$OUT_DIR/import-$KIND.pgbench.log" >&2
    lib_die "pgbench -i failed; see $OUT_DIR/import-$KIND.pgbench.log"
}
import_end="$(date +%s.%N)"
echo "== import done in $(awk -v a="$import_start" -v b="$import_end" 'BEGIN { printf "%.1f", b - a }') s; waiting for the replicas"
wait_caught_up
caught_up="$(date +%s.%N)"
sleep "$IMPORT_TAIL"

kill -TERM "$PROBE_PID" 2>/dev/null || true
wait "$PROBE_PID" || lib_die "the probe failed; see $PROBE_ERR"
PROBE_PID=""
grep -E '^(TRANSITION|SUMMARY)' "$PROBE_OUT" | sed 's/^/   /'
summary="$(grep '^SUMMARY ' "$PROBE_OUT" || true)"
[[ -n "$summary" ]] || lib_die "no SUMMARY line from the probe; see $PROBE_OUT and $PROBE_ERR"

# Value of KEY in the SUMMARY line.
sval() { tr ' ' '\n' <<<"$summary" | sed -n "s/^$1=//p"; }
rel() { awk -v a="$probe_epoch" -v b="$1" 'BEGIN { printf "%.1f", b - a }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1048576 }'; }

# ---- chart -------------------------------------------------------------------------------------
t_import="$(rel "$import_start")"
t_done="$(rel "$import_end")"
t_caught="$(rel "$caught_up")"
rows="$(($(wc -l <"$TSV") - 1))"
gnuplot <<EOF
set terminal pngcairo size 1200,800 font "sans,10"
set output "$CHART"
set datafile separator "\t"
set datafile missing ""
MB = 1048576.0
set multiplot layout 2,1 title "$KIND: pgbench -i -s $IMPORT_SCALE on the primary, reads through the proxy (threshold $(mb "$threshold"))"
set grid
# The same plot area in both panels, keys to the right of it.
set lmargin at screen 0.07
set rmargin at screen 0.76
set key outside right top
set xlabel "seconds"
set xrange [0:$rows]
set arrow from $t_import, graph 0 to $t_import, graph 1 nohead dt 2 lc rgb "#555555"
set arrow from $t_done, graph 0 to $t_done, graph 1 nohead dt 2 lc rgb "#555555"
set arrow from $t_caught, graph 0 to $t_caught, graph 1 nohead dt 3 lc rgb "#555555"
set label "import" at $t_import, graph 0.97 offset 0.5,0 font ",9"
set label "import done" at $t_done, graph 0.97 offset 0.5,0 font ",9"
set label "caught up" at $t_caught, graph 0.90 offset 0.5,0 font ",9"

set ylabel "replica lag (MB)"
set y2range [0:1]
unset y2tics
set style fill transparent solid 0.18 noborder
set boxwidth 1.0 absolute
set offsets 0, 0, graph 0.12, 0
plot \
  "$TSV" using (\$1 + 0.5):(column("replica1_in") == 0 ? 1 : NaN) axes x1y2 with boxes lc rgb "#1f77b4" title "replica1 out of rotation", \
  "" using (\$1 + 0.5):(column("replica2_in") == 0 ? 1 : NaN) axes x1y2 with boxes lc rgb "#d62728" title "replica2 out of rotation", \
  "" using (\$1 + 0.5):(column("replica1_lag") / MB) with lines lw 2 lc rgb "#1f77b4" title "replica1 lag", \
  "" using (\$1 + 0.5):(column("replica2_lag") / MB) with lines lw 2 lc rgb "#d62728" title "replica2 lag", \
  "" using (\$1 + 0.5):(column("replica1_ejected") > 0 ? column("replica1_lag") / MB : NaN) with points pt 11 ps 2 lc rgb "#1f77b4" title "ejected", \
  "" using (\$1 + 0.5):(column("replica1_readmitted") > 0 ? column("replica1_lag") / MB : NaN) with points pt 9 ps 2 lc rgb "#1f77b4" title "readmitted", \
  "" using (\$1 + 0.5):(column("replica2_ejected") > 0 ? column("replica2_lag") / MB : NaN) with points pt 11 ps 2 lc rgb "#d62728" notitle, \
  "" using (\$1 + 0.5):(column("replica2_readmitted") > 0 ? column("replica2_lag") / MB : NaN) with points pt 9 ps 2 lc rgb "#d62728" notitle, \
  $threshold / MB with lines dt 2 lw 2 lc rgb "black" title "threshold"

unset y2range
set offsets 0, 0, graph 0.05, 0
set ylabel "reads per second"
plot \
  "$TSV" using (\$1 + 0.5):"primary_reads" with lines lw 2 lc rgb "#2ca02c" title "primary", \
  "" using (\$1 + 0.5):"replica1_reads" with lines lw 2 lc rgb "#1f77b4" title "replica1", \
  "" using (\$1 + 0.5):"replica2_reads" with lines lw 2 lc rgb "#d62728" title "replica2", \
  "" using (\$1 + 0.5):(column("replica1_late") + column("replica2_late") > 0 ? column("replica1_late") + column("replica2_late") : NaN) with points pt 7 lc rgb "black" title "replica reads past threshold after detection", \
  "" using (\$1 + 0.5):(column("replica1_while_out") + column("replica2_while_out") > 0 ? column("replica1_while_out") + column("replica2_while_out") : NaN) with points pt 6 ps 1.5 lc rgb "black" title "replica reads while out of rotation", \
  "" using (\$1 + 0.5):(column("pinned_stale") > 0 ? column("pinned_stale") : NaN) with points pt 5 lc rgb "orange" title "stale reads inside pin", \
  "" using (\$1 + 0.5):(column("errors") > 0 ? column("errors") : NaN) with impulses lw 2 lc rgb "#9467bd" title "errors"
unset multiplot
EOF
echo "== chart: ${CHART#"$REPO_ROOT"/}"

# ---- summary -----------------------------------------------------------------------------------
reads="$(sval reads)"
pinned_reads="$(sval pinned_reads)"
token_reads="$(sval token_reads)"
if [[ "$KIND" != pgsplit ]]; then
    token_row="n/a ($KIND has no causal tokens)"
elif [[ "$IMPORT_TOKEN_READERS" == 0 ]]; then
    token_row="not run (IMPORT_TOKEN_READERS=0)"
else
    token_row="$(sval token_stale) of $token_reads on $IMPORT_TOKEN_READERS connections; $(awk -v r="$(sval token_off_primary)" -v n="$token_reads" \
        'BEGIN { printf "%d (%.1f%%) served by replicas", r, (n > 0 ? 100 * r / n : 0) }')"
fi
{
    echo "#### Import scenario: $KIND"
    echo
    echo "\`pgbench -i -s $IMPORT_SCALE\` directly on the primary ($(awk -v a="$import_start" -v b="$import_end" 'BEGIN { printf "%.1f", b - a }') s; replicas caught up $(awk -v a="$import_end" -v b="$caught_up" 'BEGIN { printf "%.1f", b - a }') s later) while the probe read through $KIND for $(sval seconds) s; lag threshold $(mb "$threshold"), check interval $check_ms ms. $(date -u '+%Y-%m-%d %H:%M UTC'), git $(git rev-parse --short HEAD 2>/dev/null || echo -)."
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| stale reads inside the pin (a client reading its own write) | $(sval stale_inside_pin) of $pinned_reads ($(sval pinned_off_primary) served off the primary) |"
    echo "| stale reads outside the pin (marker older than last commit) | $(sval stale_outside_pin) of $reads (oldest $(sval max_stale_age_ms) ms) |"
    echo "| stale reads by a user's other connections that carry its token (the writer's latest token in a leading \`/* pgsplit:causal_token=... */\` comment; stale: older than the writer's commit when it took the token) | $token_row |"
    echo "| reads on a replica past the threshold after detection (> check interval + 1 s) | $(sval late_replica_reads) |"
    echo "| reads on a replica past the threshold, detection window included | $(sval replica_reads_over_threshold) |"
    echo "| reads routed to a replica while the proxy showed it out of rotation | $(sval replica_reads_while_out) |"
    echo "| errors (client) / sampling errors | $(sval errors) / $(sval sample_errors) |"
    echo "| max lag replica1 / replica2 | $(mb "$(sval max_lag_replica1)") / $(mb "$(sval max_lag_replica2)") |"
    echo "| ejections replica1 / replica2 (seconds out of rotation) | $(sval ejections_replica1) ($(sval out_seconds_replica1) s) / $(sval ejections_replica2) ($(sval out_seconds_replica2) s) |"
    echo "| reads served by primary / replica1 / replica2 | $(sval reads_primary) / $(sval reads_replica1) / $(sval reads_replica2) |"
    echo
    echo "![import scenario, $KIND](charts/import-$KIND.png)"
} >"$SUMMARY_MD"
echo
cat "$SUMMARY_MD"
echo
echo "(summary: $SUMMARY_MD; per-second data: $TSV)"
