"""`deenroll schedule` with the real pg_cron, and its one line where the server has none.

The PostgreSQL 15 of scripts/test.sh loads Debian's pg_cron 1.4.2 with its jobs kept in the
database deenroll_cron and run in background workers. Every test database is therefore
"another database" of the server (install uses cron.schedule_in_database); the test of the
Supabase layout migrates deenroll_cron itself, under an advisory lock. Each test schedules as a
login role of its own: pg_cron keys named jobs by name and role.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from conftest import Server, add_campaign, add_leads, new_id, run_cli
from deenroll.database import Target
from deenroll.migrate.commands import migrate

SCHEDULE_IN_DATABASE = "cron.schedule_in_database(text,text,text,text,text,boolean)"


def _cron_database(pg_server: Server) -> str | None:
    with pg_server.admin() as conn:
        return conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()[0]


@pytest.fixture(scope="session")
def cron_db(pg_server: Server) -> str:
    name = _cron_database(pg_server)
    if name is None:
        pytest.skip("this server has no pg_cron (scripts/test.sh runs these tests on PostgreSQL 15 with it)")
    return name


def _as(dsn: str, user: str, password: str) -> str:
    return conninfo.make_conninfo(dsn, user=user, password=password)


def _dbname(url: str) -> str:
    return conninfo.conninfo_to_dict(url)["dbname"]


@contextmanager
def _cron_acls(conn: psycopg.Connection) -> Iterator[None]:
    """A transaction that changes the access lists of pg_cron's schema or functions, one test worker
    at a time: two GRANTs on one object at once fail with 'tuple concurrently updated'."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('deenroll tests: pg_cron access lists'))")
        yield


@pytest.fixture
def make_login(pg_server: Server, cron_db: str) -> Iterator[Callable[..., str]]:
    """make_login(runner=True, cron_usage=True, other_database=True, read_settings=False) -> role
    name: a login role of this test's own, with those rights (pg_read_all_settings lets it read
    cron.database_name); its jobs and the role go afterwards."""
    made: list[str] = []

    def make(*, runner: bool = True, cron_usage: bool = True, other_database: bool = True,
             read_settings: bool = False) -> str:
        role = f"deenroll_login_{uuid.uuid4().hex[:10]}"
        member_of = ["deenroll_runner"] * runner + ["pg_read_all_settings"] * read_settings
        with pg_server.admin() as conn:
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'"
                         + (f" IN ROLE {', '.join(member_of)}" if member_of else ""))
        made.append(role)
        with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn, _cron_acls(conn):
            if cron_usage:
                conn.execute(f"GRANT USAGE ON SCHEMA cron TO {role}")
            if other_database:
                conn.execute(f"GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {role}")
        return role

    yield make
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        for role in made:
            conn.execute("DELETE FROM cron.job WHERE username = %s", (role,))
            conn.execute("DELETE FROM cron.job_run_details WHERE username = %s", (role,))
            with _cron_acls(conn):
                conn.execute(f"DROP OWNED BY {role}")
    with pg_server.admin() as conn:
        for role in made:
            conn.execute(f"DROP ROLE {role}")


def _login_url(pg_server: Server, dbname: str, role: str) -> str:
    return _as(pg_server.dsn(dbname), role, f"pw-{role}")


def _jobs(pg_server: Server, cron_db: str, role: str) -> dict[str, tuple]:
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT jobname, schedule, command, database, active FROM cron.job WHERE username = %s", (role,)
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def one_line(res) -> str:
    assert res.code == 2, res
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    return res.stderr.strip()


# --------------------------------------------------------------------------- without pg_cron


def test_install_on_a_server_without_pg_cron_says_so_in_one_line(pg_server: Server, db_url: str) -> None:
    if _cron_database(pg_server) is not None:
        pytest.skip("this server has pg_cron")
    line = one_line(run_cli("schedule", "install", db=db_url))
    assert line.startswith("deenroll: error: pg_cron is not available on this server (PostgreSQL ")
    for command in (("schedule", "status"), ("schedule", "remove")):
        assert "pg_cron is not available" in one_line(run_cli(*command, db=db_url))
    res = run_cli("schedule", "install", "--json", db=db_url)
    doc = json.loads(res.stdout)
    assert res.code == 2 and doc["exit_code"] == 2 and doc["error"].startswith("pg_cron is not available")
    res = run_cli("status", db=db_url)
    assert res.code == 0
    assert "in-database schedule (pg_cron): none: pg_cron is not available on this server" in res.stdout
    doc = json.loads(run_cli("status", "--json", db=db_url).stdout)
    assert doc["in_database_schedule"]["pg_cron"] is False and doc["in_database_schedule"]["jobs"] == []


