#!/usr/bin/env bash
# dev/patroni.sh — a local Patroni cluster for pgsplit's high-availability test.
#
# One etcd and three PostgreSQL 15 nodes managed by Patroni (Debian's `patroni` and
# `etcd-server` packages), all on 127.0.0.1, so tests/patroni.rs can run `patronictl
# switchover` and `patronictl failover` under load through pgsplit. Apart from its ports
# it looks like the dev cluster of dev/cluster.sh: the same users and databases
# (dev/roles.sql), so pgsplit's config.toml works unchanged but for the nodes.
#
#   pg1  127.0.0.1:16432   Patroni REST 127.0.0.1:18008
#   pg2  127.0.0.1:16433   Patroni REST 127.0.0.1:18009
#   pg3  127.0.0.1:16434   Patroni REST 127.0.0.1:18010
#   pg4  127.0.0.1:16435   Patroni REST 127.0.0.1:18011  (only after `add`: a member that
#                          joins a running cluster, for pgsplit's members from Patroni)
#   etcd 127.0.0.1:12379 (clients), 12380 (peers)
#
# Whichever node Patroni bootstraps leads; the others stream from it. Short timings (ttl
# 10 s, loop_wait 1 s, retry_timeout 3 s) make a failover take seconds; use_pg_rewind lets
# a former leader rejoin as a replica. As root, Patroni, etcd and PostgreSQL run as the
# `postgres` OS user (the server refuses to run as root).
#
# Run `dev/patroni.sh help` for commands and environment variables.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Only for the PostgreSQL client binaries (PSQL) and port_open.
# shellcheck source=dev/lib.sh
source "$REPO_ROOT/dev/lib.sh"

PROG="$(basename "$0")"
DIR="${PGSPLIT_PATRONI_DIR:-/tmp/pgsplit-patroni}"
DIR="${DIR%/}"
# Written at creation; later commands use the ports the cluster was built with.
ENV_FILE="$DIR/patroni.env"
LOCK_FILE="$DIR.lock"
PLOG_DIR="$DIR/log"
PSOCK_DIR="$DIR/sock"
RUN_DIR="$DIR/run"
BINDIR="${PGSPLIT_PG_BINDIR:-/usr/lib/postgresql/15/bin}"
SCOPE=pgsplit
# The members `up` starts; EXTRA is the one `add` starts in a running cluster.
MEMBERS=(pg1 pg2 pg3)
EXTRA=pg4
ALL_MEMBERS=("${MEMBERS[@]}" "$EXTRA")
declare -A PG_PORT=(
    [pg1]="${PGSPLIT_PATRONI_PORT1:-16432}"
    [pg2]="${PGSPLIT_PATRONI_PORT2:-16433}"
    [pg3]="${PGSPLIT_PATRONI_PORT3:-16434}"
    [pg4]="${PGSPLIT_PATRONI_PORT4:-16435}"
)
declare -A REST_PORT=(
    [pg1]="${PGSPLIT_PATRONI_REST_PORT1:-18008}"
    [pg2]="${PGSPLIT_PATRONI_REST_PORT2:-18009}"
    [pg3]="${PGSPLIT_PATRONI_REST_PORT3:-18010}"
    [pg4]="${PGSPLIT_PATRONI_REST_PORT4:-18011}"
)
ETCD_PORT="${PGSPLIT_PATRONI_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${PGSPLIT_PATRONI_ETCD_PEER_PORT:-12380}"
UP_TIMEOUT=120     # seconds `up` waits for a leader and two streaming replicas
SWITCH_TIMEOUT=60  # seconds switchover/failover wait for the new leader

