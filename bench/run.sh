#!/usr/bin/env bash
# bench/run.sh — pgsplit against other PostgreSQL proxies: one command, one report.
#
# Installs the other proxies from Debian if they are missing, brings up the dev cluster,
# builds pgsplit, starts every target on its own loopback port and runs a pgbench matrix
# (workloads x targets x rounds, the order of the targets rotated every round). Writes
# bench/results/RESULTS.md, bench/results/results.tsv and the charts in bench/results/charts/ (bench/report.py).
#
# Targets (each as user app / secret, database bench):
#   direct     the primary itself, 127.0.0.1:15432
#   haproxy    HAProxy, mode tcp, in front of the primary: a plain byte relay, the cost
#              floor of one proxy hop
#   pgbouncer  PgBouncer, pool_mode = transaction, a pool of POOL_SIZE to the primary
#   pgpool     Pgpool-II, streaming-replication mode, reads load-balanced over the two
#              replicas, delay_threshold = pgsplit's max_replica_lag (16MB)
#   pgsplit    pgsplit (config.toml with pool.max_size = POOL_SIZE, routing on,
#              read_your_writes = "lsn" as shipped)
#   pgsplit-norouting  the same with routing off: pooling only, every statement to the
#              primary, like PgBouncer
#   pgsplit-time  the same with read_your_writes = "time" (pin_after_write): the mixed
#              workload only, where read-your-writes decides where reads go. For the
#              pgsplit targets the share of reads served by replicas is taken from /metrics
#              before and after each run (see replica_reads below).
#
# For every proxy, each run also records the CPU time its processes used (utime + stime
# of the process and its descendants, all threads, from /proc) divided by the transactions
# pgbench counted: the proxy's own CPU per transaction.
#
# Workloads (pgbench -n, -T DURATION):
#   select-simple    -S -M simple   -c CLIENTS
#   select-prepared  -S -M prepared -c CLIENTS
#   tpcb             TPC-B-like (pgbench's default script), -M simple, -c CLIENTS
#   mixed            90/10 read/write: -f bench/mixed-read.sql@9 -f bench/mixed-write.sql@1
#   c1               -S -M simple -c 1 -j 1: latency of one client, every transaction logged
#   c500             -S -M simple   -c BIG_CLIENTS (500) over pools of POOL_SIZE (20)
#   c500-prepared    -S -M prepared -c BIG_CLIENTS: many clients over few server connections
#
# Run `bench/run.sh --help` for the knobs. Configs, logs and per-run pgbench output go to
# $PGSPLIT_CLUSTER_DIR/bench/ (not committed).
set -euo pipefail
export LC_ALL=C # decimal points in pgbench output, printf and sort

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-15}"
CLIENTS="${CLIENTS:-16}"
THREADS="${THREADS:-2}"
SCALE="${SCALE:-10}"
POOL_SIZE="${POOL_SIZE:-20}"
BIG_CLIENTS="${BIG_CLIENTS:-500}"
# pgbench's -T clock runs while it connects: 500 SCRAM logins take seconds on 2 cores, so
# the 500-client workloads run at least BIG_MIN_DURATION seconds.
BIG_MIN_DURATION="${BIG_MIN_DURATION:-10}"
LOG_SAMPLING="${LOG_SAMPLING:-0.05}"
ALL_TARGETS="direct haproxy pgbouncer pgpool pgsplit pgsplit-norouting pgsplit-time"
ALL_WORKLOADS="select-simple select-prepared tpcb mixed c1 c500 c500-prepared"
TARGETS="${TARGETS:-$ALL_TARGETS}"
WORKLOADS="${WORKLOADS:-$ALL_WORKLOADS}"
HAPROXY_PORT="${HAPROXY_PORT:-6441}"
PGBOUNCER_PORT="${PGBOUNCER_PORT:-6442}"
PGPOOL_PORT="${PGPOOL_PORT:-6443}"
PGPOOL_PCP_PORT="${PGPOOL_PCP_PORT:-6453}"
BENCH_PGSPLIT_PORT="${BENCH_PGSPLIT_PORT:-6444}"
BENCH_METRICS_PORT="${BENCH_METRICS_PORT:-9944}"
BENCH_PGSPLIT_TIME_PORT="${BENCH_PGSPLIT_TIME_PORT:-6445}"
BENCH_TIME_METRICS_PORT="${BENCH_TIME_METRICS_PORT:-9945}"
BENCH_PGSPLIT_NOROUTING_PORT="${BENCH_PGSPLIT_NOROUTING_PORT:-6446}"
BENCH_NOROUTING_METRICS_PORT="${BENCH_NOROUTING_METRICS_PORT:-9946}"
BENCH_DIR="$PGSPLIT_CLUSTER_DIR/bench"
RESULTS_MD="$REPO_ROOT/bench/results/RESULTS.md"
RESULTS_TSV="$REPO_ROOT/bench/results/results.tsv"
CHART_DIR="$REPO_ROOT/bench/results/charts"

