#!/usr/bin/env bash
# The main job on the embedded default database: install deenroll into .venv,
# then `deenroll demo` (migrate, load a synthetic multi-client data set, run,
# print the health report). Extra arguments go to `deenroll demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check .
exec .venv/bin/deenroll demo "$@"
