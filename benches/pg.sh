# Shared by the bench scripts (sourced, not run): a throwaway PostgreSQL
# cluster on 127.0.0.1 and a free port, run as the `postgres` user when we
# are root (PostgreSQL refuses root). The caller defines `say` and `die`,
# calls start_postgres, and calls stop_postgres from its exit trap.
#
# Settings: STATEGRAPH_PG_BIN (server binaries), PG_DURABLE=on|off (fsync,
# synchronous_commit, full_page_writes), PG_SHARED_BUFFERS (default 256MB).
# After start_postgres: PG_BIN, PGROOT, PG_PORT, PG_URL, PG_VERSION.

PGROOT=""
PG_STARTED=0
PG_DURABLE=${PG_DURABLE:-on}

find_pg_bin() {
    if [[ -n ${STATEGRAPH_PG_BIN:-} ]]; then
        [[ -x $STATEGRAPH_PG_BIN/initdb ]] || die "STATEGRAPH_PG_BIN=$STATEGRAPH_PG_BIN has no initdb"
        echo "$STATEGRAPH_PG_BIN"
    elif command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(readlink -f "$(command -v initdb)")"
    else
        local dir
        dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
        [[ -n $dir && -x $dir/initdb ]] ||
            die "PostgreSQL server binaries not found (initdb, pg_ctl, postgres); install them (apt-get install postgresql) or set STATEGRAPH_PG_BIN"
        echo "$dir"
    fi
}

as_pg() {
    # PostgreSQL refuses to run as root: run its binaries as the postgres user.
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_postgres() {
    PG_BIN=$(find_pg_bin)
    PGROOT=$(mktemp -d "${TMPDIR:-/tmp}/sg-bench-pg.XXXXXX")
    mkdir -p "$PGROOT/sock"
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 ||
            die "running as root and there is no 'postgres' user to run PostgreSQL as (useradd --system postgres)"
        chown -R postgres: "$PGROOT"
    fi
    PG_PORT=$(free_port)
    as_pg "$PG_BIN/initdb" -D "$PGROOT/data" -U postgres --auth=trust -E UTF8 --no-sync \
        >"$PGROOT/initdb.log" 2>&1 || { cat "$PGROOT/initdb.log" >&2; die "initdb failed"; }
    {
        echo "# stategraph bench: throwaway cluster"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PG_PORT"
        echo "unix_socket_directories = '$PGROOT/sock'"
        echo "fsync = $PG_DURABLE"
        echo "synchronous_commit = $PG_DURABLE"
        echo "full_page_writes = $PG_DURABLE"
        echo "shared_buffers = ${PG_SHARED_BUFFERS:-256MB}"
        echo "max_wal_size = 8GB"
    } >>"$PGROOT/data/postgresql.conf"
    as_pg "$PG_BIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/postgres.log" -w -t 60 start >/dev/null ||
        { cat "$PGROOT/postgres.log" >&2; die "PostgreSQL did not start"; }
    PG_STARTED=1
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres stategraph ||
        die "createdb failed"
    PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/stategraph"
    PG_VERSION=$("$PG_BIN/postgres" --version)
    say "$PG_VERSION on 127.0.0.1:$PG_PORT, durable=$PG_DURABLE (data in $PGROOT)"
}

stop_postgres() {
    if [[ $PG_STARTED -eq 1 ]]; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGROOT/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [[ -n $PGROOT ]]; then
        rm -rf "$PGROOT"
    fi
    return 0
}
