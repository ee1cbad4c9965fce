# dev/lib.sh — shared helpers for the dev and bench scripts (sourced, not run).
#
# Knows where the dev cluster lives, where the PostgreSQL client binaries are, and how to
# build, start and stop pgsplit in the background. The caller sets REPO_ROOT and `set -euo
# pipefail` before sourcing this file.
# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source it

# ---- the dev cluster (dev/cluster.sh sources this file too) ----
export PGSPLIT_CLUSTER_DIR="${PGSPLIT_CLUSTER_DIR:-/tmp/pgsplit-cluster}"
PGSPLIT_CLUSTER_DIR="${PGSPLIT_CLUSTER_DIR%/}"
PRIMARY_PORT="${PGSPLIT_PRIMARY_PORT:-15432}"
REPLICA1_PORT="${PGSPLIT_REPLICA1_PORT:-15433}"
REPLICA2_PORT="${PGSPLIT_REPLICA2_PORT:-15434}"
SOCK_DIR="$PGSPLIT_CLUSTER_DIR/sock"
LOG_DIR="$PGSPLIT_CLUSTER_DIR/log"

# ---- pgsplit ----
PGSPLIT_BIN="${PGSPLIT_BIN:-$REPO_ROOT/target/release/pgsplit}"
PGSPLIT_CONFIG="${PGSPLIT_CONFIG:-config.toml}"
PGSPLIT_HOST=127.0.0.1
PGSPLIT_PORT="${PGSPLIT_PORT:-6432}"
PGSPLIT_LOG_FILE="$LOG_DIR/pgsplit.log"
PGSPLIT_PID=""

# ---- PostgreSQL client binaries (psql, pgbench), version 15 from the server package ----
PG_BINDIR="${PGSPLIT_PG_BINDIR:-}"
if [[ -z "$PG_BINDIR" ]] && command -v pg_config >/dev/null 2>&1; then
    PG_BINDIR="$(pg_config --bindir 2>/dev/null || true)"
fi
[[ -n "$PG_BINDIR" && -x "$PG_BINDIR/pgbench" ]] || PG_BINDIR=/usr/lib/postgresql/15/bin
PSQL="$PG_BINDIR/psql"
PGBENCH="$PG_BINDIR/pgbench"

lib_die() {
    echo "$(basename "$0"): error: $*" >&2
    exit 1
}

lib_note() { echo "$(basename "$0"): $*" >&2; }

# Deletes DIR, a directory a dev script made and marked with the file MARKER. A non-empty
# DIR without the marker is refused (a mistyped path must not be wiped); WHAT names the
# kind of directory in that error.
lib_remove_marked_dir() { # DIR MARKER WHAT
    local dir="$1" marker="$2" what="$3"
    [[ -d "$dir" ]] || return 0
    if [[ ! -e "$dir/$marker" && -n "$(ls -A "$dir")" ]]; then
        lib_die "refusing to delete $dir: it does not look like $what (no $marker marker)"
    fi
    lib_note "removing $dir"
    rm -rf "$dir"
}

# The arguments of a script that takes none (its settings are environment variables):
# -h/--help prints the script's `usage` and exits 0; anything else is an error (exit 2).
lib_no_arguments() {
    case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
    "") ;;
    *)
        echo "$(basename "$0"): unexpected argument '$1' (settings are environment variables; see --help)" >&2
        exit 2
        ;;
    esac
}

need_pg_clients() {
    [[ -x "$PSQL" && -x "$PGBENCH" ]] ||
        lib_die "psql/pgbench not found in $PG_BINDIR; install with: apt-get install postgresql-15 postgresql-client-15"
}

# Whether something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Runs a command as the postgres OS user when we are root (PostgreSQL refuses to run as
# root), else as ourselves; from / so the server does not complain about an unreadable
# working directory; without fd 9 (the scripts' lock), so a daemon started here does not
# hold it.
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@" 9>&-)
    else
        (cd / && "$@" 9>&-)
    fi
}

