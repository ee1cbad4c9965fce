#!/usr/bin/env bash
# bench/cost.sh — what one `pgbench -S` transaction costs inside each proxy, counted rather
# than timed, so the figures hold on a shared, noisy machine.
#
#   bench/cost.sh
#
# Starts pgsplit twice (routing off, routing on; the repository's config.toml with pools of
# POOL_SIZE) and PgBouncer (transaction pooling to the primary), all in clear, then for
# each target measures per transaction of `pgbench -n -S -M simple`:
#   syscalls    system calls of the proxy process (strace -c -f over -c 16 -t TX_STRACE),
#               in total and the four that matter (send, receive, epoll_wait, writev)
#   switches    context switches of the proxy (voluntary + involuntary, /proc/PID/status)
#               and its CPU time (utime + stime, and each: user space and kernel) over a
#               -c 16 -T DURATION run; and over the same run, for the whole machine (every
#               process: pgbench, the PostgreSQL backends, the proxy), context switches
#               and busy CPU time (/proc/stat), which show what the proxy costs the others
#   Ir          instructions executed in user space, from valgrind's callgrind: the
#               difference between a run of 3000 and one of 1000 transactions (-c 4), so
#               logins and start-up cancel out
# and writes the table to bench/results/last-cost.txt. Needs strace, valgrind and pgbouncer
# (apt-get install strace valgrind pgbouncer). Run as root on a Debian machine.
set -euo pipefail
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

DURATION="${DURATION:-10}"
TX_STRACE="${TX_STRACE:-1000}"
SCALE="${SCALE:-10}"
POOL_SIZE="${POOL_SIZE:-20}"
OUT="$REPO_ROOT/bench/results/last-cost.txt"

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    echo
    echo "Environment: DURATION ($DURATION s), TX_STRACE ($TX_STRACE per client), SCALE ($SCALE), POOL_SIZE ($POOL_SIZE)."
}
lib_no_arguments "$@"
cd "$REPO_ROOT"
need_pg_clients
for tool in strace valgrind callgrind_control pgbouncer; do
    command -v "$tool" >/dev/null 2>&1 || lib_die "$tool not found (apt-get install strace valgrind pgbouncer)"
done
export PGPASSWORD=secret PGSSLMODE=disable

DIR="$PGSPLIT_CLUSTER_DIR/bench-cost"
rm -rf "$DIR"
mkdir -p "$DIR"
build_pgsplit >/dev/null
"$REPO_ROOT/dev/cluster.sh" up >/dev/null
bench_data_at_scale "$SCALE" >/dev/null

