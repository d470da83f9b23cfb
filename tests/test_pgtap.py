"""Runs the pgTAP suite (tests/pgtap/*.sql) through pg_prove on a fresh migrated database."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

pytestmark = pytest.mark.schema

PGTAP_DIR = Path(__file__).parent / "pgtap"


def test_pgtap_suite(db_url: str) -> None:
    if not shutil.which("pg_prove"):
        pytest.fail("pg_prove is not installed (Debian: libtap-parser-sourcehandler-pgtap-perl); scripts/test.sh installs it")
    with psycopg.connect(db_url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgtap")
        except psycopg.Error as exc:
            pytest.fail(f"the pgtap extension is not available on this server (Debian: postgresql-15-pgtap): {exc}")
    params = conninfo.conninfo_to_dict(db_url)
    env = dict(os.environ)
    if params.get("password"):
        env["PGPASSWORD"] = params["password"]
    cmd = ["pg_prove", "--dbname", params["dbname"], "--verbose", "--failures"]
    for flag, key in (("--host", "host"), ("--port", "port"), ("--username", "user")):
        if params.get(key):
            cmd += [flag, str(params[key])]
    files = sorted(str(p) for p in PGTAP_DIR.glob("*.sql"))
    assert files, "no pgTAP files"
    proc = subprocess.run(cmd + files, capture_output=True, text=True, env=env, timeout=300)
    print(proc.stdout[-4000:])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Result: PASS" in proc.stdout
