#!/usr/bin/env bash
# Every test, on a fresh Debian machine: installs what it needs, then runs
#   1. the whole pytest suite (pgTAP included) on the embedded PostgreSQL 18
#      (or on DEENROLL_TEST_DATABASE_URL, or testcontainers when Docker answers), and
#   2. the schema suite (migration round trips + pgTAP) and the pg_cron tests on Debian's
#      PostgreSQL 15 with Debian's pg_cron 1.4.2 loaded (its jobs run in background workers,
#      in the database deenroll_cron) and, where it is installed, pg_net (its worker serves the
#      database deenroll_net; without it the pg_net tests skip).
# Extra arguments go to both pytest runs (e.g. -k rollback).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/test-deps.sh

status=0
"$venv/bin/pytest" -n 2 -p no:cacheprovider "$@" || status=$?

# Debian's PostgreSQL 15, in a throwaway cluster on a private socket.
pg15=/usr/lib/postgresql/15/bin
if [ -z "${DEENROLL_TEST_DATABASE_URL:-}" ] && [ -x "$pg15/postgres" ]; then
    dir=$(mktemp -d /tmp/deenroll-pg15.XXXXXX)
    as_pg=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$dir"
        as_pg=(runuser -u postgres --)
    fi
    "${as_pg[@]}" "$pg15/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
    # pg_cron: jobs run in background workers (cron.use_background_workers), so they need no
    # password, .pgpass or TCP listener; its metadata lives in deenroll_cron, a database of
    # its own, so that every test database is "another database" of the server unless a
    # test migrates deenroll_cron itself (tests/test_schedule.py).
    # pg_net, where installed (scripts/test-deps.sh builds it from ../shared/vendor): its one
    # worker sends the requests queued in one database, deenroll_net (tests/test_alerts_pg_net.py).
    preload=pg_cron
    net_options=()
    if [ -f "$("$pg15/pg_config" --sharedir)/extension/pg_net--0.20.4.sql" ]; then
        preload=pg_cron,pg_net
        net_options=(-o "-c pg_net.database_name=deenroll_net")
    fi
    "${as_pg[@]}" "$pg15/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
        -o "-c listen_addresses='' -k $dir -p 54315 -c max_connections=200 -c fsync=off" \
        -o "-c shared_preload_libraries=$preload -c cron.database_name=deenroll_cron" \
        "${net_options[@]}" \
        -o "-c cron.use_background_workers=on -c max_worker_processes=32" start >/dev/null
    trap '"${as_pg[@]}" "$pg15/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$dir"' EXIT
    "${as_pg[@]}" "$pg15/psql" -qX -h "$dir" -p 54315 -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE deenroll_cron" >/dev/null
    "${as_pg[@]}" "$pg15/psql" -qX -h "$dir" -p 54315 -U postgres -d deenroll_cron -v ON_ERROR_STOP=1 \
        -c "CREATE EXTENSION pg_cron" >/dev/null
    if ((${#net_options[@]})); then
        "${as_pg[@]}" "$pg15/psql" -qX -h "$dir" -p 54315 -U postgres -d postgres -v ON_ERROR_STOP=1 \
            -c "CREATE DATABASE deenroll_net" >/dev/null
        "${as_pg[@]}" "$pg15/psql" -qX -h "$dir" -p 54315 -U postgres -d deenroll_net -v ON_ERROR_STOP=1 \
            -c "CREATE EXTENSION pg_net" >/dev/null
    fi
    echo "scripts/test.sh: schema suite on $("$pg15/postgres" --version)" >&2
    DEENROLL_TEST_DATABASE_URL="postgresql://postgres@/postgres?host=$dir&port=54315" \
        "$venv/bin/pytest" -n 2 -m "schema or pg_cron or pg_net" -p no:cacheprovider "$@" || status=$?
fi
exit $status