usage() {
    cat <<EOF
Usage: bench/run.sh [--help]

Runs a pgbench matrix against direct, haproxy, pgbouncer, pgpool, pgsplit and pgsplit
with routing off (pgsplit-norouting) (and, in the mixed workload, pgsplit with
read_your_writes = "time": pgsplit-time), with each proxy's CPU per transaction, and writes
bench/results/RESULTS.md, bench/results/results.tsv and bench/results/charts/*.png. Run as root on a Debian
machine to let it install pgbouncer, pgpool2, haproxy and gnuplot-nox when they are
missing. A short smoke run:  ROUNDS=1 DURATION=2 bench/run.sh

Environment (defaults in brackets):
  ROUNDS=$ROUNDS          rounds; the target order rotates every round (at least 3 for medians)
  DURATION=$DURATION       seconds per pgbench run
  CLIENTS=$CLIENTS        clients of the select-*, tpcb and mixed workloads
  THREADS=$THREADS         pgbench threads (-j), except c1 (-j 1)
  SCALE=$SCALE          pgbench scale of database bench (initialised once, reused)
  POOL_SIZE=$POOL_SIZE      server connections per pool: PgBouncer default_pool_size, pgsplit
                      pool.max_size, Pgpool-II num_init_children (at least CLIENTS + 1)
  BIG_CLIENTS=$BIG_CLIENTS    clients of c500 and c500-prepared
  BIG_MIN_DURATION=$BIG_MIN_DURATION  c500 and c500-prepared run max(DURATION, this) seconds: pgbench's
                      clock includes connecting, and 500 SCRAM logins take seconds
  LOG_SAMPLING=$LOG_SAMPLING  share of transactions logged for latency percentiles (c1 logs all)
  TARGETS="$ALL_TARGETS"
  WORKLOADS="$ALL_WORKLOADS"
  HAPROXY_PORT=$HAPROXY_PORT PGBOUNCER_PORT=$PGBOUNCER_PORT PGPOOL_PORT=$PGPOOL_PORT PGPOOL_PCP_PORT=$PGPOOL_PCP_PORT
  BENCH_PGSPLIT_PORT=$BENCH_PGSPLIT_PORT BENCH_METRICS_PORT=$BENCH_METRICS_PORT   (pgsplit and its /metrics)
  BENCH_PGSPLIT_TIME_PORT=$BENCH_PGSPLIT_TIME_PORT BENCH_TIME_METRICS_PORT=$BENCH_TIME_METRICS_PORT   (pgsplit-time)
  BENCH_PGSPLIT_NOROUTING_PORT=$BENCH_PGSPLIT_NOROUTING_PORT BENCH_NOROUTING_METRICS_PORT=$BENCH_NOROUTING_METRICS_PORT   (pgsplit-norouting)
  IMPORT_KINDS="pgsplit pgpool"  bulk-import scenario through these (empty: skip it)
  IMPORT_SCALE=50 IMPORT_THRESHOLD=4194304   its pgbench -i scale and the lag threshold
                      both proxies get (bytes); IMPORT_PGSPLIT_PORT=6460 IMPORT_PGPOOL_PORT=6470
  COST=1              then bench/cost.sh: system calls and instructions per transaction
                      (needs strace and valgrind; COST=0 skips it)
  PGSPLIT_SKIP_BUILD=1, PGSPLIT_BIN   use a prebuilt pgsplit
  PGSPLIT_CLUSTER_DIR                 the dev cluster (default /tmp/pgsplit-cluster)

Configs, logs and pgbench output: \$PGSPLIT_CLUSTER_DIR/bench/
EOF
}

lib_no_arguments "$@"

for n in ROUNDS DURATION CLIENTS THREADS SCALE POOL_SIZE BIG_CLIENTS BIG_MIN_DURATION; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || {
        echo "bench/run.sh: $n must be a positive whole number, got '${!n}'" >&2
        exit 2
    }
done
[[ "$LOG_SAMPLING" =~ ^(0?\.[0-9]*[1-9][0-9]*|1)$ ]] || {
    echo "bench/run.sh: LOG_SAMPLING must be in (0, 1], got '$LOG_SAMPLING'" >&2
    exit 2
}
read -r -a TARGET_LIST <<<"$TARGETS"
read -r -a WORKLOAD_LIST <<<"$WORKLOADS"
for t in "${TARGET_LIST[@]}"; do
    [[ " $ALL_TARGETS " == *" $t "* ]] || {
        echo "bench/run.sh: unknown target '$t' (known: $ALL_TARGETS)" >&2
        exit 2
    }
done
for w in "${WORKLOAD_LIST[@]}"; do
    [[ " $ALL_WORKLOADS " == *" $w "* ]] || {
        echo "bench/run.sh: unknown workload '$w' (known: $ALL_WORKLOADS)" >&2
        exit 2
    }
done
wants() { [[ " ${TARGET_LIST[*]} " == *" $1 "* ]]; }

say() { echo "== $*"; }

# ---- 1. packages -------------------------------------------------------------------------------
# Debian starts the services of some of these packages on install, on their default ports
# (PgBouncer on 6432, where pgsplit's demo listens). Stop and disable them: the benchmark
# starts its own instances with its own configs.
stop_debian_services() {
    local svc
    for svc in pgbouncer pgpool2 haproxy; do
        if [[ -d /run/systemd/system ]]; then
            systemctl stop "$svc" >/dev/null 2>&1 || true
            systemctl disable "$svc" >/dev/null 2>&1 || true
        else
            service "$svc" stop >/dev/null 2>&1 || true
            update-rc.d "$svc" disable >/dev/null 2>&1 || true
        fi
    done
}

install_packages() {
    local missing=()
    if wants haproxy; then command -v haproxy >/dev/null 2>&1 || missing+=(haproxy); fi
    if wants pgbouncer; then command -v pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer); fi
    if wants pgpool; then command -v pgpool >/dev/null 2>&1 || missing+=(pgpool2); fi
    command -v gnuplot >/dev/null 2>&1 || missing+=(gnuplot-nox)
    ((${#missing[@]} > 0)) || return 0
    is_root || lib_die "missing Debian packages: ${missing[*]}; run as root, or: apt-get install ${missing[*]}"
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${missing[@]}"; then
        apt-get update -q
        apt-get install -y -q "${missing[@]}"
    fi
    stop_debian_services
}

# ---- 2. per-target configs and processes --------------------------------------------------------
declare -A PID=()     # PID[target] of the process we started
declare -A TLOG=()    # TLOG[target] its log
declare -A PORT_OF=() # PORT_OF[target]
PORT_OF[direct]="$PRIMARY_PORT"
PORT_OF[haproxy]="$HAPROXY_PORT"
PORT_OF[pgbouncer]="$PGBOUNCER_PORT"
PORT_OF[pgpool]="$PGPOOL_PORT"
PORT_OF[pgsplit]="$BENCH_PGSPLIT_PORT"
PORT_OF[pgsplit-time]="$BENCH_PGSPLIT_TIME_PORT"
PORT_OF[pgsplit-norouting]="$BENCH_PGSPLIT_NOROUTING_PORT"
declare -A METRICS_OF=() # METRICS_OF[target]: the /metrics port of a pgsplit target
METRICS_OF[pgsplit]="$BENCH_METRICS_PORT"
METRICS_OF[pgsplit-time]="$BENCH_TIME_METRICS_PORT"
METRICS_OF[pgsplit-norouting]="$BENCH_NOROUTING_METRICS_PORT"

# sslmode=disable: no target here speaks TLS, and without it libpq sends an SSLRequest first,
# which turns Pgpool-II's "too many clients" refusal into "error during SSL exchange".
target_url() { echo "postgres://app:secret@127.0.0.1:${PORT_OF[$1]}/bench?sslmode=disable"; }

# Stop every process we started (SIGTERM, SIGKILL after 10 s). Runs on exit, whatever happens.
stop_targets() {
    local t pid i
    for t in "${!PID[@]}"; do
        pid="${PID[$t]}"
        unset "PID[$t]"
        kill -0 "$pid" 2>/dev/null || continue
        echo "== stopping $t (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null || true
    done
    stop_pgsplit # lib.sh; a no-op when pgsplit is not running
}
trap stop_targets EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Start "$@" in the background as target $1's process and wait until its port listens.
start_target() {
    local t="$1"
    shift
    local log="$BENCH_DIR/$t/$t.log" port="${PORT_OF[$t]}"
    local knob="${t^^}_PORT"
    [[ "$t" == pgsplit ]] && knob=BENCH_PGSPLIT_PORT
    [[ "$t" == pgsplit-time ]] && knob=BENCH_PGSPLIT_TIME_PORT
    [[ "$t" == pgsplit-norouting ]] && knob=BENCH_PGSPLIT_NOROUTING_PORT
    port_open "$port" && lib_die "something already listens on 127.0.0.1:$port (wanted for $t; set $knob)"
    say "starting $t on 127.0.0.1:$port (log: $log)"
    "$@" >"$log" 2>&1 &
    PID[$t]=$!
    TLOG[$t]="$log"
    local deadline=$((SECONDS + 30))
    until port_open "$port"; do
        if ! kill -0 "${PID[$t]}" 2>/dev/null; then
            tail -n 20 "$log" >&2 || true
            lib_die "$t exited before listening on port $port; see $log"
        fi
        ((SECONDS < deadline)) || {
            tail -n 20 "$log" >&2
            lib_die "$t did not listen on port $port within 30 s; see $log"
        }
        sleep 0.2
    done
}

start_haproxy() {
    local dir="$BENCH_DIR/haproxy"
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
# Generated by bench/run.sh: a plain TCP relay to the primary.
global
    maxconn $((BIG_CLIENTS * 2 + 100))
    pidfile $dir/haproxy.pid
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend pg
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend primary
backend primary
    server primary 127.0.0.1:$PRIMARY_PORT
EOF
    haproxy -c -q -f "$dir/haproxy.cfg" || lib_die "haproxy rejects $dir/haproxy.cfg"
    start_target haproxy haproxy -db -f "$dir/haproxy.cfg"
}

start_pgbouncer() {
    local dir="$BENCH_DIR/pgbouncer"
    mkdir -p "$dir"
    bench_pgbouncer_config "$dir" "$PGBOUNCER_PORT" "$POOL_SIZE" \
        $((BIG_CLIENTS + 100 > 600 ? BIG_CLIENTS + 100 : 600)) \
        "pidfile = $dir/pgbouncer.pid" "min_pool_size = 0" "reserve_pool_size = 0"
    start_target pgbouncer pgbouncer "${PGBOUNCER_AS[@]}" "$dir/pgbouncer.ini"
}

start_pgpool() {
    local dir="$BENCH_DIR/pgpool"
    mkdir -p "$dir"
    # Process per client: each child serves one client at a time, with max_pool = 1 cached
    # connection to each node. num_init_children is the pool: POOL_SIZE children, so at most
    # POOL_SIZE server connections per node, like the others' pools. More clients than
    # children cannot be served at all; reserved_connections = 1 makes Pgpool refuse them
    # ("Sorry, too many clients already") instead of leaving them hanging in the backlog.
    local children=$((POOL_SIZE > CLIENTS ? POOL_SIZE : CLIENTS))
    children=$((children + 1)) # one is the reserved slot
    cat >"$dir/pgpool.conf" <<EOF
# Generated by bench/run.sh: Pgpool-II in streaming-replication mode, reads load-balanced
# over the replicas, replicas further behind than delay_threshold get no reads.
backend_clustering_mode = 'streaming_replication'
listen_addresses = '127.0.0.1'
port = $PGPOOL_PORT
socket_dir = '$dir'
pcp_listen_addresses = ''
pcp_port = $PGPOOL_PCP_PORT
pcp_socket_dir = '$dir'
wd_ipc_socket_dir = '$dir'
pid_file_name = '$dir/pgpool.pid'
logdir = '$dir'
log_destination = 'stderr'

# Primary: weight 0, so reads go to the replicas (writes and transactions that wrote go to
# the primary). No failover of any node: DISALLOW_TO_FAILOVER, no failover_command.
backend_hostname0 = '127.0.0.1'
backend_port0 = $PRIMARY_PORT
backend_weight0 = 0
backend_flag0 = 'DISALLOW_TO_FAILOVER'
backend_hostname1 = '127.0.0.1'
backend_port1 = $REPLICA1_PORT
backend_weight1 = 1
backend_flag1 = 'DISALLOW_TO_FAILOVER'
backend_hostname2 = '127.0.0.1'
backend_port2 = $REPLICA2_PORT
backend_weight2 = 1
backend_flag2 = 'DISALLOW_TO_FAILOVER'

# Clients log in with SCRAM against pool_passwd (clear text, "TEXT" prefix); Pgpool logs in
# to the nodes with SCRAM using the same password.
enable_pool_hba = on
pool_passwd = '$dir/pool_passwd'
allow_clear_text_frontend_auth = off

num_init_children = $children
reserved_connections = 1
max_pool = 1
connection_cache = on
load_balance_mode = on

# Replication delay check: every second, as app; a replica more than 16MB (pgsplit's
# max_replica_lag) behind gets no reads.
sr_check_period = 1
sr_check_user = 'app'
sr_check_password = 'secret'
sr_check_database = 'bench'
delay_threshold = 16777216

health_check_period = 5
health_check_timeout = 10
health_check_user = 'app'
health_check_password = 'secret'
health_check_database = 'bench'
health_check_max_retries = 3
failover_command = ''
failover_on_backend_error = off
failover_on_backend_shutdown = off
auto_failback = off
EOF
    cat >"$dir/pool_hba.conf" <<'EOF'
# Generated by bench/run.sh
host    all    all    127.0.0.1/32    scram-sha-256
EOF
    echo 'app:TEXTsecret' >"$dir/pool_passwd"
    : >"$dir/pcp.conf"
    chmod 0600 "$dir/pool_passwd"
    # -n: foreground (we background it); -D: forget node states of an earlier run.
    start_target pgpool pgpool -n -D -f "$dir/pgpool.conf" -F "$dir/pcp.conf" -a "$dir/pool_hba.conf"
    # Pgpool accepts connections before it has found the primary; wait for a query to work.
    local deadline=$((SECONDS + 60))
    until "$PSQL" -X -w -q -At "$(target_url pgpool)" -c 'SELECT 1' >/dev/null 2>&1; do
        ((SECONDS < deadline)) || {
            tail -n 20 "${TLOG[pgpool]}" >&2
            lib_die "pgpool does not answer queries; see ${TLOG[pgpool]}"
        }
        sleep 0.5
    done
    echo "   SHOW pool_nodes:"
    "$PSQL" -X -w "$(target_url pgpool)" -c 'SHOW pool_nodes' | sed 's/^/   /'
}

# Target pgsplit; pgsplit-time: the same with read_your_writes = "time"; pgsplit-norouting:
# the same with routing off.
start_bench_pgsplit() {
    local t="$1" ryw="lsn" routing=true
    local dir="$BENCH_DIR/$t" config port="${PORT_OF[$1]}" metrics="${METRICS_OF[$1]}"
    [[ "$t" == pgsplit-time ]] && ryw="time"
    [[ "$t" == pgsplit-norouting ]] && routing=false
    mkdir -p "$dir"
    config="$dir/pgsplit.toml"
    # config.toml with its own ports, a pool of POOL_SIZE and /metrics on; everything else
    # as shipped (max_replica_lag 16MB, worker_threads 1); read_your_writes "lsn" or "time".
    bench_pgsplit_config "$config" "$port" "$routing" \
        -e "/^\[metrics\]/,/^\[/ s/^enabled = .*/enabled = true/" \
        -e "/^\[metrics\]/,/^\[/ s/^listen = .*/listen = \"127.0.0.1:$metrics\"/" \
        -e "/^\[pool\]/,/^\[/ s/^max_size = .*/max_size = $POOL_SIZE/" \
        -e "s/^read_your_writes = .*/read_your_writes = \"$ryw\"/"
    if ! grep -q "^listen = \"127.0.0.1:$port\"" "$config" ||
        ! grep -q "^listen = \"127.0.0.1:$metrics\"" "$config" ||
        ! grep -q "^max_size = $POOL_SIZE\$" "$config" ||
        ! grep -q "^read_your_writes = \"$ryw\"\$" "$config"; then
        lib_die "could not derive $config from config.toml (listen / max_size / read_your_writes lines changed?)"
    fi
    "$PGSPLIT_BIN" --config "$config" --check >/dev/null || lib_die "pgsplit rejects $config"
    start_target "$t" "$PGSPLIT_BIN" --config "$config"
}

# A pgsplit target's reads so far, from /metrics, as "REPLICA PRIMARY": reads routed to a
# replica (pgsplit_routed_by_reason_total with reason read or read_only_transaction) and
# reads sent to the primary although a replica may serve them (reasons pinned,
# awaiting_replay, awaiting_token, bad_token, no_replica). Writes, transactions and reads
# of primary tables count in neither. "- -" when /metrics does not answer.
replica_reads() {
    curl -fsS --max-time 5 "http://127.0.0.1:${METRICS_OF[$1]}/metrics" 2>/dev/null | awk '
        $1 ~ /^pgsplit_routed_by_reason_total\{/ {
            if ($1 ~ /reason="(read|read_only_transaction)"/) r += $2
            if ($1 ~ /reason="(pinned|awaiting_replay|awaiting_token|bad_token|no_replica)"/) p += $2
            seen = 1 }
        END { if (seen) printf "%d %d\n", r, p; else print "- -" }'
}

# ---- 3. the bench database ---------------------------------------------------------------------
init_bench_db() {
    bench_data_at_scale "$SCALE"
}

# Wait (up to 60 s) until both replicas have replayed everything the primary has written, so
# no run starts with a replica the lag guards would leave out.
wait_replicas() {
    replicas_replayed_within 60 || echo "   warning: starting anyway" >&2
}

# ---- 4. one pgbench run ------------------------------------------------------------------------
TSV_HEADER="round	workload	target	position	clients	status	tps	lat_avg_ms	p50_us	p99_us	failed	errors	first_error	reads_replica	reads_primary	cpu_us_per_tx"
CLK_TCK="$(getconf CLK_TCK)"

# CPU time so far, in clock ticks, of target $1's process and all its descendants (Pgpool-II
# forks a child per client): utime + stime of each, all threads, plus what they reaped.
# "-" for a target without a process of ours (direct).
proxy_cpu_ticks() {
    local root="${PID[$1]:-}"
    [[ -n "$root" ]] || {
        echo -
        return
    }
    # /proc/PID/stat: "pid (comm) state ppid ..."; after the comm, field 2 is the ppid and
    # fields 12-15 utime, stime, cutime, cstime.
    # (A process may end between the glob and cat: cat then fails, which does not matter.)
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$root" '
        { pid = $1; rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
          ppid[pid] = f[2]; ticks[pid] = f[12] + f[13] + f[14] + f[15] }
        END { for (p in ticks) { q = p
                  while (q != "" && q != root && q in ppid) q = ppid[q]
                  if (q == root) total += ticks[p] }
              print total + 0 }'
}

# Percentile P (0-100) of the numbers on stdin, nearest rank; "-" if none.
percentile() {
    sort -n | awk -v p="$1" '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        i = int(p / 100 * NR); if (i < p / 100 * NR) i++; if (i < 1) i = 1
        print v[i] }'
}

workload_duration() {
    case "$1" in
    c500 | c500-prepared) echo $((DURATION > BIG_MIN_DURATION ? DURATION : BIG_MIN_DURATION)) ;;
    *) echo "$DURATION" ;;
    esac
}

