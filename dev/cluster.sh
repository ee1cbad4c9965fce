#!/usr/bin/env bash
# dev/cluster.sh — a local PostgreSQL 15 streaming-replication cluster for pgsplit.
#
# One primary and two hot-standby replicas on 127.0.0.1, built from the installed Debian
# server binaries. Tests, the demo and the benchmarks all talk to this cluster.
#
#   primary   127.0.0.1:15432   read-write
#   replica1  127.0.0.1:15433   streaming from primary (physical slot replica1)
#   replica2  127.0.0.1:15434   streaming from primary (physical slot replica2)
#
# When run as root, every server-side command runs as the `postgres` OS user (the server
# refuses to run as root) and the cluster directory is owned by postgres. Control queries use
# psql over the cluster's unix socket as database user postgres (trust).
#
# Every node also speaks TLS (ssl = on) with a certificate for 127.0.0.1 and localhost signed
# by the cluster's own CA ($PGSPLIT_CLUSTER_DIR/tls/ca.crt); plain connections still work.
#
# Run `dev/cluster.sh help` for commands and environment variables.
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The cluster's directory, its socket and log directories and the ports: one definition, in
# dev/lib.sh (PGSPLIT_CLUSTER_DIR, SOCK_DIR, LOG_DIR, PRIMARY_PORT, REPLICA1_PORT, ...).
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"
CLUSTER_DIR="$PGSPLIT_CLUSTER_DIR"
# Written at creation; later commands use the ports the cluster was built with.
CLUSTER_ENV="$CLUSTER_DIR/cluster.env"
# Serialises commands that change the cluster (two `up`s at once would fight).
LOCK_FILE="$CLUSTER_DIR.lock"
# The cluster's CA and the nodes' certificate (made by openssl at `up` or `tls-on`).
TLS_DIR="$CLUSTER_DIR/tls"

NODES=(primary replica1 replica2)
declare -A PORT=(
    [primary]="$PRIMARY_PORT"
    [replica1]="$REPLICA1_PORT"
    [replica2]="$REPLICA2_PORT"
)
STREAM_TIMEOUT=60 # seconds `up` waits for both replicas to stream

PROG="$(basename "$0")"

# The short form, shown after a usage error.
synopsis() {
    cat <<EOF
Usage: $PROG up|down|status|destroy|tls-on
       $PROG pause N | resume N          (N = replica 1 or 2)
       $PROG delay N DURATION            (e.g. 'delay 2 2s'; 'delay 2 0' clears)
       $PROG stop N | start N            (stop replica N hard / start it again)
       $PROG stop-primary [fast|immediate] | start-primary
       $PROG promote N                   (pg_ctl promote replica N)
       $PROG rebuild                     (back to one primary + 2 streaming replicas)
       $PROG help                        (commands, users, environment)
EOF
}

