"""`deenroll schedule` on a Supabase-like PostgreSQL 15 with pg_cron 1.4.2 in its default mode.

Jobs connect over TCP to cron.host (localhost) as their role, and the server asks for a scram
password: a job fails `connection failed` until the server's OS user has a .pgpass line. The
owner, `postgres`, is no superuser but has BYPASSRLS: it sees every role's jobs and may remove
another role's only with DELETE on cron.job. The cluster is this module's own
(tests/cron_default_mode.py); these tests do not use the suite's server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

import cron_default_mode as cdm
from conftest import add_campaign, add_leads, new_id, run_cli
from deenroll.database import Target
from deenroll.migrate.commands import migrate
from engine_data import refuse_lead

SCHEDULER_PASSWORD = "pw-scheduler:with\\colon"  # .pgpass escapes both


@pytest.fixture(scope="module")
def cluster() -> Iterator[cdm.Cluster]:
    why = cdm.missing()
    if why:
        pytest.skip(why)
    with cdm.cluster() as c:
        yield c


@pytest.fixture
def supa(cluster: cdm.Cluster) -> Iterator[cdm.Cluster]:
    """The cluster migrated by the owner, with the scheduler login (deenroll_runner, USAGE on
    cron given by the owner); afterwards no job, no grant on cron.job, no test table."""
    owner = cluster.url(cdm.OWNER)
    migrate(Target(owner, "test"))
    with psycopg.connect(owner, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (cdm.SCHEDULER,)).fetchone():
            conn.execute(f"CREATE ROLE {cdm.SCHEDULER} LOGIN IN ROLE deenroll_runner")
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(cdm.SCHEDULER),
                                                                  sql.Literal(SCHEDULER_PASSWORD)))
        conn.execute(f"GRANT deenroll_runner TO {cdm.SCHEDULER}")
        conn.execute(f"GRANT USAGE ON SCHEMA cron TO {cdm.SCHEDULER}")
    yield cluster
    with cluster.admin() as conn:
        conn.execute("DELETE FROM cron.job")
        conn.execute("DELETE FROM cron.job_run_details")
        conn.execute(f"REVOKE DELETE ON cron.job FROM {cdm.OWNER}")
        conn.execute("DROP TRIGGER IF EXISTS zz_refuse ON leads")
        conn.execute("DROP FUNCTION IF EXISTS zz_refuse()")


def _jobs(c: cdm.Cluster) -> list[tuple]:
    with c.admin() as conn:
        return conn.execute("SELECT jobname, username, schedule FROM cron.job ORDER BY jobname, username").fetchall()


def _sql_route(c: cdm.Cluster) -> dict[str, int]:
    """The README's SQL pasted as postgres: job name -> job id."""
    with psycopg.connect(c.url(cdm.OWNER), autocommit=True) as conn:
        return {name: conn.execute("SELECT cron.schedule(%s, %s, %s)", (name, when, command)).fetchone()[0]
                for name, when, command in [
                    ("deenroll-run", "*/15 * * * *", "CALL deenroll.run_de_enrollment()"),
                    ("deenroll-health", "5 * * * *", "SELECT public.check_de_enrollment_health()"),
                    ("deenroll-cleanup", "30 3 1 * *", "SELECT public.archive_de_enrollment_history()")]}