workload_clients() {
    case "$1" in
    c1) echo 1 ;;
    c500 | c500-prepared) echo "$BIG_CLIENTS" ;;
    *) echo "$CLIENTS" ;;
    esac
}

run_one() {
    local workload="$1" target="$2" round="$3" position="$4"
    local clients duration run log args=() rc=0 sampling="$LOG_SAMPLING"
    clients="$(workload_clients "$workload")"
    duration="$(workload_duration "$workload")"
    run="$BENCH_DIR/runs/$workload-$target-r$round"
    log="$run.log"
    rm -rf "$run.tx" && mkdir -p "$run.tx"
    printf '== round %d/%d  %-16s %-10s ' "$round" "$ROUNDS" "$workload" "$target"

    # direct and haproxy give every client its own backend: beyond the primary's
    # max_connections (less its reserved slots and the lag monitors) they cannot run.
    if [[ "$target" == direct || "$target" == haproxy ]] && ((clients > MAX_DIRECT_CLIENTS)); then
        echo "n/a ($clients clients > $MAX_DIRECT_CLIENTS usable of max_connections $MAX_CONNECTIONS)"
        printf '%s\t%s\t%s\t%s\t%s\tn/a\t-\t-\t-\t-\t-\t-\t%s\t-\t-\t-\n' "$round" "$workload" "$target" \
            "$position" "$clients" "not applicable: $clients clients exceed the primary's max_connections ($MAX_CONNECTIONS)" >>"$RAW_TSV"
        return 0
    fi

    case "$workload" in
    select-simple | c500) args=(-S -M simple) ;;
    select-prepared | c500-prepared) args=(-S -M prepared) ;;
    tpcb) args=(-M simple) ;;
    mixed) args=(-M simple -f "$REPO_ROOT/bench/mixed-read.sql@9" -f "$REPO_ROOT/bench/mixed-write.sql@1") ;;
    c1)
        args=(-S -M simple)
        sampling=1
        ;;
    esac
    local threads=$((clients < THREADS ? clients : THREADS))
    args+=(-n -c "$clients" -j "$threads" -T "$duration" -l --log-prefix="$run.tx/tx")
    [[ "$sampling" == 1 ]] || args+=(--sampling-rate="$sampling")

    wait_replicas
    local before=(- -) after=(- -) reads_replica=- reads_primary=-
    [[ -z "${METRICS_OF[$target]:-}" ]] || read -r -a before <<<"$(replica_reads "$target")"
    local cpu_before cpu_after cpu=-
    cpu_before="$(proxy_cpu_ticks "$target")"
    timeout --kill-after=10 $((duration + 120)) "$PGBENCH" "${args[@]}" "$(target_url "$target")" >"$log" 2>&1 || rc=$?
    cpu_after="$(proxy_cpu_ticks "$target")"
    [[ -z "${METRICS_OF[$target]:-}" ]] || read -r -a after <<<"$(replica_reads "$target")"
    if [[ "${before[0]}${after[0]}" =~ ^[0-9]+$ ]]; then
        reads_replica=$((after[0] - before[0]))
        reads_primary=$((after[1] - before[1]))
    fi

    # pgbench 15 prints "tps = N (without initial connection time)", "latency average = N ms",
    # "number of failed transactions: N (x%)"; a client that hits an error aborts and pgbench
    # exits 2 ("Run was aborted"), its other clients' figures still printed.
    local tps lat failed errors first_error status p50 p99 txs
    tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$log")"
    txs="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")"
    if [[ "$cpu_before" != - && "${txs:-0}" -gt 0 ]]; then
        cpu="$(awk -v a="$cpu_after" -v b="$cpu_before" -v n="$txs" -v hz="$CLK_TCK" \
            'BEGIN { printf "%.1f", (a - b) / hz * 1e6 / n }')"
    fi
    lat="$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' "$log")"
    failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$log")"
    errors="$(grep -c -i 'error' "$log" || true)"
    first_error="$(grep -i -m1 'error' "$log" | tr '\t' ' ' | cut -c1-300 || true)"
    # Per-transaction log lines: client_id transaction_no time_us script_no epoch epoch_us.
    # Only numeric times count (a failed transaction logs "failed" instead).
    local times="$run.times"
    cat "$run.tx"/tx.* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ { print $3 }' >"$times" || true
    p50="$(percentile 50 <"$times")"
    p99="$(percentile 99 <"$times")"
    rm -rf "$run.tx" "$times"

    # pgbench 15 itself may crash (SIGSEGV) after connections were refused: say so.
    if ((rc > 128 && rc != 137)); then
        first_error="${first_error:+$first_error; }pgbench died of signal $((rc - 128))"
    fi
    if ((rc == 124 || rc == 137)); then
        status=timeout
        first_error="${first_error:-pgbench did not finish within $((duration + 120)) s}"
    elif [[ -z "$tps" ]]; then
        status=fail
        if [[ -z "$first_error" ]] && grep -q '^number of transactions actually processed: 0$' "$log"; then
            first_error="no transaction completed in $duration s (still connecting $clients clients?)"
        fi
    elif ((rc != 0 || errors > 0)) || [[ -n "$failed" && "$failed" != 0 ]]; then
        status=errors
    else
        status=ok
    fi
    local share=""
    if [[ "$reads_replica" != - ]] && ((reads_replica + reads_primary > 0)); then
        share="  reads on replicas $((100 * reads_replica / (reads_replica + reads_primary)))%"
    fi
    if [[ "$status" == ok ]]; then
        echo "$tps tps  p50 ${p50} us  p99 ${p99} us  CPU ${cpu} us/tx$share"
    else
        echo "$status: ${tps:-no} tps, $errors error lines, exit $rc (see $log)"
        [[ -z "$first_error" ]] || echo "     $first_error"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$workload" "$target" \
        "$position" "$clients" "$status" "${tps:--}" "${lat:--}" "$p50" "$p99" "${failed:--}" \
        "$errors" "${first_error:--}" "$reads_replica" "$reads_primary" "$cpu" >>"$RAW_TSV"
}

