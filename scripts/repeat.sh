#!/usr/bin/env bash
# Runs the pytest suite, or a selection of it, N times over to find tests that fail by
# chance: every test is repeated N times in a row (pytest-repeat), on two workers, on the
# embedded PostgreSQL 18 (or DEENROLL_TEST_DATABASE_URL). Installs like scripts/test.sh.
# Failures are listed per test and repetition at the end (test_x[3-20]: the 3rd of 20).
# Property tests (hypothesis) draw new examples on every repetition here (the "explore"
# profile; the suite's default, "ci", tries the same ones every time): a failure prints its
# falsifying example, which then belongs in the test as an @example.
#   scripts/repeat.sh 10                                          # the whole suite, 10 times
#   scripts/repeat.sh 20 tests/test_run_concurrency.py -k stopped # a selection, 20 times
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [[ "${1:-}" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/repeat.sh N [pytest arguments]   (N: how many times each test runs)" >&2
    exit 2
fi
count=$1
shift
source scripts/test-deps.sh
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-explore}"
exec "$venv/bin/pytest" -n 2 -p no:cacheprovider --count "$count" "$@"
