"""`deenroll schedule`: where pg_cron keeps its jobs, which jobs are ours, installing them.
(Their runs and removing them: schedule_status; the database's alert webhook: schedule_alerts.)

pg_cron keeps its jobs in one database of the server (the setting cron.database_name). When
that is the database deenroll is migrated in, jobs are made with cron.schedule; when it is
another one, this connects there with the same login and uses cron.schedule_in_database. A
job runs as the role that scheduled it, so the jobs are scheduled as a login member of
deenroll_runner (--as), never as a superuser while such a login exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import conninfo

from . import database, queries
from .errors import UserError
from .schedule_alerts import MIGRATED_BEFORE, Webhook, alert_state, check_webhook, keep_webhook

DEFAULT_EVERY = "15 minutes"


def jobs(every_schedule: str) -> list[dict[str, str]]:
    """Our jobs: each one statement (a procedure that commits must be its job's only statement),
    kept with the other statements in queries_schedule.sql; kind (run, health or cleanup) is what
    deenroll.de_enrollment_cron_jobs calls a job of ours. Health at five past the hour: a run every
    15 (or 5, 10, 20, 30) minutes never starts on that minute, so the health check does not count
    as stuck the leads that minute's run is de-enrolling."""
    return [{"name": f"deenroll-{kind}", "schedule": schedule, "command": queries.all_queries()[f"job_{kind}"],
             "kind": kind}
            for kind, schedule in (("run", every_schedule), ("health", "5 * * * *"), ("cleanup", "30 3 1 * *"))]


_EVERY = re.compile(r"(\d+) *(second|seconds|sec|s|minute|minutes|min|m|hour|hours|h)")
_CRON_FIELD = re.compile(r"[0-9*/,\-A-Za-z]+")


def parse_every(text: str) -> str:
    """--every as pg_cron's schedule: '15 minutes', '1 hour', '30 seconds' (pg_cron 1.5+) or a
    cron expression of five fields, which pg_cron checks itself."""
    m = _EVERY.fullmatch(" ".join(text.split()).lower())
    if m:
        n, unit = int(m.group(1)), m.group(2)[0]
        if 1 <= n <= (23 if unit == "h" else 59):
            return {"s": f"{n} seconds", "m": "* * * * *" if n == 1 else f"*/{n} * * * *",
                    "h": "0 * * * *" if n == 1 else f"0 */{n} * * *"}[unit]
    else:
        fields = text.split()
        if len(fields) == 5 and all(_CRON_FIELD.fullmatch(f) for f in fields):
            return " ".join(fields)
    raise UserError(
        f"--every {text!r}: expected '15 minutes' (1-59), '2 hours' (1-23), '30 seconds' (1-59, pg_cron 1.5+) "
        "or a cron expression of five fields like '*/15 * * * *'"
    )


# --------------------------------------------------------------------------- where pg_cron is


@dataclass
class Where:
    conn: psycopg.Connection  # the database deenroll is migrated in
    cron: psycopg.Connection  # pg_cron's database (the same connection when it is the same)
    dbname: str
    cron_database: str
    login: str
    superuser: bool


def _cron_database(conn: psycopg.Connection, ctx: dict[str, Any], given: str | None) -> str | None:
    """The database pg_cron keeps its jobs in: this one when its schema is here, else the server's
    cron.database_name, else (a login that may not read that setting) --cron-database or pg_cron's
    default, postgres. None when the server did not load pg_cron."""
    if ctx["cron_here"]:
        return ctx["dbname"]
    try:
        name = queries.value(conn, "cron_database_name")
    except psycopg.errors.InsufficientPrivilege:
        return given or "postgres"
    return None if name is None else given or name


@contextmanager
def located(target: database.Target, cron_database: str | None = None) -> Iterator[Where]:
    """Both connections, or one clear error saying why pg_cron cannot be used from here."""
    with database.connect(target, autocommit=True) as conn, ExitStack() as stack:
        ctx = queries.rows(conn, "cron_context")[0]
        cron_db = _cron_database(conn, ctx, cron_database)
        if cron_db is None:
            raise UserError(
                f"pg_cron is not available on this server (PostgreSQL {ctx['server_version']}): `deenroll schedule` "
                "needs the pg_cron extension (Supabase: Database > Extensions > pg_cron); otherwise schedule "
                "`deenroll run` on a host")
        if cron_db == ctx["dbname"] and not ctx["cron_here"]:
            raise UserError(f"pg_cron is loaded but not created in database {cron_db}: a superuser runs "
                            "`CREATE EXTENSION pg_cron;` there (Supabase: Database > Extensions > pg_cron)")
        cron = conn
        if cron_db != ctx["dbname"]:
            other = database.Target(conninfo.make_conninfo(target.dsn, dbname=cron_db), target.source)
            try:
                cron = stack.enter_context(database.connect(other, autocommit=True))
            except UserError as exc:
                raise UserError(
                    f"pg_cron keeps its jobs in database {cron_db} of this server and login {ctx['login']} cannot "
                    f"connect to it ({exc}): a superuser runs `GRANT CONNECT ON DATABASE {cron_db} TO {ctx['login']};`"
                    + ("" if cron_database else "; or name the right one with --cron-database")
                ) from None
            if not queries.rows(cron, "cron_context")[0]["cron_here"]:
                raise UserError(
                    f"pg_cron is loaded on this server but its schema is not in database {cron_db}"
                    + (f": a superuser runs `CREATE EXTENSION pg_cron;` in database {cron_db}" if cron_database else
                       f" (login {ctx['login']} may not read cron.database_name, which names its database: "
                       f"pass --cron-database, or a superuser runs `GRANT pg_read_all_settings TO {ctx['login']};`)"))
        yield Where(conn, cron, ctx["dbname"], cron_db, ctx["login"], ctx["superuser"])


# --------------------------------------------------------------------------- the jobs of a database


def found_jobs(where: Where) -> list[dict[str, Any]]:
    """Our jobs for this database (named deenroll-..., or calling the jobs' functions), each with
    the job it stands for (kind) and whether this login may remove it; every role's where pg_cron
    lives in our database and the role that migrated may read them, else those the login sees.
    The run's first, then health, cleanup, and any other of ours."""
    found = {j["jobid"]: j for j in queries.rows(where.cron, "cron_our_jobs", database=where.dbname)}
    if where.cron is where.conn:  # pg_cron in our database
        try:
            with where.cron.transaction():
                for j in queries.rows(where.cron, "cron_our_jobs_all_roles", database=where.dbname):
                    found.setdefault(j["jobid"], j)
        except (psycopg.errors.InsufficientPrivilege, *MIGRATED_BEFORE):
            pass  # a login that is not a member of deenroll_runner: the jobs it sees
    calls = queries.rows(where.conn, "job_command_calls", commands=[j["command"] for j in found.values()])
    for j, c in zip(found.values(), calls):
        j["calls"], j["calls_missing"] = c["calls"], c["missing"]
    order = ("run", "health", "cleanup", None)
    return sorted(found.values(), key=lambda j: (order.index(j["kind"]), j["name"], j["username"], j["jobid"]))


def unschedule_statement(j: dict[str, Any]) -> str:
    return (f"{j['name']} (role {j['username']}, job {j['jobid']}, {j['schedule']}): as {j['username']} "
            f"(or a role with DELETE on cron.job) `SELECT cron.unschedule({j['jobid']});`")


BRIEF = ("jobid", "name", "schedule", "username")  # a job in the lists of jobs replaced, removed or kept


def pick(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The given keys of a row, in that order (a job's or a run's shape in a document)."""
    return {k: row[k] for k in keys}


# --------------------------------------------------------------------------- install


def install(target: database.Target, every_schedule: str, as_role: str | None,
            cron_database: str | None = None, webhook: Webhook | None = None) -> dict[str, Any]:
    """Create or update our jobs, all of them or none (one transaction in pg_cron's database).
    One schedule per database: another job of ours of the same kind for this database (another
    role's, or another name) is replaced where the login may remove it; otherwise nothing
    changes and the error names each with the statement that removes it.
    webhook: kept as the database's alert webhook in the same go (checked before any job
    changes: pg_net, the login's right, the URL).
    The document of `install --json` (alerts: the database's alert webhook after the install,
    None before the release that sends alerts), with the database the jobs run in."""
    notes: list[str] = []
    with located(target, cron_database) as where:
        checked = queries.rows(where.conn, "schedule_job_role", role=as_role)[0]  # the role the jobs run as
        if checked["problem"]:
            raise UserError(checked["problem"])
        notes.extend(filter(None, [checked["note"]]))
        role = checked["role"]
        by_name = where.superuser and role != where.login  # a superuser names the job's role
        acting = where.login if by_name or role == where.login else role
        problem = queries.value(where.cron, "cron_rights", role=acting, database=where.dbname)
        if problem:
            raise UserError(problem)
        if webhook is not None and not check_webhook(where, webhook, notes):
            webhook = None
        with where.conn.transaction():  # the webhook is kept only if the jobs are
            kept = keep_webhook(where, webhook, notes) if webhook is not None else None
            done, replaced = _install_jobs(where, jobs(every_schedule), role, by_name, acting, notes)
        state = alert_state(where.conn)
        alerts = None if state is None else {
            "webhook": state["webhook"], "set": kept is not None,
            "source": webhook.source if kept is not None and webhook else None,
            "pg_net_problem": state["pg_net_problem"]}
        return {"jobs": done, "replaced": replaced, "cron_database": where.cron_database, "role": role,
                "alerts": alerts, "notes": notes, "database": where.dbname}


def _install_jobs(where: Where, ours: list[dict[str, str]], role: str, by_name: bool, acting: str,
                  notes: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The jobs made (with what scheduling did to each) and the other jobs of ours replaced."""
    others = [j for j in found_jobs(where) if j["kind"] in {job["kind"] for job in ours}
              and (j["name"], j["username"]) not in {(job["name"], role) for job in ours}]
    replace = [j for j in others if j["active"]]
    blocked = [j for j in replace if not j["may_remove"]]
    if blocked:
        raise UserError(
            f"database {where.dbname} already has deenroll jobs that login {where.login} may not remove, and "
            f"pg_cron would run both schedules: " + "; ".join(unschedule_statement(j) for j in blocked)
            + "; then install again (or keep those and skip this install)"
        )
    notes.extend(f"inactive job {j['name']} of role {j['username']} (job {j['jobid']}) left as it is: "
                 f"`SELECT cron.unschedule({j['jobid']});` removes it" for j in others if not j["active"])
    done: list[dict[str, Any]] = []
    with where.cron.transaction():
        for j in replace:
            queries.run(where.cron, "cron_unschedule", jobid=j["jobid"])
        if acting != where.login:
            queries.run(where.cron, "set_role", role=role)
        for job in ours:
            before = queries.rows(where.cron, "cron_job_named", **job, role=role)[0]
            if before["database"] not in (None, where.dbname):
                raise UserError(
                    f"job {job['name']} of role {role} already runs in database {before['database']}, and pg_cron "
                    "keys jobs by name and role: remove it there first (`deenroll --database-url <that database> "
                    "schedule remove`), or schedule as another role (--as)"
                )
            try:
                if where.cron is where.conn and not by_name:
                    jobid = queries.value(where.cron, "cron_schedule", **job)
                else:
                    jobid = queries.value(where.cron, "cron_schedule_in_database", **job,
                                          database=where.dbname, username=role if by_name else None)
            except psycopg.errors.InvalidParameterValue as exc:
                seconds = " (schedules in seconds need pg_cron 1.5 or later)" if "second" in job["schedule"] else ""
                raise UserError(f"pg_cron refuses the schedule of {job['name']}: {exc.diag.message_primary}"
                                f"{seconds}") from None
            if not before["active"]:
                notes.append(f"job {job['name']} is inactive (cron.alter_job(..., active := true) resumes it)")
            done.append({"jobid": jobid, **pick(job, "name", "schedule", "command"), "username": role,
                         **pick(before, "active", "action")})
    return done, [pick(j, *BRIEF) for j in replace]


def unschedule(where: Where, found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Unschedule the jobs the login may remove; the others kept, with why and the statement."""
    done: dict[str, list[dict[str, Any]]] = {"removed": [], "kept": []}
    for j in found:
        try:
            if j["may_remove"]:
                queries.run(where.cron, "cron_unschedule", jobid=j["jobid"])
                done["removed"].append(pick(j, *BRIEF))
                continue
        except psycopg.errors.InsufficientPrivilege:
            pass
        done["kept"].append({**pick(j, *BRIEF),
                             "why": f"login {where.login} may not remove a job of role {j['username']}",
                             "statement": f"SELECT cron.unschedule({j['jobid']});"})
    return done


@contextmanager
def jobs_of_database(target: database.Target) -> Iterator[tuple[Where | None, list[dict[str, Any]]]]:
    """For migrate's commands: pg_cron's place and our jobs for this database, or (None, []) where
    pg_cron is not available or the login may not read its jobs."""
    with ExitStack() as stack:
        try:
            where = stack.enter_context(located(target))
            found = found_jobs(where)
        except (UserError, psycopg.errors.InsufficientPrivilege):
            stack.close()
            yield None, []
            return
        yield where, found
