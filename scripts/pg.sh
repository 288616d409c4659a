#!/usr/bin/env bash
# A throwaway PostgreSQL 15 on 127.0.0.1 for the control plane's tests and benches, when you
# want one server for many runs. The tests do NOT need it: each test binary starts its own
# server (tests/testkit/src/postgres.rs) unless TOLLGATE_TEST_PG_URL names one.
#
#   eval "$(bash scripts/pg.sh start)"   # starts it, prints: export TOLLGATE_TEST_PG_URL=...
#   cargo test -p tollgate-control-plane # uses it (one database per test, cloned from a template)
#   bash scripts/pg.sh stop              # stops it and deletes its directory
#
# Runs initdb/pg_ctl from /usr/lib/postgresql/15/bin (or $TOLLGATE_PG_BIN) as the postgres
# user when run as root, in $TOLLGATE_PG_DIR (default /tmp/tollgate-pg-script), on a free port.
# TOLLGATE_PG_FAST=1 turns fsync off (fine for tests; benches want the default durability).
set -euo pipefail

bin=${TOLLGATE_PG_BIN:-/usr/lib/postgresql/15/bin}
dir=${TOLLGATE_PG_DIR:-/tmp/tollgate-pg-script}
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi

url() { echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/postgres"; }

running() {
  [ -f "$dir/port" ] && "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

case "${1:-}" in
  start)
    if running; then
      echo "export TOLLGATE_TEST_PG_URL=$(url)"
      exit 0
    fi
    if [ ! -x "$bin/initdb" ]; then
      echo "pg.sh: $bin/initdb not found (apt-get install postgresql-15, or set TOLLGATE_PG_BIN)" >&2
      exit 1
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    "${as_pg[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300"
    if [ "${TOLLGATE_PG_FAST:-0}" = 1 ]; then
      opts="$opts -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 -o "$opts" start >/dev/null \
      || { cat "$dir/log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    echo "export TOLLGATE_TEST_PG_URL=$(url)"
    ;;
  stop)
    if running; then
      "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" stop -m fast >/dev/null
    fi
    rm -rf "$dir"
    echo "pg.sh: stopped"
    ;;
  status)
    if running; then echo "running: $(url)"; else echo "not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