usage() {
    cat <<EOF
Usage: $PROG COMMAND [ARGS]

One etcd and three Patroni-managed PostgreSQL 15 nodes on 127.0.0.1.

Commands:
  up                   create (first time) or start whatever is not running; returns once
                       there is a leader and both other members stream from it (up to
                       ${UP_TIMEOUT} s). Prints patronictl list. Safe to run when already up.
  down                 stop the three Patroni (each stops its PostgreSQL), then etcd
  destroy              down, then delete $DIR
  status               patronictl list; exit 0 when a leader runs and both replicas stream
  leader               the name of the current leader (e.g. pg1)
  switchover [NAME]    patronictl switchover --force to member NAME (default: a replica);
                       returns once NAME leads
  failover [NAME]      patronictl failover --force to NAME (default: a replica); the same
  add [--noloadbalance]
                       start a fourth member, $EXTRA, in the running cluster (a new replica,
                       copied from the leader; tagged noloadbalance if asked); returns once
                       it streams and Patroni's /cluster lists it
  tag NAME TAG         set member NAME's tags to TAG (noloadbalance, or none) and reload its
                       Patroni; returns once /cluster shows the change
  remove               stop $EXTRA and delete its data; returns once /cluster no longer
                       lists it
  help                 this text

Members (ports fixed when the cluster is created):
  pg1  127.0.0.1:${PG_PORT[pg1]}  REST 127.0.0.1:${REST_PORT[pg1]}
  pg2  127.0.0.1:${PG_PORT[pg2]}  REST 127.0.0.1:${REST_PORT[pg2]}
  pg3  127.0.0.1:${PG_PORT[pg3]}  REST 127.0.0.1:${REST_PORT[pg3]}
  pg4  127.0.0.1:${PG_PORT[pg4]}  REST 127.0.0.1:${REST_PORT[pg4]}  (add)
  etcd 127.0.0.1:$ETCD_PORT (peers $ETCD_PEER_PORT), Patroni scope '$SCOPE'

Database users: as dev/cluster.sh (postgres/postgres, app/secret, app_md5/secret, replicator
trusted for replication; dev/roles.sql). Over the unix socket ($PSOCK_DIR) all are trusted.

Environment:
  PGSPLIT_PATRONI_DIR                  directory (default /tmp/pgsplit-patroni)
  PGSPLIT_PATRONI_PORT1..4             PostgreSQL ports (default 16432-16435)
  PGSPLIT_PATRONI_REST_PORT1..4        Patroni REST API ports (default 18008-18011)
  PGSPLIT_PATRONI_ETCD_PORT            etcd client port (default 12379)
  PGSPLIT_PATRONI_ETCD_PEER_PORT       etcd peer port (default 12380)
  PGSPLIT_PG_BINDIR                    PostgreSQL 15 server binaries
                                       (default /usr/lib/postgresql/15/bin)
Ports are only read when the cluster is created; destroy to change them.

Logs: $PLOG_DIR/{etcd,pg1,pg2,pg3,pg4}.log (Patroni), $PLOG_DIR/pgN.postgres.log (PostgreSQL)
EOF
}

die() { lib_die "$@"; }
note() { lib_note "$@"; }

take_lock() {
    mkdir -p "$(dirname "$LOCK_FILE")"
    exec 9>>"$LOCK_FILE"
    flock -w 300 9 || die "another $PROG is still busy with $DIR (lock $LOCK_FILE)"
}

check_tools() {
    local tool
    for tool in patroni patronictl etcd python3; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool not found; install with: apt-get install --no-install-recommends patroni etcd-server"
    done
    [[ -x "$BINDIR/postgres" && -x "$BINDIR/pg_rewind" ]] ||
        die "PostgreSQL 15 server binaries not found in $BINDIR; install with: apt-get install postgresql-15"
    if is_root; then
        id postgres >/dev/null 2>&1 || die "OS user 'postgres' does not exist (it comes with postgresql-15)"
    fi
}

# The ports the cluster was created with override the environment.
load_ports() {
    [[ -f "$ENV_FILE" ]] || return 0
    local key value
    while IFS='=' read -r key value; do
        case "$key" in
        PORT_pg[1234]) PG_PORT[${key#PORT_}]="$value" ;;
        REST_pg[1234]) REST_PORT[${key#REST_}]="$value" ;;
        ETCD_PORT) ETCD_PORT="$value" ;;
        ETCD_PEER_PORT) ETCD_PEER_PORT="$value" ;;
        esac
    done <"$ENV_FILE"
}

config_file() { echo "$DIR/$1/patroni.yml"; }
pid_file() { echo "$RUN_DIR/$1.pid"; }

