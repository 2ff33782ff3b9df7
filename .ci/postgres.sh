# CI: a throwaway PostgreSQL server for the tests, sourced by .ci/run.
#
# start_test_postgres installs the server from Debian's packages if it is not
# there, makes a cluster in a temporary folder (trust authentication, listening
# on 127.0.0.1 only, on a free port), starts it, exports
# STASIS_TEST_POSTGRES_URL for the tests (tests/postgres_support.py), and stops
# and removes it when the script exits. As root, the server's commands run as
# the postgres user: initdb refuses to run as root.

# The folder holding initdb and pg_ctl: PATH first, then Debian's newest.
_postgres_bin() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return
    fi
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$found" ] && [ -x "$found/initdb" ] && echo "$found"
}

_as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

_stop_test_postgres() {
    if [ -n "${_PG_DIR:-}" ]; then
        _as_postgres "$_PG_BIN/pg_ctl" -D "$_PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$_PG_DIR"
        _PG_DIR=
    fi
}

start_test_postgres() {
    _PG_BIN=$(_postgres_bin || true)
    if [ -z "$_PG_BIN" ]; then
        apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
        _PG_BIN=$(_postgres_bin)
    fi
    _PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stasis-ci-pg.XXXXXX")
    trap _stop_test_postgres EXIT
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$_PG_DIR"
    fi
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    _as_postgres "$_PG_BIN/initdb" -D "$_PG_DIR/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
    _as_postgres "$_PG_BIN/pg_ctl" -D "$_PG_DIR/data" -l "$_PG_DIR/server.log" -w \
        -o "-h 127.0.0.1 -p $port -k $_PG_DIR -F -c max_connections=200" start >/dev/null
    export STASIS_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
    echo "PostgreSQL $("$_PG_BIN/postgres" --version | awk '{print $3}') for the tests at $STASIS_TEST_POSTGRES_URL"
}
