"""`deenroll schedule install | status | remove`: deenroll's jobs in pg_cron (Supabase Cron).

Thin, like the other commands: deenroll.schedule finds pg_cron and calls its functions; this
prints data on stdout and messages on stderr, or one JSON document with --json.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from . import alerts, schedule, schedule_alerts
from .schedule_status import remove as remove_jobs, status as jobs_status
from .cli_common import Context, describe_held, json_option, pass_ctx, print_json
from .errors import UserError


cron_database_option = click.option(
    "--cron-database", metavar="NAME",
    help="The database pg_cron keeps its jobs in, for a login that may not read cron.database_name "
         "(default: that setting; else this database when pg_cron is here; else postgres).")


@click.group("schedule")
def schedule_group() -> None:
    """Run deenroll inside the database with pg_cron (Supabase Cron): no host needed."""


@schedule_group.command("install")
@click.option("--every", default=schedule.DEFAULT_EVERY, show_default=True, metavar="PERIOD",
              help="How often deenroll-run runs: '15 minutes', '1 hour', '30 seconds' (pg_cron 1.5+) "
                   "or a cron expression like '*/15 * * * *'.")
@click.option("--as", "as_role", metavar="ROLE",
              help="The login role the jobs run as (a member of deenroll_runner). Default: the login.")
@click.option("--alert-webhook", "alert_webhook", metavar="URL",
              help="Where the database posts its alerts through pg_net (a run with a failed or partial client, "
                   "a health job finding errors). Default: DE_ENROLLMENT_ALERT_WEBHOOK when set. Needs pg_net "
                   "and the role that migrated deenroll; shown as scheme://host only.")
@cron_database_option
@json_option
@pass_ctx
def schedule_install(obj: Context, every: str, as_role: str | None, alert_webhook: str | None,
                     cron_database: str | None, as_json: bool) -> int:
    """Create or update the jobs deenroll-run (every 15 minutes), deenroll-health (hourly at :05:
    fails, naming the clients in error) and deenroll-cleanup (monthly). Safe to run again: it
    updates their schedules. One schedule per database: another role's deenroll jobs for this
    database are replaced where the login may remove them, else it refuses and names them. When
    pg_cron keeps its jobs in another database of the server, they are scheduled there with
    cron.schedule_in_database. With --alert-webhook (or DE_ENROLLMENT_ALERT_WEBHOOK) the database
    posts the alert `deenroll run` and `health-check` post, through pg_net, after the job's
    transaction commits; `deenroll schedule remove --alert-webhook` turns that off."""
    every_schedule = schedule.parse_every(every)
    if as_role is not None and not as_role.strip():
        raise UserError("--as needs a role name")
    if alert_webhook is not None and not alert_webhook.strip():
        raise UserError("--alert-webhook needs a URL")
    env_url = alerts.webhook_url()
    webhook = (schedule_alerts.Webhook(alert_webhook.strip(), "--alert-webhook") if alert_webhook is not None
               else schedule_alerts.Webhook(env_url, alerts.WEBHOOK_ENV) if env_url else None)
    result = schedule.install(obj.target, every_schedule, as_role, cron_database, webhook)
    if as_json:  # the database the jobs run in is the document's "database" (print_json adds it)
        print_json(obj, {**{k: v for k, v in result.items() if k != "database"}, "exit_code": 0})
        return 0
    for note in result["notes"]:
        click.echo(f"deenroll: note: {note}", err=True)
    for j in result["replaced"]:
        click.echo(f"replaced {j['name']} of role {j['username']} (job {j['jobid']}, {j['schedule']}): "
                   "one schedule per database", err=True)
    width = max(len(j["name"]) for j in result["jobs"])
    for j in result["jobs"]:
        click.echo(f"{j['action']:<9} {j['name']:<{width}}  {j['schedule']:<14} {j['command']}")
    if result["alerts"] is not None:
        a = result["alerts"]
        if a["set"]:
            click.echo(f"{'set':<9} {'alerts':<{width}}  to {a['webhook']}"
                       + ("" if a["source"] == "--alert-webhook" else f" (from {a['source']})"))
        else:
            click.echo(f"deenroll: {_alerts_line(a)}", err=True)
    db, cron_db = result["database"], result["cron_database"]
    where = f"database {db}" if cron_db == db else f"database {db}, kept in pg_cron's database {cron_db}"
    click.echo(f"the jobs run as role {result['role']} in {where}; `deenroll schedule status` shows their runs",
               err=True)
    return 0


def _alerts_line(a: dict[str, Any]) -> str:
    """Whether the database sends alerts, in one line (the webhook as scheme://host only)."""
    if a["webhook"] and a["pg_net_problem"]:
        return f"alerts from the database: NOT sent to {a['webhook']}: {a['pg_net_problem']}"
    if a["webhook"]:
        return f"alerts from the database: on, to {a['webhook']} (sent by pg_net after each job commits)"
    return "alerts from the database: off (`deenroll schedule install --alert-webhook URL` turns them on)"


def _delivery_line(d: dict[str, Any]) -> str:
    if not d["answered"]:
        answer = "no answer from pg_net (not sent yet, or answered longer ago than pg_net.ttl)"
    elif d["status_code"] is not None:
        answer = f"HTTP {d['status_code']}" + ("" if 200 <= d["status_code"] < 300 else " (not delivered)")
    else:
        reason = " ".join((d["error_msg"] or "no answer").split())
        answer = f"not delivered: {reason}" + (" (timed out)" if d["timed_out"] and "timeout" not in reason.lower()
                                               else "")
    return f"  {_when(d['queued_at'])}  {d['kind']:<12} {d['target']}  {answer}"


def _when(value: datetime | None) -> str:
    return "not started" if value is None else f"{value:%Y-%m-%d %H:%M:%S %Z}"


def _made(made: dict[str, Any] | None, held: dict[str, int] | None, status: str) -> str:
    if made is None:
        return ""
    if not made["runs"]:
        return "; no de-enrollment run (nothing to do)" if status == "succeeded" else ""
    parts = [f"{made[k]} {k}" for k in ("success", "partial", "failed", "running") if made[k]]
    text = f"; {made['runs']} de-enrollment run(s) ({', '.join(parts)}), {made['leads_de_enrolled']} de-enrolled"
    return text + (f", {describe_held(held)}" if held else "")


def _run_line(run: dict[str, Any]) -> str:
    seconds = "" if run["duration_ms"] is None else f"{run['duration_ms'] / 1000:.1f} s"
    message = (run["message"] or "").strip().replace("\n", " ")
    made = _made(run.get("de_enrollment_runs"), run.get("held"), run["status"])
    return f"  {_when(run['start_time'])}  {run['status']:<9} {seconds:>8}  {message}{made}"


@schedule_group.command("status")
@click.option("--runs", type=click.IntRange(0, 100), default=5, show_default=True,
              help="Newest runs shown per job (from cron.job_run_details, by run id); 0 shows none.")
@cron_database_option
@json_option
@pass_ctx
def schedule_status(obj: Context, runs: int, cron_database: str | None, as_json: bool) -> int:
    """Each deenroll job in pg_cron: schedule, role, active, its newest runs (start, duration,
    succeeded or failed with pg_cron's message), the de-enrollment runs each run made and the
    leads they left held; a note on what to do for a job that cannot connect.
    Exit status: 0; 1 when no job is scheduled or a job's newest run failed."""
    st = jobs_status(obj.target, runs, cron_database)
    failed = [j["name"] for j in st["jobs"] if j["latest_status"] == "failed"]
    code = 1 if failed or not st["jobs"] else 0
    if as_json:  # as install's
        print_json(obj, {**{k: v for k, v in st.items() if k != "database"}, "exit_code": code})
        return code
    for note in st["notes"]:
        click.echo(f"deenroll: note: {note}", err=True)
    if not st["jobs"]:
        click.echo(f"no deenroll job in pg_cron for database {st['database']} (`deenroll schedule install` adds them)")
    for j in st["jobs"]:
        state = "active" if j["active"] else "INACTIVE"
        click.echo(f"{j['name']}  {j['schedule']}  {state}  as {j['username']}  (job {j['jobid']}): {j['command']}")
        if j["latest_status"] is None:
            click.echo("  no run yet")
        elif not j["last_runs"]:
            click.echo(f"  newest run {j['latest_status']} (--runs 0: runs not listed)")
        for run in j["last_runs"]:
            click.echo(_run_line(run))
    if st["alerts"] is not None:
        click.echo(_alerts_line(st["alerts"]).replace("alerts from the database: ", "alerts: ", 1))
        for d in st["alerts"]["deliveries"]:
            click.echo(_delivery_line(d))
    if failed:
        click.echo(f"deenroll: latest run failed: {', '.join(failed)}", err=True)
    return code


@schedule_group.command("remove")
@click.option("--alert-webhook", "alert_webhook", is_flag=True,
              help="Instead of the jobs: forget the database's alert webhook, so that the database sends no "
                   "more alerts (the jobs stay). Only the role that migrated deenroll may.")
@cron_database_option
@json_option
@pass_ctx
def schedule_remove(obj: Context, alert_webhook: bool, cron_database: str | None, as_json: bool) -> int:
    """Unschedule deenroll's jobs for this database (named deenroll-..., or calling its functions)
    that this login may remove; no other job. Those of other roles it may not remove are named,
    with their owner and the statement that removes them (exit status 0 all the same). The
    database's alert webhook stays; --alert-webhook forgets it instead."""
    if alert_webhook:
        cleared = schedule_alerts.remove_webhook(obj.target)
        if as_json:
            print_json(obj, {"alert_webhook": cleared, "exit_code": 0})
        elif cleared["cleared"]:
            click.echo(f"removed alerts to {cleared['webhook']}: the database sends no more alerts (those already "
                       "queued in pg_net are sent)")
        else:
            click.echo("nothing to do: the database keeps no alert webhook")
        return 0
    done = remove_jobs(obj.target, cron_database)
    if as_json:
        print_json(obj, {**done, "exit_code": 0})
        return 0
    for j in done["removed"]:
        click.echo(f"removed {j['name']} (job {j['jobid']}, as {j['username']})")
    for j in done["kept"]:
        click.echo(f"kept    {j['name']} (job {j['jobid']}, as {j['username']}): {j['why']}; as {j['username']} "
                   f"(or a role with DELETE on cron.job) `{j['statement']}` removes it")
    if not done["removed"] and not done["kept"]:
        click.echo("nothing to do: no deenroll job in pg_cron for this database")
    if done["alert_webhook"]:
        click.echo(f"kept    alerts to {done['alert_webhook']}: a CALL of deenroll.run_de_enrollment() still "
                   "sends its alert; `deenroll schedule remove --alert-webhook` turns them off")
    return 0