# ---- 5. the bulk-import scenario ---------------------------------------------------------------
# bench/import.sh runs a read load (writer, pinned readers, plain readers: examples/import_probe.rs)
# through a proxy while `pgbench -i -s IMPORT_SCALE` imports on the primary, once through a
# pgsplit and once through a Pgpool-II that it starts itself with the same lag threshold
# (IMPORT_THRESHOLD, default 4MB: the dev cluster replays fast and rarely falls 16MB behind).
# Each run writes a Markdown summary; they go into RESULTS.md, the charts into bench/results/charts/.
IMPORT_KINDS="${IMPORT_KINDS-pgsplit pgpool}"
IMPORT_PGSPLIT_PORT="${IMPORT_PGSPLIT_PORT:-6460}"
IMPORT_PGPOOL_PORT="${IMPORT_PGPOOL_PORT:-6470}"
import_scenario() {
    local kind port
    export BENCH_IMPORT_MD="$BENCH_DIR/import.md"
    rm -f "$BENCH_IMPORT_MD"
    [[ -n "$IMPORT_KINDS" ]] || return 0
    for kind in $IMPORT_KINDS; do
        case "$kind" in
        pgsplit) port="$IMPORT_PGSPLIT_PORT" ;;
        pgpool) port="$IMPORT_PGPOOL_PORT" ;;
        *) lib_die "IMPORT_KINDS: unknown kind '$kind' (pgsplit, pgpool)" ;;
        esac
        say "bench/import.sh $kind $port (bulk import, scale ${IMPORT_SCALE:-50})"
        if ! IMPORT_START_PROXY=1 IMPORT_THRESHOLD="${IMPORT_THRESHOLD:-4194304}" \
            OUT_DIR="$BENCH_DIR/import" \
            "$REPO_ROOT/bench/import.sh" "$kind" "$port"; then
            echo "   warning: bench/import.sh $kind failed; see $BENCH_DIR/import/" >&2
            continue
        fi
        cat "$BENCH_DIR/import/import-$kind.md" >>"$BENCH_IMPORT_MD"
        echo >>"$BENCH_IMPORT_MD"
    done
}

