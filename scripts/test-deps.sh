# Sourced by the test scripts: installs what the tests need on a Debian machine, then sets
# $venv to a virtualenv with the package exactly as users get it (`pip install .`, not an
# editable install) and its test extras.

# System packages: pgTAP and pg_prove for both servers, PostgreSQL 15 itself, its pg_cron,
# PgBouncer.
need=()
[ -f /usr/share/postgresql/15/extension/pgtap.control ] || need+=(postgresql-15-pgtap)
command -v pg_prove >/dev/null || need+=(libtap-parser-sourcehandler-pgtap-perl)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
[ -f /usr/share/postgresql/15/extension/pg_cron.control ] || need+=(postgresql-15-cron)
[ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "$0: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

venv=.venv-test
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps .
"$venv/bin/pip" install -q --disable-pip-version-check '.[test]'
