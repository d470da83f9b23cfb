# Sourced by the test scripts: installs what the tests need on a Debian machine, then sets
# $venv to a virtualenv with the package exactly as users get it (`pip install .`, not an
# editable install) and its test extras.

# System packages: pgTAP and pg_prove for both servers, PostgreSQL 15 itself, its pg_cron,
# PgBouncer; and, when pg_net's source sits beside the checkout (../shared/vendor) and
# PostgreSQL 15 has no pg_net yet, what building it takes. All of it before any test cluster
# starts: postgresql-server-dev-15 may upgrade postgresql-15.
pg_net_source=../shared/vendor/pg_net-0.20.4.tar.gz
pg_net_script=/usr/share/postgresql/15/extension/pg_net--0.20.4.sql  # what CREATE EXTENSION runs
build_pg_net=""
if [ -f "$pg_net_source" ] && ! { [ -f "$pg_net_script" ] && [ -f /usr/lib/postgresql/15/lib/pg_net.so ]; }; then
    build_pg_net=1
fi
need=()
[ -f /usr/share/postgresql/15/extension/pgtap.control ] || need+=(postgresql-15-pgtap)
command -v pg_prove >/dev/null || need+=(libtap-parser-sourcehandler-pgtap-perl)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
[ -f /usr/share/postgresql/15/extension/pg_cron.control ] || need+=(postgresql-15-cron)
[ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
if [ -n "$build_pg_net" ]; then
    command -v make >/dev/null || need+=(make)
    command -v gcc >/dev/null || need+=(gcc)
    for pkg in postgresql-server-dev-15 libcurl4-openssl-dev; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
fi
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "$0: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# pg_net (Supabase's HTTP extension; Debian has no package of it), built from its source for
# PostgreSQL 15 in a directory of its own. Without the source the pg_net tests skip. Two make
# runs: the first writes the version's install script, which the second's install then finds.
if [ -n "$build_pg_net" ]; then
    echo "$0: building pg_net for PostgreSQL 15 from $pg_net_source" >&2
    pg_net_build=$(mktemp -d /tmp/deenroll-pg_net.XXXXXX)
    tar xzf "$pg_net_source" -C "$pg_net_build"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    make -s -C "$pg_net_build"/pg_net-* PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config >/dev/null
    $sudo make -s -C "$pg_net_build"/pg_net-* PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config install >/dev/null
    rm -rf "$pg_net_build"
fi

venv=.venv-test
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps .
"$venv/bin/pip" install -q --disable-pip-version-check '.[test]'