def test_every_is_checked_before_connecting() -> None:
    for bad in ("15", "0 minutes", "90 minutes", "fortnightly", "* * * *"):
        line = one_line(run_cli("schedule", "install", "--every", bad, db="postgresql://nobody@/nowhere?host=/nonexistent"))
        assert line.startswith(f"deenroll: error: --every {bad!r}: expected")


# --------------------------------------------------------------------------- with pg_cron

pg_cron = pytest.mark.pg_cron


@pg_cron
def test_install_status_remove_for_another_database_as_a_runner_login(
    pg_server: Server, cron_db: str, db_url: str, make_login
) -> None:
    login = make_login()
    url = _login_url(pg_server, _dbname(db_url), login)
    dbname = _dbname(db_url)
    # a job of someone else's in pg_cron's database: remove never touches it
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        conn.execute("SELECT cron.schedule_in_database('nightly-report', '0 2 * * *', 'SELECT 1', %s, %s)",
                     (dbname, login))

    # a login that may not read cron.database_name is told how to name pg_cron's database
    line = one_line(run_cli("schedule", "install", db=url))
    assert line == (f"deenroll: error: pg_cron is loaded on this server but its schema is not in database postgres "
                    f"(login {login} may not read cron.database_name, which names its database: pass "
                    f"--cron-database, or a superuser runs `GRANT pg_read_all_settings TO {login};`)")

    def sched(*args: str):
        return run_cli("schedule", *args, "--cron-database", cron_db, db=url)

    res = sched("install")
    assert res.code == 0, res.stderr
    assert [line.split()[:2] for line in res.stdout.splitlines()] == [
        ["created", "deenroll-run"], ["created", "deenroll-health"], ["created", "deenroll-cleanup"]]
    assert f"run as role {login} in database {dbname}, kept in pg_cron's database {cron_db}" in res.stderr
    assert _jobs(pg_server, cron_db, login) == {
        "deenroll-run": ("*/15 * * * *", "CALL deenroll.run_de_enrollment()", dbname, True),
        "deenroll-health": ("5 * * * *", "CALL deenroll.alert_de_enrollment_health()", dbname, True),
        "deenroll-cleanup": ("30 3 1 * *", "SELECT public.archive_de_enrollment_history()", dbname, True),
        "nightly-report": ("0 2 * * *", "SELECT 1", dbname, True),
    }

    # again: nothing changes; with another period: only the run's job changes
    res = sched("install", "--json")
    doc = json.loads(res.stdout)
    assert res.code == 0 and [j["action"] for j in doc["jobs"]] == ["unchanged"] * 3
    assert doc["role"] == login and doc["cron_database"] == cron_db and doc["database"]["dbname"] == dbname
    res = sched("install", "--every", "5 minutes", "--json")
    doc = json.loads(res.stdout)
    assert [(j["name"], j["action"], j["schedule"]) for j in doc["jobs"]] == [
        ("deenroll-run", "updated", "*/5 * * * *"), ("deenroll-health", "unchanged", "5 * * * *"),
        ("deenroll-cleanup", "unchanged", "30 3 1 * *")]
    assert len(_jobs(pg_server, cron_db, login)) == 4

    res = sched("status")
    assert res.code == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith(f"deenroll-run  */5 * * * *  active  as {login}  (job ")
    assert res.stdout.count("  no run yet") == 3
    doc = json.loads(sched("status", "--json").stdout)
    assert [j["name"] for j in doc["jobs"]] == ["deenroll-run", "deenroll-health", "deenroll-cleanup"]
    assert all(j["last_runs"] == [] and j["username"] == login for j in doc["jobs"])
    assert doc["exit_code"] == 0

    with psycopg.connect(pg_server.dsn(cron_db)) as conn:
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0]
    if version.startswith("1.4"):  # Debian 12's; 1.5 and later take schedules in seconds
        line = one_line(sched("install", "--every", "30 seconds"))
        assert line == ("deenroll: error: pg_cron refuses the schedule of deenroll-run: invalid schedule: 30 seconds "
                        "(schedules in seconds need pg_cron 1.5 or later)")
        assert _jobs(pg_server, cron_db, login)["deenroll-run"][0] == "*/5 * * * *"  # nothing changed

    res = run_cli("status", db=pg_server.url(dbname))
    assert f"in-database schedule (pg_cron): deenroll-run */5 * * * * as {login}, deenroll-health 5 * * * * as " \
           f"{login}, deenroll-cleanup 30 3 1 * * as {login}" in res.stdout

    # an install of an earlier release (health at :00) is updated
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        conn.execute("UPDATE cron.job SET schedule = '0 * * * *' WHERE username = %s AND jobname = 'deenroll-health'",
                     (login,))
    doc = json.loads(sched("install", "--every", "5 minutes", "--json").stdout)
    assert [(j["name"], j["action"]) for j in doc["jobs"]][1] == ("deenroll-health", "updated")
    assert _jobs(pg_server, cron_db, login)["deenroll-health"][0] == "5 * * * *"

    res = sched("remove")
    assert res.code == 0, res.stderr
    assert sorted(line.split()[1] for line in res.stdout.splitlines()) == [
        "deenroll-cleanup", "deenroll-health", "deenroll-run"]
    assert list(_jobs(pg_server, cron_db, login)) == ["nightly-report"]
    res = sched("remove", "--json")
    assert res.code == 0 and json.loads(res.stdout)["removed"] == [] and res.stderr == ""
    res = sched("status")
    assert res.code == 1 and res.stdout.startswith("no deenroll job in pg_cron for database")
    res = run_cli("status", db=pg_server.url(dbname))
    assert "in-database schedule (pg_cron): none (`deenroll schedule install` adds it)" in res.stdout