# Whether the process in NAME's pid file is alive and still ours (its command line names
# our directory).
running() {
    local pid
    pid="$(cat "$(pid_file "$1")" 2>/dev/null)" || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR"
}

# Starts "$@" as the postgres user in a session of its own, detached from us (stdin
# /dev/null, output appended to log/NAME.log), and records its pid.
start_daemon() {
    local name="$1" log="$PLOG_DIR/$1.log"
    shift
    touch "$log"
    give_to_pg "$log"
    as_pg setsid bash -c 'echo $$ >"$0"; exec "$@"' "$(pid_file "$name")" "$@" \
        </dev/null >>"$log" 2>&1 9>&- &
    local deadline=$((SECONDS + 10))
    until running "$name"; do
        ((SECONDS < deadline)) || die "$name did not start; see $log"
        sleep 0.1
    done
}

# Sends SIGTERM to NAME and waits up to SECS for it to exit; then SIGKILL.
stop_daemon() {
    local name="$1" secs="$2" pid
    running "$name" || return 0
    pid="$(cat "$(pid_file "$name")")"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + secs))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            note "$name (pid $pid) did not exit after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$(pid_file "$name")"
}

# psql over the unix socket to member NAME as superuser postgres (trusted), database postgres.
member_sql() {
    local name="$1"
    shift
    "$PSQL" -X -w -q -At -v ON_ERROR_STOP=1 -h "$PSOCK_DIR" -p "${PG_PORT[$name]}" -U postgres \
        -d postgres "$@"
}

patronictl_() {
    patronictl -c "$(config_file pg1)" "$@" </dev/null
}

# patronictl list as lines of "member role state timeline" (role: Leader, Replica, ...).
members() {
    patronictl_ list -f json 2>/dev/null | python3 -c '
import json, sys
for m in json.load(sys.stdin):
    print(m.get("Member"), m.get("Role", "-").replace(" ", "_"), m.get("State", "-").replace(" ", "_"), m.get("TL", "-"))
'
}

# The running leader's name, or nothing.
current_leader() {
    members | awk '$2 == "Leader" && $3 == "running" { print $1; exit }'
}