# Gives files or directories we created as root to the postgres OS user (arguments as for
# chown, e.g. -R DIR).
give_to_pg() {
    if is_root; then chown postgres:postgres "$@"; fi
}

# psql to a cluster node over its unix socket as superuser postgres. Usage: node_psql PORT ARGS...
node_psql() {
    local port="$1"
    shift
    "$PSQL" -X -w -q -At -v ON_ERROR_STOP=1 -h "$SOCK_DIR" -p "$port" -U postgres "$@"
}

# Waits up to SECS seconds until both replicas have replayed everything the primary had
# written when it was called. Returns 1, naming the replica, if one has not by then.
replicas_replayed_within() {
    local secs="$1" lsn port deadline
    lsn="$(node_psql "$PRIMARY_PORT" -d postgres -c 'SELECT pg_current_wal_lsn()')"
    for port in "$REPLICA1_PORT" "$REPLICA2_PORT"; do
        deadline=$((SECONDS + secs))
        until [[ "$(node_psql "$port" -d postgres -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")" == t ]]; do
            if ((SECONDS >= deadline)); then
                echo "replica on port $port has not replayed up to $lsn after $secs s" >&2
                return 1
            fi
            sleep 0.2
        done
    done
}

# Makes sure database bench holds pgbench's tables at scale SCALE, initialising it (directly
# on the primary, as app, so app owns the tables) when it does not; then waits for the
# replicas to replay it. Says what it did on stdout.
bench_data_at_scale() {
    local scale="$1" branches=none
    if [[ "$(node_psql "$PRIMARY_PORT" -d bench -c "SELECT to_regclass('pgbench_branches') IS NOT NULL")" == t ]]; then
        branches="$(node_psql "$PRIMARY_PORT" -d bench -c 'SELECT count(*) FROM pgbench_branches')"
    fi
    if [[ "$branches" != "$scale" ]]; then
        echo "== pgbench -i -s $scale on the primary (database bench)"
        PGPASSWORD=secret "$PGBENCH" -i -q -s "$scale" "postgres://app:secret@127.0.0.1:$PRIMARY_PORT/bench"
    else
        echo "== database bench already initialised at scale $scale"
    fi
    replicas_replayed_within 120 || lib_die "replicas did not catch up"
}

# Writes OUT, a config for a pgsplit under benchmark: the repository's config.toml listening
# on 127.0.0.1:PORT, with routing on or off (ROUTING true/false) and no metrics endpoint.
# Further sed arguments (-e '...') change more.
bench_pgsplit_config() { # OUT PORT ROUTING [SED_ARGS...]
    local out="$1" port="$2" routing="$3"
    shift 3
    sed -e "/^\[proxy\]/,/^\[/ s/^listen = .*/listen = \"127.0.0.1:$port\"/" \
        -e "/^\[metrics\]/,/^\[/ s/^enabled = .*/enabled = false/" \
        -e "/^\[routing\]/,/^\[/ s/^enabled = .*/enabled = $routing/" \
        "$@" "$REPO_ROOT/config.toml" >"$out"
}

# Writes DIR/pgbouncer.ini and DIR/userlist.txt, a PgBouncer under benchmark: transaction
# pooling of database bench to the primary with pools of POOL_SIZE, SCRAM logins as app /
# secret (a plaintext userlist, so PgBouncer logs in to the primary with SCRAM itself), the
# nodes in clear (the dev cluster speaks TLS, and PgBouncer's default would use it), no
# connection logs. Further ini lines for [pgbouncer] follow as arguments. Run as root, it
# hands DIR to the postgres OS user, which PgBouncer must run as: start it with
# `pgbouncer "${PGBOUNCER_AS[@]}" DIR/pgbouncer.ini`.
PGBOUNCER_AS=()
bench_pgbouncer_config() { # DIR PORT POOL_SIZE MAX_CLIENT_CONN [INI_LINE...]
    local dir="$1" port="$2" pool="$3" max_clients="$4"
    shift 4
    echo '"app" "secret"' >"$dir/userlist.txt"
    chmod 0600 "$dir/userlist.txt"
    {
        cat <<EOF
[databases]
bench = host=127.0.0.1 port=$PRIMARY_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = $max_clients
ignore_startup_parameters = extra_float_digits
server_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
EOF
        printf '%s\n' "$@"
    } >"$dir/pgbouncer.ini"
    if [[ "$(id -u)" == 0 ]]; then
        chown -R postgres:postgres "$dir"
        PGBOUNCER_AS=(-u postgres)
    fi
}

# Waits up to 60 s until something listens on PORT; dies, naming NAME, if process PID exits
# first or the time runs out.
wait_listening() { # PORT PID NAME
    local deadline=$((SECONDS + 60))
    until port_open "$1"; do
        kill -0 "$2" 2>/dev/null || lib_die "$3 exited"
        ((SECONDS < deadline)) || lib_die "$3 did not listen on $1"
        sleep 0.2
    done
}

# cargo build --release, unless PGSPLIT_SKIP_BUILD=1 (e.g. to use a prebuilt PGSPLIT_BIN).
build_pgsplit() {
    if [[ "${PGSPLIT_SKIP_BUILD:-0}" == 1 ]]; then
        echo "== skipping build (PGSPLIT_SKIP_BUILD=1)"
    else
        echo "== cargo build --release"
        (cd "$REPO_ROOT" && cargo build --release)
    fi
    [[ -x "$PGSPLIT_BIN" ]] || lib_die "$PGSPLIT_BIN not found or not executable"
}

# Start pgsplit in the background and wait until it accepts TCP connections. The caller must
# `trap stop_pgsplit EXIT` (done here too, for callers that have no trap of their own).
start_pgsplit() {
    [[ -f "$PGSPLIT_CONFIG" ]] ||
        lib_die "pgsplit config '$PGSPLIT_CONFIG' not found (run from the repo root, or set PGSPLIT_CONFIG)"
    if port_open "$PGSPLIT_PORT"; then
        lib_die "something already listens on $PGSPLIT_HOST:$PGSPLIT_PORT (an old pgsplit?); stop it first"
    fi
    mkdir -p "$LOG_DIR"
    echo "== starting $PGSPLIT_BIN --config $PGSPLIT_CONFIG (log: $PGSPLIT_LOG_FILE)"
    "$PGSPLIT_BIN" --config "$PGSPLIT_CONFIG" >"$PGSPLIT_LOG_FILE" 2>&1 &
    PGSPLIT_PID=$!
    trap stop_pgsplit EXIT
    # Ctrl-C / kill: exit through the EXIT trap so pgsplit never outlives us.
    trap 'exit 130' INT
    trap 'exit 143' TERM

    local deadline=$((SECONDS + 30))
    until port_open "$PGSPLIT_PORT"; do
        if ! kill -0 "$PGSPLIT_PID" 2>/dev/null; then
            tail -n 20 "$PGSPLIT_LOG_FILE" >&2 || true
            PGSPLIT_PID=""
            lib_die "pgsplit exited before listening on port $PGSPLIT_PORT; see $PGSPLIT_LOG_FILE"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$PGSPLIT_LOG_FILE" >&2 || true
            lib_die "pgsplit did not listen on $PGSPLIT_HOST:$PGSPLIT_PORT within 30 s; see $PGSPLIT_LOG_FILE"
        fi
        sleep 0.2
    done
    echo "== pgsplit is listening on $PGSPLIT_HOST:$PGSPLIT_PORT (pid $PGSPLIT_PID)"
}

# Stop the pgsplit we started (SIGTERM, then SIGKILL after 10 s). Safe to call twice.
stop_pgsplit() {
    [[ -n "$PGSPLIT_PID" ]] || return 0
    local pid="$PGSPLIT_PID"
    PGSPLIT_PID=""
    kill -0 "$pid" 2>/dev/null || return 0
    echo "== stopping pgsplit (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "   pgsplit did not exit after SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