@pg_cron
def test_a_superuser_is_sent_to_a_runner_login_and_may_schedule_as_it(
    pg_server: Server, cron_db: str, db_url: str, make_login
) -> None:
    login = make_login(cron_usage=False, other_database=False)  # the superuser names the role: no grant needed
    line = one_line(run_cli("schedule", "install", db=db_url))
    assert line.startswith("deenroll: error: the jobs would run as superuser ")
    assert "with --as " in line
    res = run_cli("schedule", "install", "--as", login, db=db_url)
    assert res.code == 0, res.stderr
    assert {name: job[2] for name, job in _jobs(pg_server, cron_db, login).items()} == dict.fromkeys(
        ["deenroll-run", "deenroll-health", "deenroll-cleanup"], _dbname(db_url))
    res = run_cli("schedule", "install", "--as", login, "--json", db=db_url)
    assert [j["action"] for j in json.loads(res.stdout)["jobs"]] == ["unchanged"] * 3
    # the superuser sees and removes them
    doc = json.loads(run_cli("schedule", "status", "--json", db=db_url).stdout)
    assert {j["username"] for j in doc["jobs"] if j["username"] == login} == {login}
    res = run_cli("schedule", "remove", db=db_url)
    assert res.code == 0 and _jobs(pg_server, cron_db, login) == {}
    assert "no such role" in one_line(run_cli("schedule", "install", "--as", "no_such_role_x", db=db_url))


