"""DEENROLL_EMBEDDED: "auto" (the default) may start the embedded server; "never" makes a missing database an error."""

from __future__ import annotations

import json

import pytest
from psycopg import conninfo

NO_DATABASE = (
    "deenroll: error: no database configured (DEENROLL_EMBEDDED=never): set DATABASE_URL, pass --database-url, "
    "or set libpq's PG* variables (PGHOST, PGPORT, PGDATABASE, PGUSER)"
)


@pytest.fixture
def bare_env(tmp_path) -> dict[str, str]:
    """No PG* variable (run_cli already drops DATABASE_URL); a home of our own for the embedded server."""
    import os

    env = {k: "" for k in os.environ if k.startswith("PG")}
    env["DEENROLL_HOME"] = str(tmp_path / "home")
    return env


@pytest.mark.parametrize("args", [["status"], ["migrate"], ["run"], ["health-check"], ["db", "url"]])
@pytest.mark.parametrize("value", ["never", " NEVER "])
def test_never_without_a_database_is_one_line_and_exit_2(cli, bare_env, tmp_path, args, value) -> None:
    res = cli(*args, env={**bare_env, "DEENROLL_EMBEDDED": value})
    assert (res.code, res.stdout, res.stderr) == (2, "", NO_DATABASE + "\n")
    assert not (tmp_path / "home").exists()  # no embedded server was set up


def test_never_without_a_database_in_json(cli, bare_env) -> None:
    res = cli("run", "--json", env={**bare_env, "DEENROLL_EMBEDDED": "never"})
    assert res.code == 2 and res.stderr == NO_DATABASE + "\n"
    doc = json.loads(res.stdout)
    assert doc["exit_code"] == 2 and doc["error"] == NO_DATABASE.removeprefix("deenroll: error: ")


@pytest.mark.parametrize("value", ["sometimes", "no", "0", "always"])
def test_an_unknown_value_is_an_error_even_with_a_database(cli, bare_env, db_url, value) -> None:
    res = cli("status", db=db_url, env={**bare_env, "DEENROLL_EMBEDDED": value})
    assert res.code == 2 and res.stdout == ""
    assert res.stderr == f"deenroll: error: DEENROLL_EMBEDDED must be 'auto' or 'never', not {value!r}\n"


@pytest.mark.parametrize("value", ["never", "auto", ""])
def test_a_configured_database_is_used_whatever_the_value(cli, bare_env, db_url, value) -> None:
    res = cli("status", "--json", db=db_url, env={**bare_env, "DEENROLL_EMBEDDED": value})
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["database"]["source"] == "--database-url"
    assert "embedded" not in res.stderr


def test_never_with_pg_variables_uses_them(cli, bare_env, db_url) -> None:
    params = conninfo.conninfo_to_dict(db_url)
    env = {**bare_env, "DEENROLL_EMBEDDED": "never", "PGHOST": params["host"], "PGDATABASE": params["dbname"],
           "PGUSER": params.get("user", "")}
    if params.get("port"):
        env["PGPORT"] = str(params["port"])
    res = cli("status", "--json", env=env)
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)["database"]
    assert (doc["dbname"], doc["source"]) == (params["dbname"], "PG* variables")
