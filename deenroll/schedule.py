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
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import conninfo

from . import database, queries
from .errors import UserError
from .schedule_alerts import Webhook, alert_state, check_webhook, keep_webhook

PREFIX = "deenroll-"
RUN_JOB = "deenroll-run"
DEFAULT_EVERY = "15 minutes"
# The functions the jobs' commands call: the role the jobs run as must be able to execute them.
JOB_FUNCTIONS = ("deenroll.run_de_enrollment", "public.archive_de_enrollment_history",
                 "public.check_de_enrollment_health", "deenroll.alert_de_enrollment_health")
# What reads the database's alert webhook and its deliveries (granted to deenroll_runner).
SCHEDULE_IN_DATABASE = "cron.schedule_in_database(text,text,text,text,text,boolean)"


# At five past the hour: a run every 15 (or 5, 10, 20, 30) minutes never starts on that minute,
# so the health check does not count as stuck the leads that minute's run is de-enrolling.
HEALTH_SCHEDULE = "5 * * * *"
CLEANUP_SCHEDULE = "30 3 1 * *"


@dataclass(frozen=True)
class Job:
    name: str
    schedule: str
    command: str
    kind: str  # run, health or cleanup: what deenroll.de_enrollment_cron_jobs calls a job of ours


def jobs(every_schedule: str) -> list[Job]:
    """Our jobs: each one statement (a procedure that commits must be its job's only statement),
    kept with the other statements in queries_schedule.sql."""
    command = queries.all_queries()
    return [
        Job(RUN_JOB, every_schedule, command["job_run"], "run"),
        Job("deenroll-health", HEALTH_SCHEDULE, command["job_health"], "health"),
        Job("deenroll-cleanup", CLEANUP_SCHEDULE, command["job_cleanup"], "cleanup"),
    ]


_EVERY = re.compile(r"(\d+) *(second|seconds|sec|s|minute|minutes|min|m|hour|hours|h)")
_CRON_FIELD = re.compile(r"[0-9*/,\-A-Za-z]+")


def parse_every(text: str) -> str:
    """--every as pg_cron's schedule: '15 minutes', '1 hour', '30 seconds' (pg_cron 1.5+) or a
    cron expression of five fields, which pg_cron checks itself."""
    t = " ".join(text.split()).lower()
    m = _EVERY.fullmatch(t)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        if unit.startswith("s") and 1 <= n <= 59:
            return f"{n} seconds"
        if unit.startswith("m") and 1 <= n <= 59:
            return "* * * * *" if n == 1 else f"*/{n} * * * *"
        if unit.startswith("h") and 1 <= n <= 23:
            return "0 * * * *" if n == 1 else f"0 */{n} * * *"
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

    @property
    def same_database(self) -> bool:
        return self.dbname == self.cron_database


def missing_message(server_version: str) -> str:
    return (
        f"pg_cron is not available on this server (PostgreSQL {server_version}): `deenroll schedule` needs the "
        "pg_cron extension (Supabase: Database > Extensions > pg_cron); otherwise schedule `deenroll run` on a host"
    )


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
    with database.connect(target, autocommit=True) as conn:
        ctx = queries.rows(conn, "cron_context")[0]
        cron_db = _cron_database(conn, ctx, cron_database)
        if cron_db is None:
            raise UserError(missing_message(ctx["server_version"]))
        if cron_db == ctx["dbname"]:
            if not ctx["cron_here"]:
                raise UserError(
                    f"pg_cron is loaded but not created in database {cron_db}: a superuser runs "
                    "`CREATE EXTENSION pg_cron;` there (Supabase: Database > Extensions > pg_cron)"
                )
            yield Where(conn, conn, ctx["dbname"], cron_db, ctx["login"], ctx["superuser"])
            return
        other = database.Target(conninfo.make_conninfo(target.dsn, dbname=cron_db), target.source)
        try:
            cron = database.connect(other, autocommit=True)
        except UserError as exc:
            raise UserError(
                f"pg_cron keeps its jobs in database {cron_db} of this server and login {ctx['login']} cannot "
                f"connect to it ({exc}): a superuser runs `GRANT CONNECT ON DATABASE {cron_db} TO {ctx['login']};`"
                + ("" if cron_database else "; or name the right one with --cron-database")
            ) from None
        with cron:
            if not queries.rows(cron, "cron_context")[0]["cron_here"]:
                raise UserError(
                    f"pg_cron is loaded on this server but its schema is not in database {cron_db}"
                    + (f" (login {ctx['login']} may not read cron.database_name, which names its database: "
                       f"pass --cron-database, or a superuser runs `GRANT pg_read_all_settings TO {ctx['login']};`)"
                       if not cron_database else "")
                    + (f": a superuser runs `CREATE EXTENSION pg_cron;` in database {cron_db}"
                       if cron_database else "")
                )
            yield Where(conn, cron, ctx["dbname"], cron_db, ctx["login"], ctx["superuser"])


