#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, from Debian's postgresql
# package (scripts/setup.sh installs it).
#
#   scripts/postgres.sh start DIR   # initdb + start on a free loopback port;
#                                   # prints the URL and writes it to DIR/url
#   scripts/postgres.sh stop DIR    # stops it (the directory is left to the caller)
#
# The cluster trusts local connections and runs with fsync off: it holds
# test data only. POSTGRES_OPTS adds server options after those, so a
# benchmark can ask for a durable cluster with
# POSTGRES_OPTS="-c fsync=on -c synchronous_commit=on -c full_page_writes=on".
# As root it runs as the postgres user, since initdb refuses to run as root.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd="$1"
dir="$2"

bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
[ -n "$bin" ] && [ -x "$bin/initdb" ] || {
  echo "postgres.sh: no PostgreSQL server found under /usr/lib/postgresql; run scripts/setup.sh" >&2
  exit 1
}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [ "$(id -u)" -eq 0 ] && chown postgres "$dir"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 ${POSTGRES_OPTS:-}" \
      start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    url="postgres://postgres@127.0.0.1:$port/postgres"
    echo "$url" >"$dir/url"
    echo "$url"
    ;;
  stop)
    [ -d "$dir/data" ] || exit 0
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    ;;
  *) usage ;;
esac