@pg_cron
def test_logins_without_the_rights_get_one_line_naming_the_grant(
    pg_server: Server, cron_db: str, db_url: str, make_login
) -> None:
    dbname = _dbname(db_url)
    outsider = make_login(runner=False, read_settings=True)
    line = one_line(run_cli("schedule", "install", db=_login_url(pg_server, dbname, outsider)))
    assert f"role {outsider} may not run the jobs' commands" in line
    assert f"`GRANT deenroll_runner TO {outsider};`" in line

    no_usage = make_login(cron_usage=False, read_settings=True)
    line = one_line(run_cli("schedule", "install", db=_login_url(pg_server, dbname, no_usage)))
    assert line == (f"deenroll: error: role {no_usage} may not use pg_cron: in database {cron_db}, a superuser or a "
                    "role holding it WITH GRANT OPTION (on Supabase, postgres) runs "
                    f"`GRANT USAGE ON SCHEMA cron TO {no_usage};`")

    no_other = make_login(other_database=False, read_settings=True)
    res = run_cli("schedule", "install", "--json", db=_login_url(pg_server, dbname, no_other))
    doc = json.loads(res.stdout)
    assert res.code == 2 and doc["exit_code"] == 2
    assert doc["error"] == (f"role {no_other} may not schedule jobs for database {dbname} (pg_cron keeps its jobs in "
                            f"{cron_db}): in database {cron_db}, a superuser or a role holding it WITH GRANT OPTION "
                            f"(on Supabase, postgres) runs `GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {no_other};`")
    for role in (outsider, no_usage, no_other):
        assert _jobs(pg_server, cron_db, role) == {}


# --------------------------------------------------------------------------- pg_cron runs the jobs


def _wait_for_run(pg_server: Server, cron_db: str, role: str, jobname: str, timeout: float = 130) -> None:
    """Until pg_cron has finished a run of the job (a one-minute schedule fires within 60 s)."""
    end = time.monotonic() + timeout
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        while True:
            done = conn.execute(
                """SELECT count(*) FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)
                    WHERE j.username = %s AND j.jobname = %s AND d.status IN ('succeeded', 'failed')""",
                (role, jobname),
            ).fetchone()[0]
            if done:
                return
            assert time.monotonic() < end, f"pg_cron did not run {jobname} of {role} in {timeout} s"
            time.sleep(0.5)


@pytest.fixture
def cron_db_migrated(pg_server: Server, cron_db: str) -> Iterator[str]:
    """pg_cron's own database with deenroll migrated in it (the Supabase layout), emptied of
    platform rows; one test at a time (a session advisory lock)."""
    with pg_server.admin() as lock:
        lock.execute("SELECT pg_advisory_lock(hashtext('deenroll test_schedule cron_db'))")
        url = pg_server.url(cron_db)
        migrate(Target(url, "test"))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE leads, campaigns, de_enrollment_runs CASCADE")
        yield url


@pg_cron
@pytest.mark.slow
def test_pg_cron_runs_the_jobs_same_database_and_another(
    pg_server: Server, cron_db: str, cron_db_migrated: str, db_url: str, make_login
) -> None:
    # the Supabase layout: deenroll migrated in pg_cron's database, run every minute by a runner login
    supa = make_login(other_database=False)
    supa_url = _login_url(pg_server, cron_db, supa)
    client = new_id()
    with psycopg.connect(cron_db_migrated, autocommit=True) as conn:
        camp = add_campaign(conn, client, messages=2)
        finished = add_leads(conn, camp, client, 7, position=2)
        add_leads(conn, camp, client, 3, position=1)
    res = run_cli("schedule", "install", "--every", "1 minute", db=supa_url)
    assert res.code == 0, res.stderr
    assert f"run as role {supa} in database {cron_db};" in res.stderr

    # another database: its health job every minute, with a client in error (never a success)
    other = make_login(read_settings=True)
    other_url = _login_url(pg_server, _dbname(db_url), other)
    sick = new_id()
    with psycopg.connect(db_url, autocommit=True) as conn:
        add_campaign(conn, sick, messages=2, age="3 days")
    res = run_cli("schedule", "install", "--every", "0 0 1 1 *", db=other_url)
    assert res.code == 0, res.stderr
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        conn.execute("UPDATE cron.job SET schedule = '* * * * *' WHERE username = %s AND jobname = 'deenroll-health'",
                     (other,))

    _wait_for_run(pg_server, cron_db, supa, "deenroll-run")
    _wait_for_run(pg_server, cron_db, other, "deenroll-health")

    with psycopg.connect(cron_db_migrated, autocommit=True) as conn:
        runs = conn.execute("SELECT status, leads_de_enrolled FROM de_enrollment_runs WHERE client_id = %s "
                            "ORDER BY run_at", (client,)).fetchall()
        still_active = conn.execute("SELECT count(*) FROM leads WHERE id = ANY(%s) AND is_active",
                                    (finished,)).fetchone()[0]
    assert runs[0] == ("success", 7) and still_active == 0
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        first = {name: (status, message) for name, status, message in conn.execute(
            """SELECT DISTINCT ON (j.jobname) j.jobname, d.status, d.return_message
                 FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)
                WHERE (j.username, j.jobname) IN ((%s, 'deenroll-run'), (%s, 'deenroll-health'))
                  AND d.status IN ('succeeded', 'failed')
                ORDER BY j.jobname, d.start_time""", (supa, other)).fetchall()}
    assert first["deenroll-run"] == ("succeeded", "CALL")
    assert first["deenroll-health"][0] == "failed"
    assert f"deenroll health: 1 client(s) in error: {sick}: no successful run ever" in first["deenroll-health"][1]

    res = run_cli("schedule", "status", db=supa_url)
    assert res.code == 0, res.stdout + res.stderr
    run_lines = [line for line in res.stdout.splitlines() if " succeeded " in line]
    assert run_lines and "1 de-enrollment run(s) (1 success), 7 de-enrolled" in run_lines[-1]
    doc = json.loads(run_cli("schedule", "status", "--json", db=supa_url).stdout)
    run_job = next(j for j in doc["jobs"] if j["name"] == "deenroll-run")
    oldest = run_job["last_runs"][-1]
    assert oldest["status"] == "succeeded" and oldest["de_enrollment_runs"]["leads_de_enrolled"] == 7

    res = run_cli("schedule", "status", db=other_url)
    assert res.code == 1  # the health job's latest run failed
    health = [line for line in res.stdout.splitlines() if " failed " in line]
    assert health and f"deenroll health: 1 client(s) in error: {sick}" in health[0]
    assert res.stderr.strip().endswith("latest run failed: deenroll-health")

    for url in (supa_url, other_url):
        assert run_cli("schedule", "remove", db=url).code == 0