# --------------------------------------------------------------------------- install


@dataclass
class Installed:
    jobs: list[dict[str, Any]]
    database: str
    cron_database: str
    role: str
    notes: list[str] = field(default_factory=list)
    replaced: list[dict[str, Any]] = field(default_factory=list)  # other jobs of ours for this database, removed
    # the database's alert webhook after the install: {"webhook": scheme://host or None, "set": whether
    # this install set it, "source": where the URL came from}; None before the release that sends alerts
    alerts: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        # the database the jobs run in is the document's "database" (print_json adds it)
        return {"jobs": self.jobs, "replaced": self.replaced, "cron_database": self.cron_database,
                "role": self.role, "alerts": self.alerts, "notes": self.notes}


def _job_role(where: Where, as_role: str | None, notes: list[str]) -> str:
    """The role the jobs will run as, checked: it exists, may log in, may run the commands, and
    is not a superuser while a login member of deenroll_runner could run them instead."""
    missing = [r["name"] for r in queries.rows(where.conn, "missing_functions", functions=list(JOB_FUNCTIONS))]
    if missing:
        raise UserError(f"{', '.join(missing)} does not exist in database {where.dbname}: run `deenroll migrate` first")
    found = queries.rows(where.conn, "schedule_job_role", role=as_role, functions=list(JOB_FUNCTIONS))
    if not found:
        raise UserError(f"--as {as_role}: no such role")
    r = found[0]
    role = r["role"]
    if as_role and not where.superuser and not r["login_may_set_role"]:
        raise UserError(f"login {where.login} may not act as role {role}: GRANT {role} TO {where.login}, "
                        f"or run `deenroll schedule install` logged in as {role}")
    if not r["can_login"]:
        raise UserError(f"role {role} cannot log in, and pg_cron runs each job as the role that scheduled it: "
                        "choose a login role that is a member of deenroll_runner (--as)")
    if r["superuser"]:
        logins = [row["rolname"] for row in queries.rows(where.conn, "runner_logins")]
        if logins:
            raise UserError(f"the jobs would run as superuser {role}: schedule them as a login member of "
                            f"deenroll_runner instead, with --as {logins[0]}"
                            + (f" (or {', '.join(logins[1:])})" if len(logins) > 1 else ""))
        notes.append(f"the jobs run as superuser {role}: no login role is a member of deenroll_runner "
                     "(CREATE ROLE ... LOGIN IN ROLE deenroll_runner, then install again with --as it)")
    elif r["cannot_execute"] and r["is_runner"]:
        raise UserError(f"deenroll_runner may not run {', '.join(r['cannot_execute'])}: `deenroll migrate` "
                        "applies the grants of this release")
    elif r["cannot_execute"]:
        raise UserError(f"role {role} may not run the jobs' commands ({', '.join(r['cannot_execute'])}): "
                        f"the role that migrated runs `GRANT deenroll_runner TO {role};`")
    return role


def who_may_grant(grantors: list[str]) -> str:
    """Who can give a pg_cron right: a superuser, or a role holding it WITH GRANT OPTION."""
    holders = f"here {', '.join(grantors)}; " if grantors else ""
    return f"a superuser or a role holding it WITH GRANT OPTION ({holders}on Supabase, postgres)"


