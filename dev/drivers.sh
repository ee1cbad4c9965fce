#!/usr/bin/env bash
# dev/drivers.sh — installs the drivers of the driver matrix (tests/drivers.rs) into
# PGSPLIT_DRIVERS_DIR (default /tmp/pgsplit-drivers), once:
#   asyncpg          a Python venv (python3 -m venv) with asyncpg from PyPI
#   node-postgres    pg and pg-copy-streams from the npm registry (node and npm needed)
#   PostgreSQL JDBC  Debian's libpostgresql-jdbc-java, run by a Java runtime
#   Go lib/pq        Debian's golang-github-lib-pq-dev, built with Debian's Go in GOPATH mode
# Versions are pinned below. As root it installs what is missing from Debian (Java, Node.js,
# the JDBC driver, python3-venv); otherwise it says what to install. dev/test.sh runs it.
set -euo pipefail

case "${1:-}" in
-h | --help)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

DIR="${PGSPLIT_DRIVERS_DIR:-/tmp/pgsplit-drivers}"
ASYNCPG_VERSION=0.32.0
PG_VERSION=8.23.1
PG_COPY_STREAMS_VERSION=7.0.0
JDBC_JAR=/usr/share/java/postgresql.jar

say() { echo "drivers.sh: $*"; }
die() {
    echo "drivers.sh: error: $*" >&2
    exit 1
}

# Debian packages for what is missing, as root.
missing=()
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
[[ -f "$JDBC_JAR" ]] || missing+=(libpostgresql-jdbc-java)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[[ -d /usr/share/gocode/src/github.com/lib/pq ]] || missing+=(golang-github-lib-pq-dev)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if ((${#missing[@]} > 0)); then
    [[ "$(id -u)" == 0 ]] || die "missing: ${missing[*]} (apt-get install ${missing[*]})"
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
    fi
fi

mkdir -p "$DIR"
if [[ "$("$DIR/venv/bin/python" -c 'import asyncpg; print(asyncpg.__version__)' 2>/dev/null)" != "$ASYNCPG_VERSION" ]]; then
    say "asyncpg $ASYNCPG_VERSION into $DIR/venv"
    python3 -m venv "$DIR/venv"
    "$DIR/venv/bin/pip" install -q "asyncpg==$ASYNCPG_VERSION"
fi
if ! grep -qs "\"version\": \"$PG_VERSION\"" "$DIR/node/node_modules/pg/package.json" ||
    ! grep -qs "\"version\": \"$PG_COPY_STREAMS_VERSION\"" "$DIR/node/node_modules/pg-copy-streams/package.json"; then
    say "pg $PG_VERSION and pg-copy-streams $PG_COPY_STREAMS_VERSION into $DIR/node"
    npm install --silent --no-audit --no-fund --prefix "$DIR/node" \
        "pg@$PG_VERSION" "pg-copy-streams@$PG_COPY_STREAMS_VERSION"
fi
say "asyncpg $ASYNCPG_VERSION, pg $PG_VERSION, JDBC, Go $(go env GOVERSION) with lib/pq ready in $DIR"