# --------------------------------------------------------------------------- pg_cron's default mode

PG15 = Path("/usr/lib/postgresql/15/bin")
AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # the server refuses root


def _pg15(program: str, *args: str) -> None:
    done = subprocess.run([*AS_POSTGRES, str(PG15 / program), *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{program} failed: {done.stdout}{done.stderr}"


@pg_cron
@pytest.mark.slow
def test_a_job_that_cannot_connect_is_shown_failed_with_pg_crons_message(cron_db: str) -> None:
    """pg_cron's default mode: each job connects over libpq to cron.host (localhost). A server
    that listens on no TCP address (or asks for a password the job does not have) fails every
    job with `connection failed`, and `schedule status` says so plainly."""
    home = Path(tempfile.mkdtemp(prefix="deenroll-cron-libpq-"))
    data = home / "data"
    try:
        if AS_POSTGRES:
            shutil.chown(home, "postgres")
        _pg15("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses='' -k {home} -p 54317 -c fsync=off -c shared_preload_libraries=pg_cron "
                   "-c cron.database_name=postgres")
        _pg15("pg_ctl", "start", "-D", str(data), "-l", str(home / "log"), "-w", "-o", options)
        try:
            url = f"postgresql://postgres@/postgres?host={home}&port=54317"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION pg_cron")
            migrate(Target(url, "test"))
            res = run_cli("schedule", "install", "--every", "1 minute", db=url)
            assert res.code == 0, res.stderr
            end = time.monotonic() + 130
            with psycopg.connect(url, autocommit=True) as conn:
                while not conn.execute("SELECT count(*) FROM cron.job_run_details WHERE status = 'failed'").fetchone()[0]:
                    assert time.monotonic() < end, "pg_cron ran no job in 130 s"
                    time.sleep(0.5)
            res = run_cli("schedule", "status", db=url)
            assert res.code == 1
            failed = [line for line in res.stdout.splitlines() if " failed " in line]
            assert failed and failed[0].rstrip().endswith("connection failed"), res.stdout
            assert res.stderr.strip().endswith("latest run failed: deenroll-run")
        finally:
            subprocess.run([*AS_POSTGRES, str(PG15 / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate"],
                           capture_output=True, timeout=60)
    finally:
        shutil.rmtree(home, ignore_errors=True)