@pytest.mark.slow
def test_a_job_that_cannot_connect_is_told_its_pgpass_line_and_then_runs(supa: cdm.Cluster) -> None:
    sched = supa.url(cdm.SCHEDULER)
    client = new_id()
    with psycopg.connect(supa.url(cdm.OWNER), autocommit=True) as conn:
        camp = add_campaign(conn, client, messages=2)
        finished = add_leads(conn, camp, client, 4, position=2)
        refuse_lead(conn, finished[0])
    res = run_cli("schedule", "install", "--every", "1 minute", db=sched)
    assert res.code == 0, res.stderr
    with supa.admin() as conn:
        jobid = conn.execute("SELECT jobid FROM cron.job WHERE jobname = 'deenroll-run'").fetchone()[0]
    failed = cdm.wait_for_job_run(supa, jobid)
    assert (failed["status"], failed["return_message"], failed["start_time"]) == ("failed", "connection failed", None)

    line = f"localhost:{supa.port}:postgres:{cdm.SCHEDULER}:<password of {cdm.SCHEDULER}>"
    res = run_cli("schedule", "status", db=sched)
    assert res.code == 1 and res.stderr.strip().endswith("latest run failed: deenroll-run")
    assert "  not started  failed" in res.stdout and "connection failed" in res.stdout
    assert f"`{line}`" in res.stderr and "127.0.0.1 there does not match localhost" in res.stderr
    assert "cron.use_background_workers = on" in res.stderr and "Supabase's own pg_cron needs none" in res.stderr
    doc = json.loads(run_cli("schedule", "status", "--json", db=sched).stdout)
    assert len(doc["notes"]) == 1 and f"`{line}`" in doc["notes"][0]
    # the owner may read cron.host? No: it is a superuser-only setting; the default is named as such
    assert "cron.host's default" in doc["notes"][0]

    escaped = SCHEDULER_PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    with cdm.pgpass_line(f"localhost:{supa.port}:postgres:{cdm.SCHEDULER}:{escaped}") as path:
        assert path.stat().st_mode & 0o777 == 0o600 and path.stat().st_uid == cdm.server_os_user().pw_uid
        ok = cdm.wait_for_job_run(supa, jobid, after_runid=failed["runid"])
    assert ok["status"] == "succeeded", ok

    # the newest run decides (the failure has no start time, yet is older); --runs 1 shows the newest
    res = run_cli("schedule", "status", "--runs", "1", db=sched)
    assert res.code == 0, res.stdout + res.stderr
    run_lines = [ln for ln in res.stdout.splitlines() if ln.startswith("  ")]
    assert len(run_lines) == 3 and " succeeded " in run_lines[0]  # health and cleanup: no run yet
    assert "note" not in res.stderr
    doc = json.loads(run_cli("schedule", "status", "--json", "--runs", "10", db=sched).stdout)
    run_job = doc["jobs"][0]
    assert run_job["latest_status"] == "succeeded" and doc["exit_code"] == 0 and doc["notes"] == []
    runids = [r["runid"] for r in run_job["last_runs"]]
    assert runids == sorted(runids, reverse=True) and runids[-1] == failed["runid"]
    made = next(r for r in run_job["last_runs"] if r["runid"] == ok["runid"])
    assert made["de_enrollment_runs"]["leads_de_enrolled"] == 3 and made["held"] == {"refused_by_trigger": 1}
    res = run_cli("schedule", "status", "--runs", "10", db=sched)
    assert "1 de-enrollment run(s) (1 success), 3 de-enrolled, held 1 (refused_by_trigger 1)" in res.stdout
    res = run_cli("schedule", "status", "--runs", "0", db=sched)
    assert res.code == 0 and "  newest run succeeded (--runs 0: runs not listed)" in res.stdout
    assert "no run yet" in res.stdout.split("deenroll-health", 1)[1]  # the others never ran


def test_the_sql_route_and_install_leave_one_schedule(supa: cdm.Cluster) -> None:
    sched, owner = supa.url(cdm.SCHEDULER), supa.url(cdm.OWNER)
    ids = _sql_route(supa)
    # the scheduler login cannot see nor remove postgres's jobs: install refuses, naming them
    res = run_cli("schedule", "install", db=sched)
    assert res.code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    for name, schedule in [("deenroll-run", "*/15 * * * *"), ("deenroll-health", "5 * * * *"),
                           ("deenroll-cleanup", "30 3 1 * *")]:
        assert (f"{name} (role postgres, job {ids[name]}, {schedule}): as postgres (or a role with DELETE on "
                f"cron.job) `SELECT cron.unschedule({ids[name]});`") in res.stderr
    assert {r[1] for r in _jobs(supa)} == {"postgres"}  # nothing changed
    res = run_cli("status", db=owner)
    assert "deenroll-run */15 * * * * as postgres" in res.stdout

    # the statements it gave, run as postgres; then install
    with psycopg.connect(owner, autocommit=True) as conn:
        for jobid in ids.values():
            conn.execute("SELECT cron.unschedule(%s)", (jobid,))
    assert run_cli("schedule", "install", db=sched).code == 0
    assert _jobs(supa) == [("deenroll-cleanup", cdm.SCHEDULER, "30 3 1 * *"),
                           ("deenroll-health", cdm.SCHEDULER, "5 * * * *"),
                           ("deenroll-run", cdm.SCHEDULER, "*/15 * * * *")]

    # the other way round: postgres, with DELETE on cron.job, installs its own and replaces them
    res = run_cli("schedule", "install", db=owner)
    assert res.code == 2 and "may not remove" in res.stderr
    with supa.admin() as conn:
        conn.execute(f"GRANT DELETE ON cron.job TO {cdm.OWNER}")
    res = run_cli("schedule", "install", "--json", db=owner)
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert sorted((j["name"], j["username"]) for j in doc["replaced"]) == [
        ("deenroll-cleanup", cdm.SCHEDULER), ("deenroll-health", cdm.SCHEDULER), ("deenroll-run", cdm.SCHEDULER)]
    assert {r[1] for r in _jobs(supa)} == {"postgres"} and len(_jobs(supa)) == 3
    res = run_cli("schedule", "status", db=owner)
    assert res.stdout.count(" as postgres ") == 3 and "active jobs" not in res.stderr