# ---- main --------------------------------------------------------------------------------------
cd "$REPO_ROOT"
install_packages
need_pg_clients
command -v python3 >/dev/null 2>&1 || lib_die "python3 is needed for bench/report.py (apt-get install python3)"
if wants pgsplit || wants pgsplit-norouting || wants pgsplit-time; then build_pgsplit; fi

say "dev/cluster.sh up"
"$REPO_ROOT/dev/cluster.sh" up
init_bench_db
wait_replicas
MAX_CONNECTIONS="$(node_psql "$PRIMARY_PORT" -d postgres -c 'SHOW max_connections')"
RESERVED="$(node_psql "$PRIMARY_PORT" -d postgres -c 'SHOW superuser_reserved_connections')"
MAX_DIRECT_CLIENTS=$((MAX_CONNECTIONS - RESERVED - 10))

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/runs" "$BENCH_DIR"/{haproxy,pgbouncer,pgpool,pgsplit,pgsplit-norouting,pgsplit-time}
is_root && chown postgres:postgres "$BENCH_DIR"
RAW_TSV="$BENCH_DIR/raw.tsv"
echo "$TSV_HEADER" >"$RAW_TSV"

wants haproxy && start_haproxy
wants pgbouncer && start_pgbouncer
wants pgpool && start_pgpool
wants pgsplit && start_bench_pgsplit pgsplit
wants pgsplit-norouting && start_bench_pgsplit pgsplit-norouting
wants pgsplit-time && start_bench_pgsplit pgsplit-time

