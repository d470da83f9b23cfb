"""`deenroll schedule status` and `remove`, and `deenroll status`'s line on the schedule: our
jobs in pg_cron, their newest runs (with what to do for a run that could not start), the
de-enrollment runs each made, the alerts the database sent."""

from __future__ import annotations

from typing import Any

import psycopg

from . import database, queries
from .errors import UserError, one_line
from .schedule import Where, found_jobs, located, pick, unschedule, unschedule_statement
from .schedule_alerts import MIGRATED_BEFORE, alert_state, alerts_status


def _not_started_note(where: Where, j: dict[str, Any], message: str) -> str:
    """Why a job run failed before its command ran, and what to do."""
    head = f"job {j['jobid']} ({j['name']}, as {j['username']}) failed before its command ran ({message})"
    if message != "connection failed":
        return (f"{head}: pg_cron could not start it; the server's log says why (with "
                "cron.use_background_workers = on, max_worker_processes must leave room for the jobs)")
    s = queries.rows(where.cron, "cron_connection_settings")[0]
    host = s["host"] or "localhost"
    known = "" if s["host"] else " (cron.host's default; this login may not read the setting)"
    line = ":".join(v.replace("\\", "\\\\").replace(":", "\\:")  # a field of .pgpass, escaped
                    for v in (host, s["port"], j["database"], j["username"])) \
        + f":<password of {j['username']}>"
    return (f"{head}: in its default mode pg_cron connects each job over TCP to cron.host, {host}{known}, as the "
            f"job's role, and this server asks that role for a password. Either give the server's operating-system "
            f"user (usually postgres) this line in its ~/.pgpass (mode 0600): `{line}` (libpq matches the host field "
            f"as written: 127.0.0.1 there does not match {host}); or set cron.host to the server's socket directory "
            f"(e.g. /var/run/postgresql) with a pg_hba.conf `local` line that admits {j['username']} without a "
            "password (peer with a map from the operating-system user, or trust); or set "
            "cron.use_background_workers = on and restart the server (jobs then need no connection). "
            "Supabase's own pg_cron needs none of this")


def _windows(where: Where, runs: list[dict[str, Any]]) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, int]]]:
    """For runs of run jobs that started: the de-enrollment runs each made, and the leads those
    still hold by reason, keyed by pg_cron's run id (each job run's window: cron_last_runs)."""
    started = [r for r in runs if r["start_time"] is not None]  # a job that could not connect never started
    windows = {"runids": [r["runid"] for r in started], "pids": [r["job_pid"] for r in started],
               "starts": [r["start_time"] for r in started], "ends": [r["window_end"] for r in started]}
    found: dict[str, dict[int, Any]] = {"made": {}, "held": {}}
    for key, name in (("made", "runs_of_job_runs"), ("held", "held_of_job_runs")):
        try:
            found[key] = {r["runid"]: r[key] for r in queries.rows(where.conn, name, **windows)} if started else {}
        except MIGRATED_BEFORE:
            pass  # nothing shown beside the job runs
    return found["made"], found["held"]


def status(target: database.Target, runs: int, cron_database: str | None = None) -> dict[str, Any]:
    """Our jobs in pg_cron, each with its newest runs (by pg_cron's run id), the de-enrollment
    runs they made and the leads those left held; the newest run of each decides `latest_status`."""
    with located(target, cron_database) as where:
        found = found_jobs(where)
        last = queries.rows(where.cron, "cron_last_runs", jobids=[j["jobid"] for j in found], limit=max(runs, 1))
        run_jobs = {j["jobid"] for j in found if j["kind"] == "run"}
        made, held = _windows(where, [r for r in last if r["jobid"] in run_jobs and runs > 0])
        out, notes = [], []
        for j in found:
            job_runs = [r for r in last if r["jobid"] == j["jobid"]]
            newest = job_runs[0] if job_runs else None
            if newest and newest["failed_before_command"]:
                notes.append(_not_started_note(where, j, (newest["message"] or "").strip()))
            if j["calls_missing"]:
                notes.append(f"job {j['jobid']} ({j['name']}, as {j['username']}) calls "
                             f"{', '.join(j['calls_missing'])}, which does not exist in database {where.dbname}: "
                             f"every run fails; `deenroll migrate` installs it, or as {j['username']} "
                             f"`SELECT cron.unschedule({j['jobid']});` removes the job")
            shown = [{**pick(r, "runid", "start_time", "end_time", "duration_ms", "status", "message"),
                      **({"de_enrollment_runs": made[r["runid"]], "held": held.get(r["runid"], {})}
                         if r["runid"] in made else {})}
                     for r in job_runs[:runs]]
            out.append({**pick(j, "jobid", "name", "kind", "schedule", "command", "username", "active",
                                "calls_missing"),
                        "latest_status": newest["status"] if newest else None, "last_runs": shown})
        for kind in ("run", "health", "cleanup"):
            twins = [j for j in found if j["kind"] == kind and j["active"]]
            if len(twins) > 1:
                notes.append(f"{len(twins)} active {kind} jobs for database {where.dbname}, so pg_cron runs each: "
                             + "; ".join(unschedule_statement(j) for j in twins[1:])
                             + " (or `deenroll schedule install` as the login whose jobs should stay)")
        if not found and not where.superuser:
            notes.append(f"pg_cron shows login {where.login} only its own jobs: jobs another role scheduled "
                         "may not be listed")
        return {"database": where.dbname, "cron_database": where.cron_database, "jobs": out,
                "alerts": alerts_status(where.conn, runs), "notes": notes}


def remove(target: database.Target, cron_database: str | None = None) -> dict[str, Any]:
    """Unschedule our jobs for this database that the login may remove; the others, kept, with
    their owners and the statement that removes them; and the alert webhook, which stays (as
    scheme://host; None when there is none). Never fails on a permission."""
    with located(target, cron_database) as where:
        done: dict[str, Any] = unschedule(where, found_jobs(where))
        state = alert_state(where.conn)
        return {**done, "alert_webhook": state["webhook"] if state else None}


def summary(target: database.Target) -> dict[str, Any]:
    """For `deenroll status`: whether an in-database schedule exists; never raises."""
    try:
        with located(target) as where:
            return {"pg_cron": True, "cron_database": where.cron_database,
                    "jobs": [pick(j, "jobid", "name", "kind", "schedule", "active", "username", "calls_missing")
                             for j in found_jobs(where)]}
    except UserError as exc:
        return {"pg_cron": False, "jobs": [], "reason": str(exc)}
    except psycopg.Error as exc:
        return {"pg_cron": None, "jobs": [], "reason": one_line(exc)}


def summary_line(s: dict[str, Any]) -> str:
    """summary() in a few words, for `deenroll status`."""
    if s["jobs"]:
        return ", ".join(f"{j['name']} {j['schedule']} as {j['username']}" + ("" if j["active"] else " (inactive)")
                         + (f" (calls missing {', '.join(j['calls_missing'])})" if j["calls_missing"] else "")
                         for j in s["jobs"])
    if s["pg_cron"]:
        return "none (`deenroll schedule install` adds it)"
    return "none: " + s["reason"].removeprefix("deenroll: ")