def test_remove_as_a_bypassrls_owner_with_and_without_delete_on_cron_job(supa: cdm.Cluster) -> None:
    sched, owner = supa.url(cdm.SCHEDULER), supa.url(cdm.OWNER)
    assert run_cli("schedule", "install", db=sched).code == 0
    with psycopg.connect(owner, autocommit=True) as conn:  # a job of postgres's own, calling our function
        own = conn.execute("SELECT cron.schedule('nightly-health', '0 2 * * *', "
                           "'SELECT public.check_de_enrollment_health()')").fetchone()[0]
        conn.execute("SELECT cron.schedule('not-ours', '0 2 * * *', 'SELECT 1')")

    res = run_cli("schedule", "remove", "--json", db=owner)
    assert res.code == 0 and res.stderr == "", res.stderr
    doc = json.loads(res.stdout)  # exactly one JSON object
    assert [(j["name"], j["jobid"]) for j in doc["removed"]] == [("nightly-health", own)]
    assert sorted((j["name"], j["username"]) for j in doc["kept"]) == [
        ("deenroll-cleanup", cdm.SCHEDULER), ("deenroll-health", cdm.SCHEDULER), ("deenroll-run", cdm.SCHEDULER)]
    assert all(j["statement"] == f"SELECT cron.unschedule({j['jobid']});" for j in doc["kept"])
    res = run_cli("schedule", "remove", db=owner)
    assert res.code == 0 and res.stdout.count("kept    deenroll-") == 3
    assert f"as {cdm.SCHEDULER} (or a role with DELETE on cron.job) `SELECT cron.unschedule(" in res.stdout

    with supa.admin() as conn:
        conn.execute(f"GRANT DELETE ON cron.job TO {cdm.OWNER}")
    doc = json.loads(run_cli("schedule", "remove", "--json", db=owner).stdout)
    assert len(doc["removed"]) == 3 and doc["kept"] == []
    assert _jobs(supa) == [("not-ours", "postgres", "0 2 * * *")]


def test_rollback_and_uninstall_take_the_jobs_with_them(supa: cdm.Cluster) -> None:
    sched, owner = supa.url(cdm.SCHEDULER), supa.url(cdm.OWNER)
    assert run_cli("schedule", "install", db=sched).code == 0
    with psycopg.connect(sched, autocommit=True) as conn:  # one of ours calling what is not there
        conn.execute("SELECT cron.schedule('deenroll-extra', '0 0 1 1 *', 'SELECT public.no_such_function_x()')")
    res = run_cli("verify", db=owner)
    assert res.code == 1
    fails = [ln for ln in res.stdout.splitlines() if ln.startswith("FAIL")]
    assert len(fails) == 1 and fails[0].startswith("FAIL  pg_cron job deenroll-extra (job ")
    assert "calls public.no_such_function_x, which does not exist" in res.stdout
    assert "deenroll-extra 0 0 1 1 * as deenroll_scheduler (calls missing public.no_such_function_x)" in \
        run_cli("status", db=owner).stdout

    # the owner may not remove the scheduler's jobs: nothing is rolled back
    res = run_cli("rollback", "--to", "0027", db=owner)
    assert res.code == 2 and "rollback --to 0027_track_due_campaigns would leave pg_cron jobs" in res.stderr
    # the run's job and the health job (which alerts, from 0030 on) call what it drops; cleanup does not
    assert "deenroll-run (role deenroll_scheduler, job" in res.stderr and "deenroll-cleanup" not in res.stderr
    assert "deenroll-health (role deenroll_scheduler, job" in res.stderr
    assert "0028_detect_dead_runs" in run_cli("status", db=owner).stdout.split("pending")[0]
    with supa.admin() as conn:
        conn.execute(f"GRANT DELETE ON cron.job TO {cdm.OWNER}")
    res = run_cli("rollback", "--to", "0027", db=owner)
    assert res.code == 0, res.stderr
    assert "rolled back 0028_detect_dead_runs" in res.stdout
    assert "removed pg_cron job deenroll-run (job " in res.stdout
    assert "removed pg_cron job deenroll-health (job " in res.stdout
    assert [r[0] for r in _jobs(supa)] == ["deenroll-cleanup", "deenroll-extra"]

    with supa.admin() as conn:
        conn.execute(f"REVOKE DELETE ON cron.job FROM {cdm.OWNER}")
    res = run_cli("uninstall", "--yes", db=owner)
    assert res.code == 2 and "uninstall would leave pg_cron jobs" in res.stderr
    assert run_cli("status", "--json", db=owner).stdout.count('"applied": true') > 1  # nothing changed
    with supa.admin() as conn:
        conn.execute(f"GRANT DELETE ON cron.job TO {cdm.OWNER}")
    res = run_cli("uninstall", "--yes", "--json", db=owner)
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert sorted(j["name"] for j in doc["removed_jobs"]) == ["deenroll-cleanup", "deenroll-extra"]
    assert _jobs(supa) == []