def _check_cron_rights(where: Where, acting: str, acting_is_superuser: bool) -> None:
    if acting_is_superuser:
        return
    rights = queries.rows(where.cron, "cron_rights", role=acting)[0]
    if not rights["usage_on_cron"]:
        raise UserError(f"role {acting} may not use pg_cron: in database {where.cron_database}, "
                        f"{who_may_grant(rights['usage_grantors'])} runs `GRANT USAGE ON SCHEMA cron TO {acting};`")
    if where.same_database:
        return
    if not rights["has_schedule_in_database"]:
        raise UserError(f"pg_cron {rights['version']} keeps its jobs in database {where.cron_database} and has no "
                        "cron.schedule_in_database (pg_cron 1.4+): upgrade it (ALTER EXTENSION pg_cron UPDATE), "
                        f"or migrate deenroll into {where.cron_database}")
    if not rights["may_schedule_in_database"]:
        raise UserError(f"role {acting} may not schedule jobs for database {where.dbname} (pg_cron keeps its jobs "
                        f"in {where.cron_database}): in database {where.cron_database}, "
                        f"{who_may_grant(rights['schedule_in_database_grantors'])} runs "
                        f"`GRANT EXECUTE ON FUNCTION {SCHEDULE_IN_DATABASE} TO {acting};`")


# --------------------------------------------------------------------------- the jobs of a database


def found_jobs(where: Where) -> list[dict[str, Any]]:
    """Our jobs for this database (named deenroll-..., or calling the jobs' functions), each with
    the job it stands for (kind) and whether this login may remove it; every role's where pg_cron
    lives in our database and the role that migrated may read them, else those the login sees.
    The run's first, then health, cleanup, and any other of ours."""
    found = {j["jobid"]: j for j in queries.rows(where.cron, "cron_our_jobs", database=where.dbname)}
    if where.same_database and not queries.rows(where.conn, "missing_functions",
                                                functions=["deenroll.de_enrollment_cron_jobs"]):
        try:
            for j in queries.rows(where.cron, "cron_our_jobs_all_roles", database=where.dbname):
                found.setdefault(j["jobid"], j)
        except psycopg.errors.InsufficientPrivilege:
            pass  # a login that is not a member of deenroll_runner: the jobs it sees
    me = queries.rows(where.cron, "cron_login_rights")[0]
    for j in found.values():
        j["may_remove"] = j["username"] == me["login"] or me["may_remove_any"]
    if found:
        calls = queries.rows(where.conn, "job_command_calls", commands=[j["command"] for j in found.values()])
        for j, c in zip(found.values(), calls):
            j["calls"], j["calls_missing"] = c["calls"], c["missing"]
    order = ["run", "health", "cleanup"]
    return sorted(found.values(), key=lambda j: (order.index(j["kind"]) if j["kind"] in order else len(order),
                                                 j["jobname"], j["username"], j["jobid"]))


def unschedule_statement(j: dict[str, Any]) -> str:
    return (f"{j['jobname']} (role {j['username']}, job {j['jobid']}, {j['schedule']}): as {j['username']} "
            f"(or a role with DELETE on cron.job) `SELECT cron.unschedule({j['jobid']});`")


def _brief(j: dict[str, Any]) -> dict[str, Any]:
    return {"jobid": j["jobid"], "name": j["jobname"], "schedule": j["schedule"], "username": j["username"]}


# --------------------------------------------------------------------------- install


def install(target: database.Target, every_schedule: str, as_role: str | None,
            cron_database: str | None = None, webhook: Webhook | None = None) -> Installed:
    """Create or update our jobs, all of them or none (one transaction in pg_cron's database).
    One schedule per database: another job of ours of the same kind for this database (another
    role's, or another name) is replaced where the login may remove it; otherwise nothing
    changes and the error names each with the statement that removes it.
    webhook: kept as the database's alert webhook in the same go (checked before any job
    changes: pg_net, the login's right, the URL)."""
    notes: list[str] = []
    with located(target, cron_database) as where:
        role = _job_role(where, as_role, notes)
        by_name = where.superuser and role != where.login  # a superuser names the job's role
        acting = where.login if by_name or role == where.login else role
        _check_cron_rights(where, acting, where.superuser and acting == where.login)
        if webhook is not None and not check_webhook(where, webhook, notes):
            webhook = None
        with where.conn.transaction():  # the webhook is kept only if the jobs are
            kept = keep_webhook(where, webhook, notes) if webhook is not None else None
            installed = _install_jobs(where, every_schedule, role, by_name, acting, notes)
        state = alert_state(where.conn)
        if state is not None:
            installed.alerts = {"webhook": state["target"], "set": kept is not None,
                                "source": webhook.source if kept is not None and webhook else None,
                                "pg_net_problem": state["pg_net_problem"]}
        return installed