# ---- the targets ----------------------------------------------------------------------------
declare -A PID=() PORT=([pgsplit]=6481 [pgsplit-norouting]=6482 [pgbouncer]=6483)
# A target's command line, for running it under callgrind as well.
declare -A CMD=() AS_USER=()
stop_all() {
    for t in "${!PID[@]}"; do kill -TERM "${PID[$t]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all EXIT

pgsplit_config() { # NAME ROUTING PORT
    bench_pgsplit_config "$DIR/$1.toml" "$3" "$2" -e "/^\[pool\]/,/^\[/ s/^max_size = .*/max_size = $POOL_SIZE/"
}
pgsplit_config pgsplit true "${PORT[pgsplit]}"
pgsplit_config pgsplit-norouting false "${PORT[pgsplit-norouting]}"
bench_pgbouncer_config "$DIR" "${PORT[pgbouncer]}" "$POOL_SIZE" 600
CMD[pgsplit]="$PGSPLIT_BIN --config $DIR/pgsplit.toml"
CMD[pgsplit-norouting]="$PGSPLIT_BIN --config $DIR/pgsplit-norouting.toml"
CMD[pgbouncer]="pgbouncer $DIR/pgbouncer.ini"
for t in pgsplit pgsplit-norouting pgbouncer; do AS_USER[$t]=root; done
# PgBouncer refuses to run as root; under valgrind it cannot drop to postgres itself (-u).
((${#PGBOUNCER_AS[@]} == 0)) || AS_USER[pgbouncer]=postgres
# Runs a target's command (prefixed with $1, e.g. valgrind) as its user; prints the PID.
launch() { # PREFIX TARGET LOG
    local run="exec $1 ${CMD[$2]} >$3 2>&1"
    # (Not on the caller's stdout: $(launch ...) would wait for it to close.)
    if [[ "${AS_USER[$2]}" == root ]]; then
        bash -c "$run" >/dev/null 2>&1 &
    else
        su "${AS_USER[$2]}" -s /bin/bash -c "$run" >/dev/null 2>&1 &
    fi
    echo $!
}
bench() { # PORT ARGS...
    local port="$1"
    shift
    "$PGBENCH" -n -S -M simple "$@" "postgres://app:secret@127.0.0.1:$port/bench" 2>&1
}
processed() { awk '/number of transactions actually processed/ {split($NF, a, "/"); print a[1]}'; }

targets=(pgsplit-norouting pgsplit pgbouncer)
for t in "${targets[@]}"; do
    PID[$t]="$(launch "" "$t" "$DIR/$t.log")"
    wait_listening "${PORT[$t]}" "${PID[$t]}" "$t (logs: $DIR)"
done
sleep 3 # replicas join the read rotation after their first checks

declare -A ROW=()
hz="$(getconf CLK_TCK)"
for t in "${targets[@]}"; do
    pid="${PID[$t]}"
    # su leaves PgBouncer as the child of the shell it started.
    [[ "${AS_USER[$t]}" == root ]] || pid="$(pgrep -P "$pid" pgbouncer || pgrep -f "pgbouncer $DIR/$t.ini")"
    bench "${PORT[$t]}" -c 4 -t 50 >/dev/null # warm: pools open, statements classified

    # -- system calls
    strace -c -f -q -p "$pid" -o "$DIR/$t.strace" &
    tracer=$!
    sleep 1
    txs="$(bench "${PORT[$t]}" -c 16 -j 2 -t "$TX_STRACE" | processed)"
    sleep 0.5
    kill -INT "$tracer"
    wait "$tracer" 2>/dev/null || true
    calls() { awk -v s="$1" '$NF == s && !seen {n = $4; seen = 1} END {print n + 0}' "$DIR/$t.strace"; }
    total="$(awk '$NF == "total" {print $4}' "$DIR/$t.strace")"
    per() { awk -v n="${1:-0}" -v t="$txs" 'BEGIN {printf "%.2f", n / t}'; }
    sends=$(($(calls sendto) + $(calls write) + $(calls sendmsg)))
    recvs=$(($(calls recvfrom) + $(calls read) + $(calls recvmsg)))

    # -- context switches and CPU time
    ctx() { awk '/^(non)?voluntary_ctxt_switches/ {n += $2} END {print n}' "/proc/$pid/status"; }
    ticks() { awk '{print $14, $15}' "/proc/$pid/stat"; } # user, system
    # The whole machine: busy ticks (user, nice, system, irq, softirq) and context switches.
    machine() { awk '/^cpu / {b = $2 + $3 + $4 + $7 + $8} /^ctxt/ {c = $2} END {print b, c}' /proc/stat; }
    c0="$(ctx)"
    read -r u0 s0 <<<"$(ticks)"
    read -r mb0 mc0 <<<"$(machine)"
    out="$(bench "${PORT[$t]}" -c 16 -j 2 -T "$DURATION")"
    c1="$(ctx)"
    read -r u1 s1 <<<"$(ticks)"
    read -r mb1 mc1 <<<"$(machine)"
    n="$(processed <<<"$out")"
    us() { awk -v a="$1" -v b="$2" -v n="$n" -v hz="$hz" 'BEGIN {printf "%.1f", (a - b) / hz * 1e6 / n}'; }
    per_run() { awk -v x="$1" -v n="$n" 'BEGIN {printf "%.2f", x / n}'; }

    ROW[$t]="$(printf '%-18s %9s %6s %6s %6s %6s %9s %9s %7s %7s %9s %9s' "$t" "$(per "$total")" "$(per "$sends")" \
        "$(per "$recvs")" "$(per "$(calls epoll_wait)")" "$(per "$(calls writev)")" \
        "$(per_run $((c1 - c0)))" "$(us $((u1 + s1)) $((u0 + s0)))" "$(us "$u1" "$u0")" "$(us "$s1" "$s0")" \
        "$(per_run $((mc1 - mc0)))" "$(us "$mb1" "$mb0")")"
    echo "== $t: ${ROW[$t]}"
done
stop_all
PID=()

# -- user-space instructions, one target at a time under callgrind
declare -A IR=()
for t in "${targets[@]}"; do
    out="$DIR/callgrind-$t.out"
    vg="$(launch "valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out" "$t" "$DIR/$t-valgrind.log")"
    PID[$t]="$vg"
    wait_listening "${PORT[$t]}" "$vg" "$t under valgrind"
    sleep 3
    vpid="$(pgrep -f "callgrind-out-file=$out" | tail -1)"
    control() { if [[ "${AS_USER[$t]}" == root ]]; then callgrind_control "$@" "$vpid"; else su "${AS_USER[$t]}" -s /bin/bash -c "callgrind_control $* $vpid"; fi >/dev/null; }
    # A warm-up as long as the first measured run: every server connection the runs need
    # (and its SCRAM login, millions of instructions) is made before counting starts.
    bench "${PORT[$t]}" -c 4 -t 250 >/dev/null
    control -i on
    control -z
    a_tx="$(bench "${PORT[$t]}" -c 4 -t 250 | processed)"
    control -d
    b_tx="$(bench "${PORT[$t]}" -c 4 -t 750 | processed)"
    control -d
    kill -TERM "$vpid" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true
    totals() { awk '/^totals:/ {print $2; exit}' "$1"; }
    IR[$t]="$(awk -v a="$(totals "$out.1")" -v b="$(totals "$out.2")" -v n=$((b_tx - a_tx)) 'BEGIN {printf "%.0f", (b - a) / n}')"
    echo "== $t: ${IR[$t]} instructions per transaction (user space)"
    unset "PID[$t]"
done

{
    echo "bench/cost.sh: pgbench -n -S -M simple, in clear, scale $SCALE; $(date -u '+%Y-%m-%d %H:%M UTC'); git $(git rev-parse --short HEAD); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "Per transaction. syscalls: strace -c -f, -c 16 -t $TX_STRACE (send = sendto+write+sendmsg, recv = recvfrom+read+recvmsg). switches and CPU µs (user + system, then each) of the proxy, and host switches and host CPU µs (every process): -c 16 -T $DURATION. Ir: callgrind, user space, (3000 tx - 1000 tx) / 2000 at -c 4."
    printf '%-18s %9s %6s %6s %6s %6s %9s %9s %7s %7s %9s %9s %9s\n' target syscalls send recv epoll writev switches "CPU µs" user sys "host sw" "host µs" Ir
    for t in "${targets[@]}"; do echo "${ROW[$t]} $(printf '%9s' "${IR[$t]}")"; done
} | tee "$OUT"
echo "(written to bench/results/last-cost.txt; logs in $DIR)"
