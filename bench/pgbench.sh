#!/usr/bin/env bash
# bench/pgbench.sh — select-only throughput: straight to the primary vs through pgsplit.
#
# For each round, for each protocol mode (-M simple, -M prepared), runs
#   pgbench -n -S -M MODE -c CLIENTS -j THREADS -T DURATION
# against each target, alternating the target order between rounds:
#   direct     the primary, 127.0.0.1:15432, database bench
#   pgsplit    127.0.0.1:6432, database bench: reads spread over the replicas
#   pooling    127.0.0.1:6433, a second pgsplit with [routing] enabled = false (every
#              statement on the primary): the cost of classifying and routing is the
#              difference between pgsplit and this one
# all as user app / secret. Prints a table of TPS per round, the median, and the ratio of
# medians against direct and against pooling, then where pgsplit sent the transactions
# (its "routing totals" log line), and writes it all to bench/last-pgbench.txt.
#
# The bench database is initialised once (pgbench -i -s SCALE, directly on the primary) and
# reused while its scale matches.
set -euo pipefail
export LC_ALL=C # decimal points in pgbench output and printf

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-15}"
CLIENTS="${CLIENTS:-16}"
THREADS="${THREADS:-2}"
SCALE="${SCALE:-10}"
TARGETS="${TARGETS:-direct pgsplit pooling}"
POOLING_PORT="${POOLING_PORT:-6433}"
MODES="${MODES:-simple prepared}"
OUT="$REPO_ROOT/bench/last-pgbench.txt"

usage() {
    cat <<EOF
Usage: bench/pgbench.sh [-r ROUNDS] [-T SECONDS] [-c CLIENTS] [-j THREADS] [-s SCALE] [-h]

  -r ROUNDS    rounds per (mode, target)     env ROUNDS   (default 3)
  -T SECONDS   duration of each pgbench run  env DURATION (default 15)
  -c CLIENTS   pgbench clients               env CLIENTS  (default 16)
  -j THREADS   pgbench threads               env THREADS  (default 2)
  -s SCALE     pgbench scale of database bench  env SCALE (default 10)

Other environment:
  TARGETS="direct pgsplit pooling"   which targets to run; TARGETS=direct needs no pgsplit
                             binary; pooling is pgsplit with routing switched off (port POOLING_PORT, 6433)
  MODES="simple prepared"    pgbench -M modes
  PGSPLIT_SKIP_BUILD=1       do not run cargo build --release
  PGSPLIT_BIN, PGSPLIT_CONFIG, PGSPLIT_PORT   pgsplit binary, config (config.toml), port (6432)

Results: printed, and written to bench/last-pgbench.txt. pgbench output per run:
  \$PGSPLIT_CLUSTER_DIR/log/bench/
EOF
}

while getopts ':r:T:c:j:s:h' opt; do
    case "$opt" in
    r) ROUNDS="$OPTARG" ;;
    T) DURATION="$OPTARG" ;;
    c) CLIENTS="$OPTARG" ;;
    j) THREADS="$OPTARG" ;;
    s) SCALE="$OPTARG" ;;
    h)
        usage
        exit 0
        ;;
    :)
        echo "bench/pgbench.sh: -$OPTARG needs a value" >&2
        usage >&2
        exit 2
        ;;
    *)
        echo "bench/pgbench.sh: unknown option -$OPTARG" >&2
        usage >&2
        exit 2
        ;;
    esac
done
shift $((OPTIND - 1))
if (($# > 0)); then
    echo "bench/pgbench.sh: unexpected argument '$1'" >&2
    usage >&2
    exit 2
fi
for n in ROUNDS DURATION CLIENTS THREADS SCALE; do
    [[ "${!n}" =~ ^[1-9][0-9]*$ ]] || {
        echo "bench/pgbench.sh: $n must be a positive whole number, got '${!n}'" >&2
        usage >&2
        exit 2
    }
done
read -r -a TARGET_LIST <<<"$TARGETS"
read -r -a MODE_LIST <<<"$MODES"
for t in "${TARGET_LIST[@]}"; do
    [[ "$t" == direct || "$t" == pgsplit || "$t" == pooling ]] || {
        echo "bench/pgbench.sh: unknown target '$t' in TARGETS (direct, pgsplit, pooling)" >&2
        exit 2
    }
done
for m in "${MODE_LIST[@]}"; do
    [[ "$m" == simple || "$m" == extended || "$m" == prepared ]] || {
        echo "bench/pgbench.sh: unknown mode '$m' in MODES (simple, extended, prepared)" >&2
        exit 2
    }
done

cd "$REPO_ROOT"
need_pg_clients
export PGPASSWORD=secret
RUN_LOG_DIR="$LOG_DIR/bench"

target_url() {
    case "$1" in
    direct) echo "postgres://app:secret@127.0.0.1:$PRIMARY_PORT/bench" ;;
    pgsplit) echo "postgres://app:secret@$PGSPLIT_HOST:$PGSPLIT_PORT/bench" ;;
    pooling) echo "postgres://app:secret@$PGSPLIT_HOST:$POOLING_PORT/bench" ;;
    esac
}

# ---- setup -------------------------------------------------------------------------------------
uses_pgsplit=0
if [[ " ${TARGET_LIST[*]} " == *" pgsplit "* || " ${TARGET_LIST[*]} " == *" pooling "* ]]; then uses_pgsplit=1; fi
if ((uses_pgsplit)); then build_pgsplit; fi

echo "== dev/cluster.sh up"
"$REPO_ROOT/dev/cluster.sh" up
mkdir -p "$RUN_LOG_DIR"