usage() {
    cat <<EOF
Usage: $PROG COMMAND [ARGS]

A local PostgreSQL 15 primary + 2 streaming replicas on 127.0.0.1 for pgsplit development.

Commands:
  up                    create (first time) or start the cluster; returns once both replicas
                        are streaming. Prints status. Safe to run when already up.
  down                  fast-stop all nodes (no error if they are not running)
  status                one line per node; exit 0 if all nodes are running, 1 otherwise
  pause N               pause WAL replay on replica N (1 or 2): lag grows with each write
  resume N              resume WAL replay on replica N
  delay N DURATION      set recovery_min_apply_delay on replica N (e.g. 2s, 500ms, 1min) and
                        reload; 'delay N 0' clears it
  stop N                stop replica N at once (pg_ctl stop -m immediate: a crash, as far
                        as its clients can tell); no error if it is not running
  start N               start replica N again; returns once both replicas are streaming
  stop-primary [MODE]   stop the primary (pg_ctl stop -m MODE: fast, the default, or
                        immediate, a crash); no error if it is not running
  start-primary         start the primary again; returns once both replicas are streaming,
                        or at once when a replica has been promoted meanwhile (the old
                        primary then runs beside the new one, on its old timeline: a split
                        brain on purpose, for failover tests)
  promote N             promote replica N (pg_ctl promote); returns once it reports that it
                        is out of recovery, and prints its new timeline. The other replica
                        keeps following the node on the primary port.
  rebuild               back to one primary on the primary port and two replicas streaming
                        from it, whatever state the cluster is in (after promote, a stopped
                        or returned old primary, missing replicas): the node out of recovery
                        on the highest timeline becomes the primary (its data directory moves
                        to primary/ when it is a promoted replica), and replicas that do not
                        stream from it are made again with pg_basebackup. Data written on the
                        new primary is kept; what only the old one had is lost. With no usable
                        node at all, it is destroy + up.
  destroy               down, then delete the cluster directory
  tls-on                turn TLS on for the running nodes (also part of 'up'): makes the CA
                        and certificate if missing, sets ssl = on by ALTER SYSTEM and reloads;
                        no restart, plain connections keep working
  help                  this text

Nodes (ports fixed when the cluster is created):
  primary   127.0.0.1:${PORT[primary]}
  replica1  127.0.0.1:${PORT[replica1]}
  replica2  127.0.0.1:${PORT[replica2]}

Database users (TCP from 127.0.0.1):
  postgres / postgres   superuser, SCRAM
  app      / secret     owner of databases app and bench, member of pg_monitor, SCRAM
  app_md5  / secret     password stored as md5, md5 auth; may use database app
  replicator            replication only, trust
  Over the unix socket ($SOCK_DIR) every user is trusted.

TLS: every node has ssl = on with a certificate for 127.0.0.1 and localhost, signed by the
cluster's CA $TLS_DIR/ca.crt, e.g.
  psql "host=127.0.0.1 sslmode=verify-full sslrootcert=$TLS_DIR/ca.crt ..."
pg_hba.conf says host, not hostssl: plain connections are accepted too.

Environment:
  PGSPLIT_CLUSTER_DIR            cluster directory (default /tmp/pgsplit-cluster); holds
                                 primary/ replica1/ replica2/ sock/ log/ tls/
  PGSPLIT_PRIMARY_PORT           primary port   (default 15432) } only used when the
  PGSPLIT_REPLICA1_PORT          replica1 port  (default 15433) } cluster is created;
  PGSPLIT_REPLICA2_PORT          replica2 port  (default 15434) } destroy to change them
  PGSPLIT_REPLICA2_APPLY_DELAY   at 'up': set recovery_min_apply_delay on replica2 (e.g. 2s),
                                 as 'delay 2 DURATION' would; unset leaves it as it is
  PGSPLIT_PG_BINDIR              PostgreSQL server binaries (default: pg_config --bindir,
                                 else /usr/lib/postgresql/15/bin)

Logs: $LOG_DIR/{primary,replica1,replica2}.log
EOF
}

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
die() { lib_die "$@"; }
note() { lib_note "$@"; }

usage_error() {
    echo "$PROG: $*" >&2
    synopsis >&2
    exit 2
}

node_dir() { echo "$CLUSTER_DIR/$1"; }
node_log() { echo "$LOG_DIR/$1.log"; }

# Make sure a node's log file exists and belongs to postgres (the server appends to it).
touch_log() {
    local log
    log="$(node_log "$1")"
    touch "$log"
    chmod 0644 "$log"
    give_to_pg "$log"
}

# psql against node NODE (primary, replica1, replica2) over the unix socket as user
# postgres, database postgres unless the extra args say otherwise (dev/lib.sh's node_psql
# takes a port).
node_sql() {
    local node="$1"
    shift
    node_psql "${PORT[$node]}" -d postgres "$@"
}

# Last lines of a node's log, indented, for error messages.
log_tail() {
    local log
    log="$(node_log "$1")"
    if [[ -f "$log" ]]; then
        echo "--- last lines of $log ---" >&2
        tail -n 15 "$log" | sed 's/^/    /' >&2
    fi
}

replica_node() {
    case "${1:-}" in
    1) echo replica1 ;;
    2) echo replica2 ;;
    *) usage_error "replica number must be 1 or 2, got '${1:-}'" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Preconditions
# ---------------------------------------------------------------------------------------------
find_bindir() {
    local dir="${PGSPLIT_PG_BINDIR:-}"
    if [[ -z "$dir" ]]; then
        # pg_config (libpq-dev) may be missing or point at client-only binaries.
        command -v pg_config >/dev/null 2>&1 && dir="$(pg_config --bindir 2>/dev/null || true)"
        [[ -n "$dir" && -x "$dir/initdb" ]] || dir=/usr/lib/postgresql/15/bin
    fi
    local bin
    for bin in initdb pg_ctl postgres pg_basebackup psql; do
        [[ -x "$dir/$bin" ]] ||
            die "PostgreSQL 15 server binaries not found ($dir/$bin is missing); install with: apt-get install postgresql-15"
    done
    local version
    version="$("$dir/postgres" --version)"
    [[ "$version" == *" 15."* ]] || note "warning: expected PostgreSQL 15, found: $version"
    BINDIR="$dir"
}

