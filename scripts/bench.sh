#!/usr/bin/env bash
# The performance benchmark of `deenroll run` (bench/benchmark.py): installs this checkout
# into .venv (again on every call, without dependencies, so the SQL measured is the
# checkout's), then runs the benchmark with the given arguments. Without --database-url it
# starts a private embedded PostgreSQL in a temporary directory (deleted afterwards). The
# default sizes: 1,000,000 leads, 50 clients, 500 campaigns, 10 % eligible; idle runs at
# 100,000 and 1,000,000 leads; campaign-count scaling at 200,000 leads, 5 clients, 10 vs
# 10,010 campaigns per client; platform writes during migrate at 2,000,000 and 10,000,000
# leads, and during an upgrade from the previous release while a run of that release works
# at 2,000,000 leads (the longest part: --skip-migrate-wait, or --migrate-wait-leads N,
# --migrate-upgrade-leads N, --skip-migrate-upgrade to choose; the upgrade takes the previous
# release's code from this checkout's git history).
# Besides `deenroll run`, the run's procedure is timed as one CALL (as pg_cron sends it) and the
# previous release's `deenroll run` (from git history) runs on the same data. The CALLs are timed
# again on Debian's PostgreSQL 15 as Debian ships it (JIT on), in a throwaway cluster of its own
# with the same data set, with JIT on and with jit = off for the login (--skip-debian-pg15).
# Figures go to stdout, progress to stderr.
#   scripts/bench.sh                          # the full benchmark (tens of minutes)
#   scripts/bench.sh --json-out bench.json    # also write the figures as JSON
#   scripts/bench.sh --help                   # every option
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/deenroll ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check .
else
    .venv/bin/pip install -q --disable-pip-version-check --no-deps --force-reinstall .
fi
exec .venv/bin/python bench/benchmark.py "$@"