# Facts for the report, key<TAB>value.
META="$BENCH_DIR/meta.tsv"
{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'nproc\t%s\n' "$(nproc)"
    printf 'cpu\t%s\n' "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    printf 'memory\t%s\n' "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    printf 'kernel\t%s\n' "$(uname -sr)"
    printf 'os\t%s\n' "$(. /etc/os-release && echo "$PRETTY_NAME")"
    printf 'loadavg_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf 'postgresql\t%s\n' "$(node_psql "$PRIMARY_PORT" -d postgres -c 'SHOW server_version')"
    printf 'pgbench\t%s\n' "$("$PGBENCH" --version)"
    wants pgbouncer && printf 'pgbouncer\t%s\n' "$(pgbouncer --version | head -n1)"
    wants pgpool && printf 'pgpool\t%s\n' "$(pgpool --version 2>&1 | head -n1)"
    wants haproxy && printf 'haproxy\t%s\n' "$(haproxy -v | head -n1 | cut -d' ' -f1-4)"
    if wants pgsplit || wants pgsplit-norouting || wants pgsplit-time; then
        printf 'pgsplit\t%s, git %s%s\n' "$("$PGSPLIT_BIN" --version)" "$(git rev-parse --short HEAD)" \
            "$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock config.toml || echo ' (modified)')"
    fi
    printf 'rounds\t%s\nduration\t%s\nclients\t%s\nthreads\t%s\nscale\t%s\n' \
        "$ROUNDS" "$DURATION" "$CLIENTS" "$THREADS" "$SCALE"
    printf 'pool_size\t%s\nbig_clients\t%s\nbig_duration\t%s\nlog_sampling\t%s\n' "$POOL_SIZE" \
        "$BIG_CLIENTS" "$(workload_duration c500)" "$LOG_SAMPLING"
    printf 'max_connections\t%s\n' "$MAX_CONNECTIONS"
    printf 'targets\t%s\nworkloads\t%s\n' "${TARGET_LIST[*]}" "${WORKLOAD_LIST[*]}"
} >"$META"