check_os_user() {
    if is_root; then
        id postgres >/dev/null 2>&1 ||
            die "OS user 'postgres' does not exist (it comes with: apt-get install postgresql-15)"
        command -v runuser >/dev/null 2>&1 || die "runuser not found (package util-linux)"
    fi
}

# Ports: a cluster remembers the ports it was created with (cluster.env). Asking for other
# ports through the environment is an error rather than a silently broken replica.
load_ports() {
    [[ -f "$CLUSTER_ENV" ]] || return 0
    local key value node
    while IFS='=' read -r key value; do
        case "$key" in
        PRIMARY_PORT) node=primary ;;
        REPLICA1_PORT) node=replica1 ;;
        REPLICA2_PORT) node=replica2 ;;
        *) continue ;;
        esac
        local env_name="PGSPLIT_${key}"
        if [[ -n "${!env_name:-}" && "${!env_name}" != "$value" ]]; then
            die "$env_name=${!env_name}, but the cluster in $CLUSTER_DIR was created with port $value for $node; run '$PROG destroy' to change ports"
        fi
        PORT[$node]="$value"
    done <"$CLUSTER_ENV"
}

take_lock() {
    exec 9>>"$LOCK_FILE"
    flock -w 300 9 || die "another $PROG is still busy with $CLUSTER_DIR (lock $LOCK_FILE)"
}

# ---------------------------------------------------------------------------------------------
# Node state
# ---------------------------------------------------------------------------------------------
node_exists() { [[ -f "$(node_dir "$1")/PG_VERSION" ]]; }

# pg_ctl's view: the postmaster.pid names a live process.
node_running() {
    node_exists "$1" && as_pg "$BINDIR/pg_ctl" -D "$(node_dir "$1")" status >/dev/null 2>&1
}

# The server answers queries.
node_accepting() {
    node_sql "$1" -c 'SELECT 1' >/dev/null 2>&1
}

start_node() {
    local node="$1" port="${PORT[$1]}"
    node_accepting "$node" && return 0
    # A live pid that does not answer: starting up, shutting down, or a killed server whose
    # processes are not reaped yet. Give it a few seconds to settle either way.
    local deadline=$((SECONDS + 15))
    while node_running "$node"; do
        node_accepting "$node" && return 0
        ((SECONDS < deadline)) ||
            die "$node has a live postmaster.pid but does not accept connections; see $(node_log "$node")"
        sleep 0.3
    done
    if port_open "$port"; then
        die "port $port on 127.0.0.1 is already in use by another process, so $node cannot start; stop that process, or destroy this cluster and pick other ports with PGSPLIT_${node^^}_PORT"
    fi
    note "starting $node on port $port (log: $(node_log "$node"))"
    touch_log "$node"
    if ! as_pg "$BINDIR/pg_ctl" -D "$(node_dir "$node")" -l "$(node_log "$node")" \
        -w -t 60 start >/dev/null; then
        log_tail "$node"
        die "$node did not start; see $(node_log "$node")"
    fi
}

stop_node() {
    local node="$1"
    if node_running "$node"; then
        note "stopping $node"
        as_pg "$BINDIR/pg_ctl" -D "$(node_dir "$node")" -m fast -w -t 60 stop >/dev/null ||
            die "$node did not stop; see $(node_log "$node")"
    fi
}

# ---------------------------------------------------------------------------------------------
# Creating the cluster
# ---------------------------------------------------------------------------------------------
make_cluster_dir() {
    mkdir -p "$CLUSTER_DIR" "$SOCK_DIR" "$LOG_DIR"
    chmod 0755 "$CLUSTER_DIR" "$SOCK_DIR" "$LOG_DIR"
    give_to_pg "$CLUSTER_DIR" "$SOCK_DIR" "$LOG_DIR"
    # Marks the directory as ours, so `destroy` never deletes anything else.
    touch "$CLUSTER_DIR/.pgsplit-cluster"
    if is_root; then
        runuser -u postgres -- test -w "$CLUSTER_DIR" ||
            die "the postgres OS user cannot write to $CLUSTER_DIR (are its parent directories readable by postgres?); set PGSPLIT_CLUSTER_DIR elsewhere"
    fi
}

