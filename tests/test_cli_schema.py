"""The schema commands as a DBA uses them: output, exit codes, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess

import psycopg
import pytest

from conftest import deenroll_exe
from deenroll.migrate.files import migration_files

pytestmark = pytest.mark.schema


def _one_line_error(res, *needles: str) -> None:
    assert res.code != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("deenroll: ")
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_status_lists_applied_migrations_and_current_definitions(db_url: str, cli) -> None:
    res = cli("status", db=db_url)
    assert res.code == 0, res.stderr
    assert "0021_add_de_enrollment_monitoring" in res.stdout and "applied" in res.stdout
    assert "pending" not in res.stdout


def test_status_shows_pending_after_partial_migrate(empty_db_url: str, cli) -> None:
    assert cli("migrate", "--to", "19", db=empty_db_url).code == 0
    out = cli("status", db=empty_db_url).stdout
    assert "0019_add_campaign_completion_tracking" in out
    line = next(l for l in out.splitlines() if "0020_unify_campaign_model" in l)
    assert "pending" in line


def test_verify_passes_on_migrated_and_fails_on_baseline(db_url: str, empty_db_url: str, cli) -> None:
    ok = cli("verify", db=db_url)
    assert ok.code == 0, ok.stdout
    assert "FAIL" not in ok.stdout and ok.stdout.count("PASS") >= 15
    assert cli("migrate", "--to", "0018_baseline", db=empty_db_url).code == 0
    bad = cli("verify", db=empty_db_url)
    assert bad.code == 1
    assert "FAIL  column leads.completed_at" in bad.stdout


def test_unknown_target_changes_nothing(empty_db_url: str, cli) -> None:
    _one_line_error(cli("migrate", "--to", "0099", db=empty_db_url), "no migration '0099'")
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('leads')").fetchone()[0] is None


def test_rollback_past_the_baseline_is_refused(db_url: str, cli) -> None:
    _one_line_error(cli("rollback", "--to", "0005", db=db_url), "before the baseline")
    _one_line_error(cli("rollback", "--to", "0019_nope", db=db_url), "no migration")
    assert "pending" not in cli("status", db=db_url).stdout


def test_rollback_then_migrate_by_number(db_url: str, cli) -> None:
    res = cli("rollback", "--to", "19", db=db_url)
    assert res.code == 0, res.stderr
    rolled = [line.split()[-1] for line in res.stdout.splitlines()]
    later = [m.stem for m in migration_files() if m.stem > "0019_add_campaign_completion_tracking"]
    assert rolled == list(reversed(later))  # newest first
    again = cli("migrate", db=db_url)
    assert "applied   0020_unify_campaign_model" in again.stdout


def test_unreachable_database_is_one_line_without_password(cli) -> None:
    res = cli("status", db="postgresql://alice:s3cret-pw@127.0.0.1:1/nowhere")
    _one_line_error(res, "cannot connect")
    assert "s3cret-pw" not in res.stderr


@pytest.mark.parametrize("url", ["postgresql://x:pw@host:notaport/db", "not a url = =", "postgresql://[::1"])
def test_malformed_url(url: str, cli) -> None:
    res = cli("migrate", db=url)
    _one_line_error(res, "malformed database URL")
    assert "pw@" not in res.stderr


def test_db_url_never_prints_a_password(cli) -> None:
    res = cli("db", "url", db="postgresql://bob:hunter2@db.example:5433/prod?sslmode=require")
    assert res.code == 0
    assert res.stdout.strip() == "postgresql://bob@db.example:5433/prod?sslmode=require"


def test_usage_error_is_short(cli) -> None:
    res = cli("rollback")
    assert res.code == 2
    assert "Missing option '--to'" in res.stderr and "Traceback" not in res.stderr


def test_embedded_default_is_started_announced_and_kept(tmp_path) -> None:
    """No URL, no PG* variables: the embedded server, its data kept between commands."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "DATABASE_URL"}
    env["DEENROLL_HOME"] = str(tmp_path / "home")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([deenroll_exe(), *args], capture_output=True, text=True, env=env, timeout=120)

    try:
        first = run("migrate")
        assert first.returncode == 0, first.stderr
        assert "embedded PostgreSQL" in first.stderr and "(started)" in first.stderr
        second = run("status")
        assert "(running)" in second.stderr
        assert "pending" not in second.stdout and "0021_add_de_enrollment_monitoring" in second.stdout
        url = run("db", "url").stdout.strip()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0] >= 4
    finally:
        stop = run("db", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stderr
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()


def test_the_installed_command_carries_the_current_sql(tmp_path) -> None:
    """`pip install .` gives a deenroll that finds its SQL, identical to the repository's, from any directory."""
    repo = Path(__file__).resolve().parent.parent
    python = Path(deenroll_exe()).parent / "python"
    probe = subprocess.run(
        [str(python), "-c", "from deenroll import paths; print(paths.sql_root())"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    root = Path(probe.stdout.strip())
    for folder in ("migrations", "rollback", "functions", "views"):
        ours = {p.name: p.read_text() for p in (repo / folder).glob("*.sql")}
        theirs = {p.name: p.read_text() for p in (root / folder).glob("*.sql")}
        assert ours and theirs == ours, f"{folder}/ differs between {root} and the repository"
