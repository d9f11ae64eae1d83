# Throwaway PostgreSQL and Redis servers for the lease tests (the `lease`
# suite), sourced by .ci/run or by hand:
#
#   source .ci/servers.sh
#   start_postgres /tmp/pgci      # exports LSVC_TEST_PG, LSVC_TEST_PG_AUTH
#   start_redis /tmp/redisci      # exports LSVC_TEST_REDIS
#   meson test -C build --suite lease
#   stop_redis /tmp/redisci
#   stop_postgres /tmp/pgci
#
# Each server lives in its own directory, listens on a Unix socket there and
# on a free loopback port, and never touches the instances a distribution
# package may have started on the default ports. Works as root (initdb
# refuses root, so PostgreSQL then runs as the `postgres` user) and with no
# stdin. Every wait is bounded. The functions return nonzero on failure and
# print the server's log, so that they also work under `set -e`.

# A TCP port nothing listens on now, on 127.0.0.1. Another process may still
# take it before the server does; the start then fails and says so.
_lsvc_free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# The newest PostgreSQL server binaries: Debian keeps them off PATH.
_lsvc_pg_bindir() {
    if [[ -n "${LSVC_PG_BINDIR-}" ]]; then
        echo "$LSVC_PG_BINDIR"
        return
    fi
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1) || true
    if [[ -n "$d" && -x "$d/initdb" ]]; then
        echo "$d"
        return
    fi
    d=$(command -v initdb 2>/dev/null) && { dirname "$d"; return; }
    echo "start_postgres: no initdb found (install postgresql, or set LSVC_PG_BINDIR)" >&2
    return 1
}

# Runs a PostgreSQL server binary as the user that owns the cluster, from
# a directory that user can enter (initdb and pg_ctl complain otherwise).
_lsvc_as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@" </dev/null)
    else
        "$@" </dev/null
    fi
}

start_postgres() { # DIR
    local dir=${1:?usage: start_postgres DIR}
    local bin port i
    bin=$(_lsvc_pg_bindir) || return 1
    [[ $dir == /* ]] || dir=$PWD/$dir
    [[ $dir != / ]] || { echo "start_postgres: not /" >&2; return 1; }
    stop_postgres "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || {
            echo "start_postgres: running as root needs a 'postgres' user (the postgresql package makes one)" >&2
            return 1
        }
        chown postgres: "$dir" || return 1
        runuser -u postgres -- test -w "$dir" </dev/null || {
            echo "start_postgres: user postgres cannot write $dir (is a parent directory closed to it?)" >&2
            return 1
        }
    fi
    # The socket path, $dir/.s.PGSQL.<port>, must fit in sun_path.
    if ((${#dir} > 80)); then
        echo "start_postgres: $dir is too long for a Unix socket path" >&2
        return 1
    fi
    _lsvc_as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
        -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    for i in 1 2 3; do
        port=$(_lsvc_free_port) || return 1
        # Settings for a disposable test server: no durability, few
        # resources, a log that says who connected.
        cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 50
shared_buffers = 16MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_connections = on
log_disconnections = on
EOF
        # Trust for the tests' own role; a password for lsvc_pw over TCP,
        # which the authentication-failure test needs.
        cat >"$dir/data/pg_hba.conf" <<EOF
local all all trust
host all lsvc_pw 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
EOF
        if _lsvc_as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" \
               -w -t 60 start >"$dir/pg_ctl.log" 2>&1; then
            break
        fi
        cat "$dir/pg_ctl.log" "$dir/postgres.log" >&2 2>/dev/null
        if ((i == 3)); then
            echo "start_postgres: the server did not start" >&2
            return 1
        fi
        echo "start_postgres: retrying on another port" >&2
    done
    _lsvc_as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" \
        -U postgres -d postgres \
        -c "CREATE ROLE lsvc_pw LOGIN PASSWORD 'lsvc-pw-secret'" >&2 || {
        cat "$dir/postgres.log" >&2
        return 1
    }
    echo "$port" >"$dir/port"
    export LSVC_TEST_PG="host=$dir port=$port user=postgres dbname=postgres"
    # Without the password, which the test gets wrong on purpose.
    export LSVC_TEST_PG_AUTH="host=127.0.0.1 port=$port user=lsvc_pw dbname=postgres"
    echo "PostgreSQL in $dir: LSVC_TEST_PG='$LSVC_TEST_PG'"
}

stop_postgres() { # DIR
    local dir=${1:?usage: stop_postgres DIR}
    local bin
    [[ -f "$dir/data/postmaster.pid" ]] || return 0
    bin=$(_lsvc_pg_bindir) || return 1
    _lsvc_as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop || {
        # Still up after a minute: nothing here is worth waiting longer for.
        _lsvc_as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop
    }
}

start_redis() { # DIR
    local dir=${1:?usage: start_redis DIR}
    local port i
    command -v redis-server >/dev/null || {
        echo "start_redis: no redis-server (install redis-server)" >&2
        return 1
    }
    [[ $dir == /* ]] || dir=$PWD/$dir
    [[ $dir != / ]] || { echo "start_redis: not /" >&2; return 1; }
    stop_redis "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir" && mkdir -p "$dir" || return 1
    for i in 1 2 3; do
        port=$(_lsvc_free_port) || return 1
        # No persistence, no protected mode (it only listens on loopback
        # and its own socket), and it forks into the background.
        cat >"$dir/redis.conf" <<EOF
bind 127.0.0.1
port $port
unixsocket $dir/redis.sock
unixsocketperm 700
daemonize yes
pidfile $dir/redis.pid
logfile $dir/redis.log
dir $dir
save ""
appendonly no
protected-mode no
EOF
        if redis-server "$dir/redis.conf" </dev/null >"$dir/start.log" 2>&1; then
            local n
            for n in $(seq 100); do
                [[ $(redis-cli -s "$dir/redis.sock" ping 2>/dev/null) == PONG ]] && break
                sleep 0.1
            done
            if [[ $(redis-cli -s "$dir/redis.sock" ping 2>/dev/null) == PONG ]]; then
                echo "$port" >"$dir/port"
                export LSVC_TEST_REDIS="127.0.0.1:$port"
                echo "Redis in $dir: LSVC_TEST_REDIS='$LSVC_TEST_REDIS'"
                return 0
            fi
            stop_redis "$dir" >/dev/null 2>&1 || true
        fi
        cat "$dir/start.log" "$dir/redis.log" >&2 2>/dev/null
        echo "start_redis: the server did not answer PING; retrying on another port" >&2
    done
    echo "start_redis: the server did not start" >&2
    return 1
}

stop_redis() { # DIR
    local dir=${1:?usage: stop_redis DIR}
    local pid n
    [[ -f "$dir/redis.pid" ]] || return 0
    pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 0
    [[ -n "$pid" ]] || return 0
    # A stale pid file may name another process by now.
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server* ]] || {
        rm -f "$dir/redis.pid"
        return 0
    }
    redis-cli -s "$dir/redis.sock" shutdown nosave >/dev/null 2>&1 </dev/null ||
        kill "$pid" 2>/dev/null || true
    for n in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$dir/redis.pid"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/redis.pid"
}