# Settings specific to one node (port, name). postgresql.conf includes this file, and
# pg_basebackup copies the primary's, so each replica overwrites its own copy.
write_node_conf() {
    local node="$1" file
    file="$(node_dir "$node")/node.conf"
    cat >"$file" <<EOF
# Written by dev/cluster.sh: settings for this node only.
port = ${PORT[$node]}
cluster_name = '$node'
EOF
    give_to_pg "$file"
}

init_primary() {
    local dir locale=C
    dir="$(node_dir primary)"
    # A new primary means any old replicas are useless.
    rm -rf "$dir" "$(node_dir replica1)" "$(node_dir replica2)" "$CLUSTER_DIR/.bootstrapped"
    if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then locale=C.UTF-8; fi

    note "initdb primary in $dir (locale $locale)"
    as_pg "$BINDIR/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale="$locale" --no-instructions >"$LOG_DIR/initdb.log" 2>&1 ||
        die "initdb failed; see $LOG_DIR/initdb.log"

    # Shared by all nodes: replicas inherit this file through pg_basebackup.
    cat >>"$dir/postgresql.conf" <<EOF

# ---- dev/cluster.sh: pgsplit dev cluster (all nodes) ----
listen_addresses = '127.0.0.1'
unix_socket_directories = '$SOCK_DIR'
max_connections = 300
# Two-phase commit (PREPARE TRANSACTION), used by drivers' test suites (dev/compat.sh).
max_prepared_transactions = 10
shared_buffers = 128MB
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = 1GB
hot_standby = on
hot_standby_feedback = on
max_standby_streaming_delay = 30s
# Replicas report their replay position every second (pg_stat_replication stays fresh).
wal_receiver_status_interval = 1s
# A throwaway dev cluster: trade durability for speed.
fsync = off
synchronous_commit = off
full_page_writes = off
# Log to the file given to pg_ctl -l.
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
# Port and cluster_name of this node.
include_if_exists = 'node.conf'
EOF

    cat >"$dir/pg_hba.conf" <<'EOF'
# Written by dev/cluster.sh. First match wins.
# TYPE  DATABASE     USER        ADDRESS        METHOD
local   all          all                        trust
host    replication  replicator  127.0.0.1/32   trust
host    all          app_md5     127.0.0.1/32   md5
host    all          all         127.0.0.1/32   scram-sha-256
EOF
    write_node_conf primary
    printf 'PRIMARY_PORT=%s\nREPLICA1_PORT=%s\nREPLICA2_PORT=%s\n' \
        "${PORT[primary]}" "${PORT[replica1]}" "${PORT[replica2]}" >"$CLUSTER_ENV"
}

# Roles and databases. Idempotent; runs until it has succeeded once (.bootstrapped).
bootstrap_primary() {
    [[ -f "$CLUSTER_DIR/.bootstrapped" ]] && return 0
    note "creating roles and databases"
    node_sql primary -f "$REPO_ROOT/dev/roles.sql" >/dev/null
    touch "$CLUSTER_DIR/.bootstrapped"
}

create_replica() {
    local node="$1" dir log
    dir="$(node_dir "$node")"
    log="$(node_log "$node")"
    node_exists "$node" && return 0

    rm -rf "$dir" # leftovers of an interrupted base backup
    # A slot left behind by an earlier copy of this replica would make -C fail.
    node_sql primary -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                          WHERE slot_name = '$node' AND NOT active" >/dev/null

    note "pg_basebackup $node (slot $node)"
    touch_log "$node"
    if ! as_pg "$BINDIR/pg_basebackup" -h 127.0.0.1 -p "${PORT[primary]}" -U replicator -w \
        -D "$dir" -R -X stream -C -S "$node" -c fast >>"$log" 2>&1; then
        log_tail "$node"
        die "pg_basebackup for $node failed; see $log"
    fi
    write_node_conf "$node"
}

# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------
# The cluster's CA, and a certificate for 127.0.0.1 and localhost signed by it that every node
# uses. Made once; kept while the files are there.
make_tls_files() {
    [[ -f "$TLS_DIR/ca.crt" && -f "$TLS_DIR/server.crt" && -f "$TLS_DIR/server.key" ]] && return 0
    command -v openssl >/dev/null 2>&1 ||
        die "openssl not found (apt-get install openssl); it makes the cluster's TLS certificates"
    note "making a CA and a server certificate in $TLS_DIR"
    rm -rf "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    local log="$LOG_DIR/tls.log" ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    {
        openssl req -x509 "${ec[@]}" -days 3650 -subj "/CN=pgsplit dev cluster CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.crt" &&
            openssl req -new "${ec[@]}" -subj "/CN=localhost" \
                -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" &&
            printf '%s\n' "subjectAltName = DNS:localhost, IP:127.0.0.1" \
                "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
                "extendedKeyUsage = serverAuth" >"$TLS_DIR/server.ext" &&
            openssl x509 -req -in "$TLS_DIR/server.csr" -days 3650 -extfile "$TLS_DIR/server.ext" \
                -CA "$TLS_DIR/ca.crt" -CAkey "$TLS_DIR/ca.key" -CAcreateserial \
                -CAserial "$TLS_DIR/ca.srl" -out "$TLS_DIR/server.crt"
    } >"$log" 2>&1 || die "openssl could not make the certificates; see $log"
    rm -f "$TLS_DIR/server.csr" "$TLS_DIR/server.ext"
    # The server refuses a key that others can read.
    chmod 0755 "$TLS_DIR"
    chmod 0644 "$TLS_DIR/ca.crt" "$TLS_DIR/server.crt"
    chmod 0600 "$TLS_DIR/ca.key" "$TLS_DIR/server.key" "$TLS_DIR/ca.srl"
    give_to_pg "$TLS_DIR" "$TLS_DIR"/*
}

# True when a node answers over TLS with the cluster's certificate, as a client checking
# it fully (CA and host name) would.
node_tls_works() {
    [[ "$(PGPASSWORD=postgres PGSSLMODE=verify-full PGSSLROOTCERT="$TLS_DIR/ca.crt" \
        "$BINDIR/psql" -X -w -q -At -h 127.0.0.1 -p "${PORT[$1]}" -U postgres -d postgres \
        -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' 2>/dev/null)" == t ]]
}

# TLS on every node: ssl = on with the cluster's certificate, by ALTER SYSTEM and a reload
# (no restart; plain connections keep working). Idempotent; nodes that have it are left alone.
enable_tls() {
    make_tls_files
    local node
    for node in "${NODES[@]}"; do
        node_tls_works "$node" && continue
        note "turning TLS on for $node"
        node_sql "$node" \
            -c "ALTER SYSTEM SET ssl_cert_file = '$TLS_DIR/server.crt'" \
            -c "ALTER SYSTEM SET ssl_key_file = '$TLS_DIR/server.key'" \
            -c "ALTER SYSTEM SET ssl = on" \
            -c 'SELECT pg_reload_conf()' >/dev/null
        # The reload is asynchronous: wait until new connections get TLS.
        for _ in $(seq 50); do
            node_tls_works "$node" && break
            sleep 0.1
        done
        node_tls_works "$node" || {
            log_tail "$node"
            die "$node does not answer over TLS after a reload with ssl = on; see $(node_log "$node")"
        }
    done
}

# ---------------------------------------------------------------------------------------------
# Replication checks
# ---------------------------------------------------------------------------------------------
# How many of our replicas the primary sees as streaming (matched by their slots).
streaming_count() {
    node_sql primary -c "
        SELECT count(*) FROM pg_replication_slots s
        JOIN pg_stat_replication r ON r.pid = s.active_pid
        WHERE s.slot_name IN ('replica1', 'replica2') AND r.state = 'streaming'" 2>/dev/null ||
        echo 0
}

wait_for_streaming() {
    local deadline=$((SECONDS + STREAM_TIMEOUT))
    while [[ "$(streaming_count)" != 2 ]]; do
        if ((SECONDS >= deadline)); then
            echo "pg_stat_replication on primary:" >&2
            node_sql primary -P footer=off -F ' | ' \
                -c "SELECT application_name, state, sent_lsn, replay_lsn FROM pg_stat_replication" >&2 || true
            log_tail replica1
            log_tail replica2
            die "replicas are not both 'streaming' after ${STREAM_TIMEOUT} s; see $(node_log replica1), $(node_log replica2) and $(node_log primary)"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
cmd_up() {
    take_lock
    load_ports

    local all_running=1 node
    for node in "${NODES[@]}"; do node_accepting "$node" || all_running=0; done
    if ((all_running)); then
        note "cluster already running in $CLUSTER_DIR"
    else
        # Fail before touching anything if a port we need is taken by someone else.
        for node in "${NODES[@]}"; do
            if ! node_running "$node" && port_open "${PORT[$node]}"; then
                die "port ${PORT[$node]} on 127.0.0.1 is already in use by another process, so $node cannot start; stop that process, or (on a new cluster) pick other ports with PGSPLIT_${node^^}_PORT"
            fi
        done
        make_cluster_dir
        # Before any node starts: a node with ssl = on does not start without its files.
        make_tls_files
        node_exists primary || init_primary
        start_node primary
        bootstrap_primary
        for node in replica1 replica2; do
            create_replica "$node"
            start_node "$node"
        done
    fi

    enable_tls
    if [[ -n "${PGSPLIT_REPLICA2_APPLY_DELAY:-}" ]]; then
        set_apply_delay replica2 "$PGSPLIT_REPLICA2_APPLY_DELAY"
    fi
    wait_for_streaming
    cmd_status
}

cmd_tls_on() {
    take_lock
    load_ports
    local node
    for node in "${NODES[@]}"; do
        node_accepting "$node" || die "$node is not running (run: $PROG up)"
    done
    enable_tls
    echo "TLS on for all nodes; CA: $TLS_DIR/ca.crt"
}

cmd_down() {
    take_lock
    load_ports
    [[ -d "$CLUSTER_DIR" ]] || return 0
    # Replicas first: a primary shutting down waits for its walsenders.
    local node
    for node in replica2 replica1 primary; do stop_node "$node"; done
}

cmd_destroy() {
    cmd_down
    lib_remove_marked_dir "$CLUSTER_DIR" .pgsplit-cluster "a pgsplit cluster"
}

cmd_status() {
    load_ports
    if [[ ! -d "$CLUSTER_DIR" ]]; then
        echo "no cluster in $CLUSTER_DIR (run: $PROG up)"
        return 1
    fi
    local all_up=1 node primary_lsn=""
    if node_running primary; then
        primary_lsn="$(node_sql primary -c 'SELECT pg_current_wal_lsn()' 2>/dev/null || true)"
    fi

    printf '%-9s %-6s %-8s %-8s %-12s %-14s %-12s %s\n' \
        NODE PORT STATE ROLE LSN REPLAY APPLY_DELAY LAG_BYTES
    for node in "${NODES[@]}"; do
        local state=stopped role=- lsn=- replay=- delay=- lag=- row
        if node_running "$node"; then
            state=running
            # One row: in_recovery|lsn|pause state|apply delay|lag bytes behind the primary.
            if row="$(node_sql "$node" -F '|' -c "
                SELECT CASE WHEN pg_is_in_recovery() THEN 'replica' ELSE 'primary' END,
                       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                            ELSE pg_current_wal_lsn() END,
                       CASE WHEN pg_is_in_recovery()
                            THEN replace(pg_get_wal_replay_pause_state(), ' ', '-') ELSE '-' END,
                       CASE WHEN pg_is_in_recovery()
                            THEN current_setting('recovery_min_apply_delay') ELSE '-' END,
                       CASE WHEN pg_is_in_recovery() AND '$primary_lsn' <> ''
                            THEN pg_wal_lsn_diff(NULLIF('$primary_lsn', '')::pg_lsn,
                                                 pg_last_wal_replay_lsn())::text
                            ELSE '-' END" 2>/dev/null)"; then
                IFS='|' read -r role lsn replay delay lag <<<"$row"
            else
                state=no-conn
                all_up=0
            fi
        else
            all_up=0
        fi
        printf '%-9s %-6s %-8s %-8s %-12s %-14s %-12s %s\n' \
            "$node" "${PORT[$node]}" "$state" "$role" "${lsn:--}" "$replay" "$delay" "$lag"
    done
    ((all_up))
}

require_running_replica() {
    node_running "$1" || die "$1 is not running (run: $PROG up)"
}

cmd_pause() {
    local node
    node="$(replica_node "$1")"
    load_ports
    require_running_replica "$node"
    node_sql "$node" -c 'SELECT pg_wal_replay_pause()' >/dev/null
    # The request takes effect at the next WAL record boundary; usually at once.
    local state=""
    for _ in $(seq 50); do
        state="$(node_sql "$node" -c 'SELECT pg_get_wal_replay_pause_state()')"
        [[ "$state" == paused ]] && break
        sleep 0.1
    done
    echo "$node: replay $state"
}

cmd_resume() {
    local node
    node="$(replica_node "$1")"
    load_ports
    require_running_replica "$node"
    node_sql "$node" -c 'SELECT pg_wal_replay_resume()' >/dev/null
    echo "$node: replay $(node_sql "$node" -c 'SELECT pg_get_wal_replay_pause_state()')"
}

# DURATION in milliseconds, as pg_settings reports recovery_min_apply_delay.
duration_ms() {
    local n="$1" unit="$2"
    case "$unit" in
    us) echo $(((n + 500) / 1000)) ;;
    "" | ms) echo "$n" ;;
    s) echo $((n * 1000)) ;;
    min) echo $((n * 60000)) ;;
    h) echo $((n * 3600000)) ;;
    d) echo $((n * 86400000)) ;;
    esac
}

set_apply_delay() {
    local node="$1" duration="$2"
    [[ "$duration" =~ ^([0-9]+)\ *(us|ms|s|min|h|d)?$ ]] ||
        usage_error "bad DURATION '$duration': use a whole number with an optional unit us, ms, s, min, h or d (e.g. 2s, 500ms, 0)"
    local want
    want="$(duration_ms "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}")"
    require_running_replica "$node"

    if [[ "$want" == 0 ]]; then
        node_sql "$node" -c 'ALTER SYSTEM RESET recovery_min_apply_delay' >/dev/null
    else
        node_sql "$node" -c "ALTER SYSTEM SET recovery_min_apply_delay = '$duration'" >/dev/null
    fi
    node_sql "$node" -c 'SELECT pg_reload_conf()' >/dev/null

    # The reload is asynchronous: wait until new sessions see the new value.
    local got=""
    for _ in $(seq 50); do
        got="$(node_sql "$node" -c "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'")"
        [[ "$got" == "$want" ]] && break
        sleep 0.1
    done
    [[ "$got" == "$want" ]] || note "warning: $node still reports recovery_min_apply_delay = ${got}ms"
    echo "$node: recovery_min_apply_delay = $(node_sql "$node" -c 'SHOW recovery_min_apply_delay')"
}

cmd_stop() {
    local node
    node="$(replica_node "$1")"
    take_lock
    load_ports
    if node_running "$node"; then
        note "stopping $node immediately"
        as_pg "$BINDIR/pg_ctl" -D "$(node_dir "$node")" -m immediate -w -t 60 stop >/dev/null ||
            die "$node did not stop; see $(node_log "$node")"
    fi
    echo "$node: stopped"
}

cmd_start() {
    local node
    node="$(replica_node "$1")"
    take_lock
    load_ports
    node_exists "$node" || die "$node does not exist (run: $PROG up)"
    start_node "$node"
    wait_for_streaming
    echo "$node: streaming"
}

# The primary, stopped (pg_ctl stop -m fast: sessions end, replicas keep what they have; or
# -m immediate: a crash) and started again.
cmd_stop_primary() {
    local mode="${1:-fast}"
    [[ "$mode" == fast || "$mode" == immediate ]] ||
        usage_error "stop-primary takes fast or immediate, got '$mode'"
    take_lock
    load_ports
    if node_running primary; then
        note "stopping primary ($mode)"
        as_pg "$BINDIR/pg_ctl" -D "$(node_dir primary)" -m "$mode" -w -t 60 stop >/dev/null ||
            die "primary did not stop; see $(node_log primary)"
    fi
    echo "primary: stopped"
}

# Whether a node runs and is out of recovery (a primary, or a promoted replica).
node_is_primary() {
    [[ "$(node_sql "$1" -c 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" == t ]]
}

# The timeline a node out of recovery writes on (the name of its current WAL file changes at
# the promotion, pg_control_checkpoint() only at the checkpoint after it).
node_timeline() {
    node_sql "$1" -c "SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int" 2>/dev/null
}

cmd_start_primary() {
    take_lock
    load_ports
    node_exists primary || die "primary does not exist (run: $PROG up)"
    start_node primary
    local node
    for node in replica1 replica2; do
        if node_is_primary "$node"; then
            echo "primary: running beside $node, which was promoted (timeline $(node_timeline "$node")); primary is on timeline $(node_timeline primary)"
            return 0
        fi
    done
    wait_for_streaming
    echo "primary: running, replicas streaming"
}

cmd_promote() {
    local node
    node="$(replica_node "$1")"
    take_lock
    load_ports
    require_running_replica "$node"
    if ! node_is_primary "$node"; then
        note "promoting $node"
        as_pg "$BINDIR/pg_ctl" -D "$(node_dir "$node")" -w -t 60 promote >/dev/null ||
            die "$node was not promoted; see $(node_log "$node")"
        # pg_ctl -w waits for the promotion; make sure new sessions see it.
        local deadline=$((SECONDS + 30))
        until node_is_primary "$node"; do
            ((SECONDS < deadline)) || die "$node still reports it is in recovery 30 s after pg_ctl promote"
            sleep 0.05
        done
    fi
    echo "$node: promoted, timeline $(node_timeline "$node")"
}

# Whether replica node streams from the primary (its slot is active and streaming).
replica_streams() {
    [[ "$(node_sql primary -c "
        SELECT count(*) FROM pg_replication_slots s
        JOIN pg_stat_replication r ON r.pid = s.active_pid
        WHERE s.slot_name = '$1' AND r.state = 'streaming'" 2>/dev/null)" == 1 ]]
}

cmd_rebuild() {
    take_lock
    load_ports
    local node
    if [[ ! -f "$CLUSTER_ENV" ]] || ! node_exists primary; then
        note "no cluster to rebuild; making a new one"
        exec 9>&-
        cmd_up
        return
    fi
    # Every node that can run, runs (a stopped old primary starts on its old timeline).
    for node in "${NODES[@]}"; do
        node_exists "$node" && ! node_accepting "$node" && { start_node "$node" || true; }
    done
    # The new primary: out of recovery on the highest timeline, the primary/ node on a tie.
    local best="" best_tl=0 tl
    for node in "${NODES[@]}"; do
        node_is_primary "$node" || continue
        tl="$(node_timeline "$node")"
        if [[ -n "$tl" ]] && ((tl > best_tl)); then best="$node" best_tl="$tl"; fi
    done
    if [[ -z "$best" ]]; then
        note "no node is out of recovery; making a new cluster"
        exec 9>&-
        cmd_destroy
        cmd_up
        return
    fi
    if [[ "$best" != primary ]]; then
        note "$best (timeline $best_tl) becomes the primary; the old primary's data is dropped"
        for node in replica2 replica1 primary; do
            node_running "$node" && { as_pg "$BINDIR/pg_ctl" -D "$(node_dir "$node")" -m immediate -w -t 60 stop >/dev/null || true; }
        done
        rm -rf "$(node_dir primary)"
        mv "$(node_dir "$best")" "$(node_dir primary)"
        rm -f "$(node_dir primary)/standby.signal" "$(node_dir primary)/postmaster.pid"
        write_node_conf primary
        start_node primary
        # What it had as a replica must not reach the replicas copied from it.
        node_sql primary -c 'ALTER SYSTEM RESET primary_conninfo' \
            -c 'ALTER SYSTEM RESET primary_slot_name' \
            -c 'ALTER SYSTEM RESET recovery_min_apply_delay' -c 'SELECT pg_reload_conf()' >/dev/null
    fi
    for node in replica1 replica2; do
        if node_exists "$node" && replica_streams "$node"; then continue; fi
        if node_running "$node"; then
            as_pg "$BINDIR/pg_ctl" -D "$(node_dir "$node")" -m immediate -w -t 60 stop >/dev/null || true
        fi
        rm -rf "$(node_dir "$node")"
        create_replica "$node"
        start_node "$node"
    done
    wait_for_streaming
    cmd_status
}

cmd_delay() {
    local node
    node="$(replica_node "$1")"
    take_lock
    load_ports
    set_apply_delay "$node" "$2"
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
main() {
    local cmd="${1:-}"
    [[ -n "$cmd" ]] || usage_error "missing COMMAND"
    shift

    # Argument counts first, so bad usage never touches anything.
    case "$cmd" in
    help | -h | --help)
        usage
        return 0
        ;;
    up | down | status | destroy | tls-on | start-primary | rebuild) (($# == 0)) || usage_error "'$cmd' takes no arguments" ;;
    stop-primary) (($# <= 1)) || usage_error "usage: $PROG stop-primary [fast|immediate]" ;;
    pause | resume | stop | start | promote) (($# == 1)) || usage_error "usage: $PROG $cmd N   (N = 1 or 2)" ;;
    delay) (($# == 2)) || usage_error "usage: $PROG delay N DURATION   (e.g. delay 2 2s; delay 2 0 clears)" ;;
    *) usage_error "unknown command '$cmd'" ;;
    esac

    find_bindir
    check_os_user

    case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    destroy) cmd_destroy ;;
    status) cmd_status ;;
    tls-on) cmd_tls_on ;;
    pause) cmd_pause "$1" ;;
    resume) cmd_resume "$1" ;;
    stop) cmd_stop "$1" ;;
    start) cmd_start "$1" ;;
    stop-primary) cmd_stop_primary "${1:-fast}" ;;
    start-primary) cmd_start_primary ;;
    promote) cmd_promote "$1" ;;
    rebuild) cmd_rebuild ;;
    delay) cmd_delay "$1" "$2" ;;
    esac
}

main "$@"