# The matrix: for each round, each workload, every target; the target order rotates by one
# each round, so every target takes every position (first after the previous workload, ...).
n=${#TARGET_LIST[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    for workload in "${WORKLOAD_LIST[@]}"; do
        for ((i = 0; i < n; i++)); do
            target="${TARGET_LIST[(i + round - 1) % n]}"
            # read_your_writes only matters where clients read after they write.
            [[ "$target" != pgsplit-time || "$workload" == mixed ]] || continue
            run_one "$workload" "$target" "$round" $((i + 1))
        done
    done
done

import_scenario

printf 'loadavg_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$META"
stop_targets >/dev/null
if wants pgsplit; then
    printf 'pgsplit_routing\t%s\n' "$(grep -h 'routing totals' "${TLOG[pgsplit]}" | sed 's/.*routing totals *//' | tail -n1)" >>"$META"
fi

# System calls, context switches and instructions per transaction of pgsplit and PgBouncer
# (bench/cost.sh writes bench/results/last-cost.txt; RESULTS.md shows it). COST=0 skips it.
COST_TXT=""
if [[ "${COST:-1}" == 1 ]]; then
    say "bench/cost.sh (system calls and instructions per transaction)"
    if PGSPLIT_SKIP_BUILD=1 "$REPO_ROOT/bench/cost.sh"; then
        COST_TXT="$REPO_ROOT/bench/results/last-cost.txt"
    else
        echo "   warning: bench/cost.sh failed; RESULTS.md has no system call table" >&2
    fi
fi

cp "$RAW_TSV" "$RESULTS_TSV"
say "writing bench/results/RESULTS.md and bench/results/charts/"
python3 "$REPO_ROOT/bench/report.py" --raw "$RESULTS_TSV" --meta "$META" \
    --import-md "$BENCH_DIR/import.md" ${COST_TXT:+--cost "$COST_TXT"} --out "$RESULTS_MD" --charts "$CHART_DIR"
echo
sed -n '/^## Summary/,/^## /p' "$RESULTS_MD" | sed '$d'
echo "(bench/results/RESULTS.md, bench/results/results.tsv, bench/results/charts/; per-run pgbench output in $BENCH_DIR/runs/)"