# Database bench, initialised once; the replicas must have the tables before reads go there.
bench_data_at_scale "$SCALE"

POOLING_PID=""
POOLING_LOG="$LOG_DIR/pgsplit-pooling.log"
stop_pooling() {
    [[ -n "$POOLING_PID" ]] || return 0
    kill -TERM "$POOLING_PID" 2>/dev/null || true
    wait "$POOLING_PID" 2>/dev/null || true
    POOLING_PID=""
}
if ((uses_pgsplit)); then
    start_pgsplit
    trap 'stop_pooling; stop_pgsplit' EXIT
    if [[ " ${TARGET_LIST[*]} " == *" pooling "* ]]; then
        # The same configuration on another port, with routing switched off.
        pooling_config="$LOG_DIR/pgsplit-pooling.toml"
        sed -e "s/^listen = .*/listen = \"127.0.0.1:$POOLING_PORT\"/" \
            -e '/^\[routing\]/,/^\[/ s/^enabled = true/enabled = false/' \
            "$PGSPLIT_CONFIG" >"$pooling_config"
        "$PGSPLIT_BIN" --config "$pooling_config" >"$POOLING_LOG" 2>&1 &
        POOLING_PID=$!
        deadline=$((SECONDS + 30))
        until port_open "$POOLING_PORT"; do
            kill -0 "$POOLING_PID" 2>/dev/null || lib_die "the pooling-only pgsplit exited; see $POOLING_LOG"
            ((SECONDS < deadline)) || lib_die "the pooling-only pgsplit did not listen on $POOLING_PORT; see $POOLING_LOG"
            sleep 0.2
        done
        echo "== pooling-only pgsplit (routing off) listening on $PGSPLIT_HOST:$POOLING_PORT"
    fi
fi

# ---- runs --------------------------------------------------------------------------------------
declare -A TPS=() # TPS[mode/target/round]

run_one() {
    local mode="$1" target="$2" round="$3" log tps
    log="$RUN_LOG_DIR/$mode-$target-$round.log"
    printf '== round %d/%d  -M %-8s  %-8s ' "$round" "$ROUNDS" "$mode" "$target"
    if "$PGBENCH" -n -S -M "$mode" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
        "$(target_url "$target")" >"$log" 2>&1; then
        tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$log")"
    else
        tps=""
    fi
    if [[ -z "$tps" ]]; then
        echo "FAILED (see $log)"
        tail -n 5 "$log" | sed 's/^/     /'
        tps=FAIL
    else
        echo "$tps tps"
    fi
    TPS[$mode/$target/$round]="$tps"
}

for ((round = 1; round <= ROUNDS; round++)); do
    # Alternate the order of targets between rounds, so neither always runs first.
    order=("${TARGET_LIST[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#TARGET_LIST[@]} - 1; i >= 0; i--)); do order+=("${TARGET_LIST[i]}"); done
    fi
    for mode in "${MODE_LIST[@]}"; do
        for target in "${order[@]}"; do run_one "$mode" "$target" "$round"; done
    done
done

# ---- table -------------------------------------------------------------------------------------
# Median of the numeric arguments ("FAIL" ignored); empty if none.
median() {
    printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

failed=0
{
    echo "pgbench -n -S -c $CLIENTS -j $THREADS -T $DURATION, scale $SCALE, $ROUNDS rounds; $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; git $(git rev-parse --short HEAD 2>/dev/null || echo '-')"
    printf '%-9s %-8s' mode target
    for ((round = 1; round <= ROUNDS; round++)); do printf ' %10s' "round$round"; done
    printf ' %10s %9s %10s\n' median vs_direct vs_pooling
    for mode in "${MODE_LIST[@]}"; do
        declare -A MEDIAN=()
        for target in "${TARGET_LIST[@]}"; do
            values=()
            for ((round = 1; round <= ROUNDS; round++)); do values+=("${TPS[$mode/$target/$round]:-}"); done
            MEDIAN[$target]="$(median "${values[@]}")"
        done
        for target in "${TARGET_LIST[@]}"; do
            values=()
            for ((round = 1; round <= ROUNDS; round++)); do values+=("${TPS[$mode/$target/$round]}"); done
            [[ " ${values[*]} " == *FAIL* ]] && failed=1
            med="${MEDIAN[$target]}"
            printf '%-9s %-8s' "$mode" "$target"
            for v in "${values[@]}"; do
                if [[ "$v" == FAIL ]]; then printf ' %10s' FAIL; else printf ' %10.0f' "$v"; fi
            done
            if [[ -n "$med" ]]; then printf ' %10.0f' "$med"; else printf ' %10s' -; fi
            for base in direct pooling; do
                ratio=-
                if [[ -n "$med" && -n "${MEDIAN[$base]:-}" ]]; then
                    ratio="$(awk -v a="$med" -v b="${MEDIAN[$base]}" 'BEGIN { printf "%.2fx", a / b }')"
                fi
                printf ' %9s' "$ratio"
            done
            printf '\n'
        done
        unset MEDIAN
    done
    if ((uses_pgsplit)); then
        stop_pooling
        stop_pgsplit >/dev/null
        echo
        echo "where pgsplit (routing on) sent transactions over all its runs:"
        grep -h 'routing totals' "$PGSPLIT_LOG" | sed 's/.*routing totals */  /' || echo "  (no routing totals in $PGSPLIT_LOG)"
    fi
} >"$OUT"

echo
cat "$OUT"
echo
echo "(written to ${OUT#"$REPO_ROOT"/}; per-run pgbench output in $RUN_LOG_DIR)"
exit "$failed"