# Whether there is a running leader, out of recovery, with both other members streaming
# (and pg4 too, while it runs).
healthy() {
    local leader want=2
    leader="$(current_leader)"
    [[ -n "$leader" ]] || return 1
    running "$EXTRA" && want=3
    [[ "$(member_sql "$leader" -c "SELECT NOT pg_is_in_recovery() AND
        (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming') >= $want" 2>/dev/null)" == t ]]
}

# Patroni's /cluster as lines of "member role state noloadbalance" (from pg1's REST API).
cluster_members() {
    python3 - "http://127.0.0.1:${REST_PORT[pg1]}/cluster" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    for m in json.load(r)["members"]:
        tags = m.get("tags") or {}
        print(m["name"], m.get("role", "-"), m.get("state", "-"), str(bool(tags.get("noloadbalance"))).lower())
PY
}

# Waits up to SECS for `cluster_members | awk PROGRAM` to print something.
await_cluster() {
    local secs="$1" program="$2" what="$3"
    local deadline=$((SECONDS + secs))
    until [[ -n "$(cluster_members | awk "$program")" ]]; do
        ((SECONDS < deadline)) || die "Patroni's /cluster did not show $what within $secs s"
        sleep 0.3
    done
}

make_dir() {
    mkdir -p "$DIR" "$PLOG_DIR" "$PSOCK_DIR" "$RUN_DIR" "$DIR/etcd"
    touch "$DIR/.pgsplit-patroni"
    local name
    if [[ ! -f "$ENV_FILE" ]]; then
        {
            for name in "${ALL_MEMBERS[@]}"; do
                echo "PORT_$name=${PG_PORT[$name]}"
                echo "REST_$name=${REST_PORT[$name]}"
            done
            echo "ETCD_PORT=$ETCD_PORT"
            echo "ETCD_PEER_PORT=$ETCD_PEER_PORT"
        } >"$ENV_FILE"
    fi
    cp "$REPO_ROOT/dev/roles.sql" "$DIR/roles.sql"
    cat >"$DIR/post_bootstrap.sh" <<EOF
#!/bin/sh
# Run by Patroni once, on the node it bootstraps, with a superuser connection string.
exec "$PSQL" -X -q -v ON_ERROR_STOP=1 -d "\$1" -f "$DIR/roles.sql"
EOF
    chmod 0755 "$DIR/post_bootstrap.sh"
    chmod 0700 "$DIR/etcd"
    for name in "${MEMBERS[@]}"; do
        mkdir -p "$DIR/$name"
        write_config "$name"
    done
    give_to_pg -R "$DIR"
    chmod 0755 "$DIR"
    if is_root; then
        runuser -u postgres -- test -w "$DIR" ||
            die "the postgres OS user cannot write to $DIR; set PGSPLIT_PATRONI_DIR elsewhere"
    fi
}

# Writes NAME's patroni.yml; tagged noloadbalance while the file NAME/noloadbalance exists.
write_config() {
    local name="$1" tags=""
    if [[ -f "$DIR/$name/noloadbalance" ]]; then
        tags=$'tags:\n  noloadbalance: true'
    fi
    cat >"$(config_file "$name")" <<EOF
# Written by dev/patroni.sh.
scope: $SCOPE
namespace: /pgsplit-dev/
name: $name
log:
  level: INFO
restapi:
  listen: 127.0.0.1:${REST_PORT[$name]}
  connect_address: 127.0.0.1:${REST_PORT[$name]}
etcd3:
  hosts: 127.0.0.1:$ETCD_PORT
bootstrap:
  dcs:
    # Failovers in seconds. Patroni needs ttl >= loop_wait + 2 * retry_timeout.
    ttl: 10
    loop_wait: 1
    retry_timeout: 3
    maximum_lag_on_failover: 16777216
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        max_connections: 300
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 1GB
        wal_log_hints: 'on'
        hot_standby: 'on'
        hot_standby_feedback: 'on'
        wal_receiver_status_interval: 1s
        shared_buffers: 64MB
        # A throwaway cluster: no fsync (the kernel keeps what was written). Commits and
        # full-page writes stay as in production: pg_rewind needs full_page_writes.
        fsync: 'off'
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
    - auth-local: trust
    - auth-host: scram-sha-256
  post_bootstrap: $DIR/post_bootstrap.sh
postgresql:
  listen: 127.0.0.1:${PG_PORT[$name]}
  connect_address: 127.0.0.1:${PG_PORT[$name]}
  data_dir: $DIR/$name/data
  bin_dir: $BINDIR
  pgpass: $DIR/$name/pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  parameters:
    unix_socket_directories: '$PSOCK_DIR'
    logging_collector: 'on'
    log_directory: '$PLOG_DIR'
    log_filename: '$name.postgres.log'
    log_line_prefix: '%m [%p] %q%u@%d '
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 trust
    - host all app_md5 127.0.0.1/32 md5
    - host all all 127.0.0.1/32 scram-sha-256
  # Replicas are copied at once, not after a spread checkpoint (minutes).
  basebackup:
    - checkpoint: fast
  # A former leader that cannot be rewound is copied again instead of left broken.
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
$tags
EOF
}

start_etcd() {
    running etcd && return 0
    port_open "$ETCD_PORT" && die "port $ETCD_PORT is in use by another process; etcd cannot start"
    note "starting etcd on 127.0.0.1:$ETCD_PORT (log: $PLOG_DIR/etcd.log)"
    start_daemon etcd etcd --name pgsplit-etcd --data-dir "$DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "pgsplit-etcd=http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster-state new --initial-cluster-token pgsplit-patroni-dev
    local deadline=$((SECONDS + 30))
    until port_open "$ETCD_PORT"; do
        running etcd || die "etcd exited; see $PLOG_DIR/etcd.log"
        ((SECONDS < deadline)) || die "etcd did not listen on $ETCD_PORT within 30 s; see $PLOG_DIR/etcd.log"
        sleep 0.2
    done
}

start_member() {
    local name="$1"
    running "$name" && return 0
    port_open "${REST_PORT[$name]}" &&
        die "port ${REST_PORT[$name]} is in use by another process; Patroni $name cannot start"
    # A PostgreSQL of ours left running (its Patroni was killed) is taken over by Patroni.
    if port_open "${PG_PORT[$name]}" && [[ ! -f "$DIR/$name/data/postmaster.pid" ]]; then
        die "port ${PG_PORT[$name]} is in use by another process; $name cannot start"
    fi
    note "starting Patroni $name (PostgreSQL 127.0.0.1:${PG_PORT[$name]}, log: $PLOG_DIR/$name.log)"
    start_daemon "$name" patroni "$(config_file "$name")"
}

cmd_up() {
    take_lock
    load_ports
    make_dir
    start_etcd
    # The first one bootstraps (it takes the initialize key); the others copy it.
    local name
    for name in "${MEMBERS[@]}"; do start_member "$name"; done
    local deadline=$((SECONDS + UP_TIMEOUT))
    until healthy; do
        for name in etcd "${MEMBERS[@]}"; do
            running "$name" || die "$name exited; see $PLOG_DIR/$name.log"
        done
        if ((SECONDS >= deadline)); then
            patronictl_ list >&2 || true
            for name in "${MEMBERS[@]}"; do
                echo "--- last lines of $PLOG_DIR/$name.log ---" >&2
                tail -n 10 "$PLOG_DIR/$name.log" | sed 's/^/    /' >&2 || true
            done
            die "no leader with two streaming replicas after ${UP_TIMEOUT} s"
        fi
        sleep 0.5
    done
    patronictl_ list
}

cmd_down() {
    take_lock
    [[ -d "$RUN_DIR" ]] || return 0
    local name pid
    # All at once: each Patroni stops its PostgreSQL (fast) before it exits.
    for name in "${ALL_MEMBERS[@]}"; do
        if running "$name"; then
            note "stopping Patroni $name"
            pid="$(cat "$(pid_file "$name")")"
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for name in "${ALL_MEMBERS[@]}"; do stop_daemon "$name" 60; done
    # A PostgreSQL left behind by a killed Patroni.
    for name in "${ALL_MEMBERS[@]}"; do
        if [[ -f "$DIR/$name/data/postmaster.pid" ]]; then
            as_pg "$BINDIR/pg_ctl" -D "$DIR/$name/data" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
        fi
    done
    if running etcd; then
        note "stopping etcd"
        stop_daemon etcd 30
    fi
}

cmd_destroy() {
    cmd_down
    lib_remove_marked_dir "$DIR" .pgsplit-patroni "a pgsplit Patroni cluster"
}

cmd_status() {
    load_ports
    [[ -f "$(config_file pg1)" ]] || {
        echo "no Patroni cluster in $DIR (run: $PROG up)"
        return 1
    }
    running etcd || {
        echo "etcd is not running (run: $PROG up)"
        return 1
    }
    patronictl_ list
    healthy
}

cmd_leader() {
    load_ports
    local leader
    leader="$(current_leader)"
    [[ -n "$leader" ]] || die "no running leader"
    echo "$leader"
}

# switchover|failover [CANDIDATE]
cmd_switch() {
    local action="$1" candidate="${2:-}" leader
    take_lock
    load_ports
    leader="$(current_leader)"
    [[ -n "$leader" ]] || die "no running leader to $action from"
    if [[ -z "$candidate" ]]; then
        candidate="$(members | awk -v l="$leader" '$1 != l && $2 == "Replica" && ($3 == "running" || $3 == "streaming") { print $1; exit }')"
        [[ -n "$candidate" ]] || die "no running replica to $action to"
    fi
    [[ "$candidate" != "$leader" ]] || die "$candidate already leads"
    note "$action from $leader to $candidate"
    patronictl_ "$action" --leader "$leader" --candidate "$candidate" --force "$SCOPE" ||
        die "patronictl $action failed"
    local deadline=$((SECONDS + SWITCH_TIMEOUT))
    until [[ "$(current_leader)" == "$candidate" &&
        "$(member_sql "$candidate" -c 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" == t ]]; do
        ((SECONDS < deadline)) || die "$candidate does not lead ${SWITCH_TIMEOUT} s after patronictl $action"
        sleep 0.2
    done
    echo "$candidate leads"
}

cmd_add() {
    local nlb="${1:-}"
    take_lock
    load_ports
    [[ -f "$(config_file pg1)" ]] && running etcd || die "the cluster is not up (run: $PROG up)"
    [[ -n "$(current_leader)" ]] || die "no running leader to copy $EXTRA from"
    mkdir -p "$DIR/$EXTRA"
    if [[ "$nlb" == --noloadbalance ]]; then
        touch "$DIR/$EXTRA/noloadbalance"
    else
        rm -f "$DIR/$EXTRA/noloadbalance"
    fi
    write_config "$EXTRA"
    give_to_pg -R "$DIR/$EXTRA"
    start_member "$EXTRA"
    local deadline=$((SECONDS + UP_TIMEOUT))
    until healthy; do
        running "$EXTRA" || die "$EXTRA exited; see $PLOG_DIR/$EXTRA.log"
        ((SECONDS < deadline)) || die "$EXTRA does not stream ${UP_TIMEOUT} s after it started; see $PLOG_DIR/$EXTRA.log"
        sleep 0.5
    done
    await_cluster 30 "\$1 == \"$EXTRA\"" "$EXTRA"
    patronictl_ list
}

# tag NAME noloadbalance|none
cmd_tag() {
    local name="$1" tag="$2" want
    take_lock
    load_ports
    [[ -v "PG_PORT[$name]" ]] || die "no member $name"
    running "$name" || die "$name is not running"
    case "$tag" in
    noloadbalance)
        touch "$DIR/$name/noloadbalance"
        want=true
        ;;
    none)
        rm -f "$DIR/$name/noloadbalance"
        want=false
        ;;
    *) die "unknown tag '$tag' (noloadbalance or none)" ;;
    esac
    write_config "$name"
    give_to_pg "$(config_file "$name")"
    # Patroni reads its configuration file again on SIGHUP, tags included.
    kill -HUP "$(cat "$(pid_file "$name")")"
    await_cluster 30 "\$1 == \"$name\" && \$4 == \"$want\"" "$name with noloadbalance=$want"
    echo "$name: noloadbalance=$want"
}

