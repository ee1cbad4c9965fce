#!/usr/bin/env bash
# bench/ab.sh — the same workloads through two builds of pgsplit in one run: a base git
# revision ("base") and the working tree ("new"), with direct PostgreSQL for reference.
#
#   bench/ab.sh [BASE_REV]        (default: the revision in env BASE, else HEAD)
#
# Builds BASE_REV in a git worktree (release, its own target directory under /tmp), builds
# the working tree (release), starts each with its tree's config.toml on its own ports, and
# runs, for ROUNDS rounds with the target order rotating each round:
#   select   pgbench -n -S -M simple   (reads: the replicas through pgsplit)
#   tpcb     pgbench -n -M simple      (TPC-B-like: every transaction on the primary)
# For each run it records TPS and the pgsplit process's own CPU time per transaction
# ((utime + stime from /proc/PID/stat) / transactions), which is steadier than TPS on a
# shared machine. Prints per-round figures, medians and new/base ratios, and writes them to
# bench/results/last-ab.txt.
set -euo pipefail
export LC_ALL=C

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-16}"
THREADS="${THREADS:-2}"
SCALE="${SCALE:-10}"
WORKLOADS="${WORKLOADS:-select tpcb}"
TARGETS="${TARGETS:-direct base new}"
BASE_PORT="${BASE_PORT:-6441}"
NEW_PORT="${NEW_PORT:-6442}"
OUT="$REPO_ROOT/bench/results/last-ab.txt"

case "${1:-}" in
-h | --help)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    cat <<EOF

Environment: ROUNDS ($ROUNDS), DURATION ($DURATION s), CLIENTS ($CLIENTS), THREADS ($THREADS),
SCALE ($SCALE), WORKLOADS ("$WORKLOADS"), TARGETS ("$TARGETS"), BASE_PORT, NEW_PORT.
EOF
    exit 0
    ;;
esac
BASE_REV="${1:-${BASE:-HEAD}}"
cd "$REPO_ROOT"
need_pg_clients
export PGPASSWORD=secret
RUN_LOG_DIR="$LOG_DIR/ab"
mkdir -p "$RUN_LOG_DIR"
git rev-parse --verify -q "$BASE_REV^{commit}" >/dev/null || lib_die "unknown revision '$BASE_REV'"
base_sha="$(git rev-parse --short "$BASE_REV")"
new_sha="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo +changes)"

# ---- builds ------------------------------------------------------------------------------------
BASE_TREE=/tmp/pgsplit-ab-base
BASE_TARGET=/tmp/pgsplit-ab-target
echo "== building base $base_sha in $BASE_TREE"
git worktree remove --force "$BASE_TREE" >/dev/null 2>&1 || rm -rf "$BASE_TREE"
git worktree prune
git worktree add --detach -q "$BASE_TREE" "$BASE_REV"
(cd "$BASE_TREE" && CARGO_TARGET_DIR="$BASE_TARGET" cargo build --release -q)
BASE_BIN="$BASE_TARGET/release/pgsplit"
echo "== building new ($new_sha)"
cargo build --release -q
NEW_BIN="$REPO_ROOT/target/release/pgsplit"

# ---- cluster and data --------------------------------------------------------------------------
"$REPO_ROOT/dev/cluster.sh" up >/dev/null
direct_url="postgres://app:secret@127.0.0.1:$PRIMARY_PORT/bench"
bench_data_at_scale "$SCALE"

# ---- the two proxies ---------------------------------------------------------------------------
declare -A PID=() PORT=([base]="$BASE_PORT" [new]="$NEW_PORT")
stop_all() {
    for t in "${!PID[@]}"; do kill -TERM "${PID[$t]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_all EXIT
for t in base new; do
    # Each build runs with its own tree's config.toml (the keys may differ).
    bin="$BASE_BIN" source_conf="$BASE_TREE/config.toml"
    [[ "$t" == new ]] && bin="$NEW_BIN" source_conf="$REPO_ROOT/config.toml"
    conf="$RUN_LOG_DIR/$t.toml"
    metrics_port=$((PORT[$t] + 3500))
    sed -e "/^\[proxy\]/,/^\[/ s/^listen = .*/listen = \"127.0.0.1:${PORT[$t]}\"/" \
        -e "/^\[metrics\]/,/^\[/ s/^listen = .*/listen = \"127.0.0.1:$metrics_port\"/" \
        "$source_conf" >"$conf"
    "$bin" --config "$conf" >"$RUN_LOG_DIR/$t.log" 2>&1 &
    PID[$t]=$!
    wait_listening "${PORT[$t]}" "${PID[$t]}" "pgsplit ($t, log: $RUN_LOG_DIR/$t.log)"
done
# Replicas join the read rotation once the monitor has seen them fresh (two checks).
sleep 3

url() {
    case "$1" in
    direct) echo "$direct_url" ;;
    *) echo "postgres://app:secret@127.0.0.1:${PORT[$1]}/bench" ;;
    esac
}

