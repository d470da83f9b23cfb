#!/usr/bin/env bash
# The performance benchmark of `deenroll run` (bench/benchmark.py): installs deenroll
# into .venv when it is not there yet, then runs the benchmark with the given
# arguments. Without --database-url it starts a private embedded PostgreSQL in a
# temporary directory (deleted afterwards); the default sizes are 1,000,000 leads,
# 50 clients, 500 campaigns, 10 % eligible. Figures go to stdout, progress to stderr.
#   scripts/bench.sh                          # the full benchmark (a few minutes)
#   scripts/bench.sh --json-out bench.json    # also write the figures as JSON
#   scripts/bench.sh --help                   # every option
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/deenroll ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check .
fi
exec .venv/bin/python bench/benchmark.py "$@"