def _install_jobs(where: Where, every_schedule: str, role: str, by_name: bool, acting: str,
                  notes: list[str]) -> Installed:
    ours = {(job.name, role) for job in jobs(every_schedule)}
    kinds = {job.kind for job in jobs(every_schedule)}
    others = [j for j in found_jobs(where)
              if j["kind"] in kinds and (j["jobname"], j["username"]) not in ours]
    replace = [j for j in others if j["active"]]
    blocked = [j for j in replace if not j["may_remove"]]
    if blocked:
        raise UserError(
            f"database {where.dbname} already has deenroll jobs that login {where.login} may not remove, and "
            f"pg_cron would run both schedules: " + "; ".join(unschedule_statement(j) for j in blocked)
            + "; then install again (or keep those and skip this install)"
        )
    for j in others:
        if not j["active"]:
            notes.append(f"inactive job {j['jobname']} of role {j['username']} (job {j['jobid']}) left as it is: "
                         f"`SELECT cron.unschedule({j['jobid']});` removes it")
    done: list[dict[str, Any]] = []
    replaced: list[dict[str, Any]] = []
    with where.cron.transaction():
        for j in replace:
            queries.run(where.cron, "cron_unschedule", jobid=j["jobid"])
            replaced.append(_brief(j))
        if acting != where.login:
            queries.run(where.cron, "set_role", role=role)
        for job in jobs(every_schedule):
            before = queries.rows(where.cron, "cron_job_named", name=job.name, role=role)
            if before and before[0]["database"] != where.dbname:
                raise UserError(
                    f"job {job.name} of role {role} already runs in database {before[0]['database']}, and pg_cron "
                    "keys jobs by name and role: remove it there first (`deenroll --database-url <that database> "
                    "schedule remove`), or schedule as another role (--as)"
                )
            try:
                if where.same_database and not by_name:
                    jobid = queries.value(where.cron, "cron_schedule", name=job.name, schedule=job.schedule,
                                          command=job.command)
                else:
                    jobid = queries.value(where.cron, "cron_schedule_in_database", name=job.name,
                                          schedule=job.schedule, command=job.command, database=where.dbname,
                                          username=role if by_name else None)
            except psycopg.errors.InvalidParameterValue as exc:
                seconds = " (schedules in seconds need pg_cron 1.5 or later)" if "second" in job.schedule else ""
                raise UserError(f"pg_cron refuses the schedule of {job.name}: {exc.diag.message_primary}"
                                f"{seconds}") from None
            if not before:
                action = "created"
            elif (before[0]["schedule"], before[0]["command"]) == (job.schedule, job.command):
                action = "unchanged"
            else:
                action = "updated"
            active = before[0]["active"] if before else True
            if not active:
                notes.append(f"job {job.name} is inactive (cron.alter_job(..., active := true) resumes it)")
            done.append({"jobid": jobid, "name": job.name, "schedule": job.schedule, "command": job.command,
                         "username": role, "active": active, "action": action})
    return Installed(done, where.dbname, where.cron_database, role, notes, replaced)


def unschedule(where: Where, found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    removed: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for j in found:
        if j["may_remove"]:
            try:
                queries.run(where.cron, "cron_unschedule", jobid=j["jobid"])
                removed.append(_brief(j))
                continue
            except psycopg.errors.InsufficientPrivilege:
                pass
        kept.append({**_brief(j), "why": f"login {where.login} may not remove a job of role {j['username']}",
                     "statement": f"SELECT cron.unschedule({j['jobid']});"})
    return {"removed": removed, "kept": kept}


@contextmanager
def jobs_of_database(target: database.Target) -> Iterator[tuple[Where | None, list[dict[str, Any]]]]:
    """For migrate's commands: pg_cron's place and our jobs for this database, or (None, []) where
    pg_cron is not available or the login may not read its jobs."""
    stack = ExitStack()
    try:
        where = stack.enter_context(located(target))
        found = found_jobs(where)
    except (UserError, psycopg.errors.InsufficientPrivilege):
        stack.close()
        yield None, []
        return
    with stack:
        yield where, found
