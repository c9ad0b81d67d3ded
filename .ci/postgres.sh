# Sourced by .ci/run: a throwaway PostgreSQL server for the tuner's multi-machine tests
# (tests/tune/test_postgres.py). Installs the `postgresql` Debian package when no server
# binaries exist, starts a server on a temporary directory and a free port on 127.0.0.1 (as the
# `postgres` or `nobody` user when run as root: PostgreSQL refuses root), exports
# GENLAB_TEST_POSTGRES_URL for the tests, and stops the server when .ci/run exits. Where no
# server can be had, the tests that need one skip.

pg_bin=""
find_pg() {
    local on_path
    on_path="$(command -v pg_ctl 2>/dev/null || true)"
    for d in ${on_path:+"$(dirname "$(readlink -f "$on_path")")"} /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            pg_bin="$d"
            return 0
        fi
    done
    return 1
}

if ! find_pg; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    { $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            postgresql >/dev/null; } ||
        echo ".ci: could not install postgresql; its tests will skip" >&2
    find_pg || true
fi

if [ -n "$pg_bin" ]; then
    pg_dir="$(mktemp -d /tmp/genlab-ci-pg.XXXXXX)"
    pg_as=()
    if [ "$(id -u)" = 0 ]; then
        pg_user=postgres
        id "$pg_user" >/dev/null 2>&1 || pg_user=nobody
        chown "$pg_user" "$pg_dir"
        pg_as=(runuser -u "$pg_user" --)
    fi
    pg_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    ${pg_as[@]+"${pg_as[@]}"} "$pg_bin/initdb" -D "$pg_dir/data" -U genlab --auth=trust >/dev/null
    ${pg_as[@]+"${pg_as[@]}"} "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pg_dir -c fsync=off" start >/dev/null
    stop_pg() {
        ${pg_as[@]+"${pg_as[@]}"} "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1
        rm -rf "$pg_dir"
    }
    trap stop_pg EXIT
    export GENLAB_TEST_POSTGRES_URL="postgresql://genlab@127.0.0.1:$pg_port/postgres"
fi
