# Sourced by the benches: starts a throwaway PostgreSQL (Debian's `postgresql`; scripts/setup
# installs it) on loopback in a temp dir, stopped and removed when the script exits.
#   start_throwaway_pg FSYNC   (on|off) sets pg_bin, pg_dir, pg_port, pg_pid and pg_url.
# PostgreSQL refuses to run as root: as root, its files belong to `nobody` and its programs run
# as that user. Without root it runs as you.

pg_bin=""
if command -v initdb >/dev/null; then
    pg_bin=$(dirname "$(readlink -f "$(command -v initdb)")")
else
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -n1)
fi

pg_dir=""
pg_started=""
pg_user=""

pg_cleanup() {
    if [ -n "$pg_started" ]; then
        as_pg "$pg_bin/pg_ctl" stop -D "$pg_dir/pg" -m fast -w >/dev/null 2>&1 || true
    fi
    [ -z "$pg_dir" ] || rm -rf "$pg_dir"
}

as_pg() {
    if [ -n "$pg_user" ]; then
        setpriv --reuid="$pg_user" --regid="$(id -g "$pg_user")" --clear-groups "$@"
    else
        "$@"
    fi
}

start_throwaway_pg() {
    local fsync=$1
    [ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] && [ -x "$pg_bin/pg_ctl" ] && [ -x "$pg_bin/psql" ] || {
        echo "PostgreSQL is not installed (scripts/setup, or apt-get install postgresql)" >&2
        return 1
    }
    pg_dir=$(mktemp -d)
    trap 'trap - EXIT; pg_cleanup' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if [ "$(id -u)" = 0 ]; then
        pg_user=nobody
        chmod 711 "$pg_dir" # mktemp's 0700 would keep `nobody` out
    fi
    mkdir -p "$pg_dir/pg"
    [ -z "$pg_user" ] || chown "$pg_user:" "$pg_dir/pg"
    as_pg "$pg_bin/initdb" -D "$pg_dir/pg" -A trust -U pool -E UTF8 --no-locale >"$pg_dir/initdb.log" 2>&1 || {
        echo "initdb failed: $(tail -n 5 "$pg_dir/initdb.log")" >&2
        return 1
    }
    cat >>"$pg_dir/pg/postgresql.conf" <<'CONF'
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
CONF
    # A loopback port that was free a moment ago.
    pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$pg_bin/pg_ctl" start -D "$pg_dir/pg" -l "$pg_dir/pg/postgres.log" -w -t 60 \
        -o "-p $pg_port -c fsync=$fsync -c max_connections=200" >/dev/null || {
        echo "PostgreSQL does not start; its log ends: $(tail -n 5 "$pg_dir/pg/postgres.log")" >&2
        return 1
    }
    pg_started=1
    "$pg_bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U pool -d postgres -c 'CREATE DATABASE pool' || return 1
    pg_pid=$(head -n1 "$pg_dir/pg/postmaster.pid")
    pg_url="postgres://pool@127.0.0.1:$pg_port/pool"
    echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pg_port, fsync=$fsync"
}