cmd_remove() {
    take_lock
    load_ports
    if running "$EXTRA"; then
        note "stopping Patroni $EXTRA"
        stop_daemon "$EXTRA" 60
    fi
    if [[ -f "$DIR/$EXTRA/data/postmaster.pid" ]]; then
        as_pg "$BINDIR/pg_ctl" -D "$DIR/$EXTRA/data" -m immediate -w -t 60 stop >/dev/null 2>&1 || true
    fi
    rm -rf "${DIR:?}/$EXTRA"
    # A member that stops cleanly deletes its key; else it expires after ttl (10 s).
    if running etcd; then
        local deadline=$((SECONDS + 30))
        while cluster_members | awk -v m="$EXTRA" '$1 == m { found = 1 } END { exit !found }'; do
            ((SECONDS < deadline)) || die "Patroni's /cluster still lists $EXTRA 30 s after it stopped"
            sleep 0.3
        done
    fi
}

main() {
    local cmd="${1:-}"
    [[ -n "$cmd" ]] || {
        usage >&2
        exit 2
    }
    shift
    case "$cmd" in
    help | -h | --help)
        usage
        return 0
        ;;
    up | down | destroy | status | leader | remove) (($# == 0)) || die "'$cmd' takes no arguments" ;;
    add) (($# == 0)) || [[ $# == 1 && "$1" == --noloadbalance ]] || die "usage: $PROG add [--noloadbalance]" ;;
    tag) (($# == 2)) || die "usage: $PROG tag MEMBER noloadbalance|none" ;;
    switchover | failover) (($# <= 1)) || die "usage: $PROG $cmd [MEMBER]" ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
    check_tools
    case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    destroy) cmd_destroy ;;
    status) cmd_status ;;
    leader) cmd_leader ;;
    add) cmd_add "${1:-}" ;;
    tag) cmd_tag "$1" "$2" ;;
    remove) cmd_remove ;;
    switchover | failover) cmd_switch "$cmd" "${1:-}" ;;
    esac
}

main "$@"