# CPU time (clock ticks) a process has used.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

declare -A TPS=() CPU=()
run_one() {
    local workload="$1" target="$2" round="$3" log args before after tps
    log="$RUN_LOG_DIR/$workload-$target-$round.log"
    args=(-n -M simple -c "$CLIENTS" -j "$THREADS" -T "$DURATION")
    [[ "$workload" == select ]] && args+=(-S)
    before=0
    [[ "$target" != direct ]] && before="$(cpu_ticks "${PID[$target]}")"
    if "$PGBENCH" "${args[@]}" "$(url "$target")" >"$log" 2>&1; then
        tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$log")"
        txs="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")"
    else
        tps=""
    fi
    TPS[$workload/$target/$round]="${tps:-FAIL}"
    if [[ "$target" != direct && -n "$tps" ]]; then
        after="$(cpu_ticks "${PID[$target]}")"
        CPU[$workload/$target/$round]="$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$txs" \
            'BEGIN { printf "%.1f", t / hz / n * 1e6 }')"
    fi
    printf '== round %d/%d %-7s %-7s %10s tps  %s µs CPU/tx\n' "$round" "$ROUNDS" "$workload" "$target" \
        "${TPS[$workload/$target/$round]}" "${CPU[$workload/$target/$round]:--}"
}

read -r -a TARGET_LIST <<<"$TARGETS"
read -r -a WORKLOAD_LIST <<<"$WORKLOADS"
for ((round = 1; round <= ROUNDS; round++)); do
    # Rotate the order of targets each round, so none always runs first.
    n=${#TARGET_LIST[@]}
    order=()
    for ((i = 0; i < n; i++)); do order+=("${TARGET_LIST[(i + round) % n]}"); done
    for workload in "${WORKLOAD_LIST[@]}"; do
        for target in "${order[@]}"; do run_one "$workload" "$target" "$round"; done
    done
done

# Median of the numeric arguments; empty if none.
median() {
    printf '%s\n' "$@" | { grep -E '^[0-9.]+$' || true; } | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

failed=0
{
    echo "bench/ab.sh: base $base_sha vs new $new_sha; pgbench -M simple -c $CLIENTS -j $THREADS -T $DURATION, scale $SCALE, $ROUNDS rounds; $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-7s %-7s %12s %14s\n' workload target "median tps" "median µs CPU/tx"
    for workload in "${WORKLOAD_LIST[@]}"; do
        declare -A MT=() MC=()
        for target in "${TARGET_LIST[@]}"; do
            tps=() cpu=()
            for ((round = 1; round <= ROUNDS; round++)); do
                tps+=("${TPS[$workload/$target/$round]}")
                cpu+=("${CPU[$workload/$target/$round]:-}")
                [[ "${TPS[$workload/$target/$round]}" == FAIL ]] && failed=1
            done
            MT[$target]="$(median "${tps[@]}")"
            MC[$target]="$(median "${cpu[@]}")"
            printf '%-7s %-7s %12s %14s   rounds: %s\n' "$workload" "$target" "${MT[$target]:-FAIL}" "${MC[$target]:--}" "${tps[*]}"
        done
        if [[ -n "${MT[base]:-}" && -n "${MT[new]:-}" ]]; then
            awk -v w="$workload" -v nt="${MT[new]}" -v bt="${MT[base]}" -v nc="${MC[new]}" -v bc="${MC[base]}" \
                'BEGIN { printf "%-7s new/base: %.3fx tps, %.3fx CPU per transaction\n", w, nt / bt, nc / bc }'
        fi
        unset MT MC
    done
} >"$OUT"
echo
cat "$OUT"
echo "(written to ${OUT#"$REPO_ROOT"/}; pgbench output in $RUN_LOG_DIR)"
exit "$failed"
