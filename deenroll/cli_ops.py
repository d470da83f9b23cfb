"""Operations commands: health-check, stuck, stats, backup, maintenance, demo.

Thin: each command connects, calls a view or a SQL function through deenroll.health,
.stats, .backup, .maintenance or .demo, prints data on stdout and messages on stderr,
and returns its exit code. With --json, stdout carries one JSON document (print_json).
"""

from __future__ import annotations

import socket

import click
import psycopg

from . import alerts, backup, database, health, maintenance, metrics, stats
from .cli_common import Context, client_id_option, json_option, pass_ctx, report
from .errors import UserError


def _connect(obj: Context) -> psycopg.Connection:
    return database.connect(obj.target, autocommit=True)


# --------------------------------------------------------------------------- health-check


@click.command("health-check")
@json_option
@click.option("--prometheus", is_flag=True, help="Print the report as Prometheus text (gauges per client); exit 0.")
@pass_ctx
def health_check(obj: Context, as_json: bool, prometheus: bool) -> int:
    """Per client: OK / warning / error by the SOP's thresholds (view de_enrollment_health).

    Exit status: 0 every client ok, 1 a warning, 2 an error. With --prometheus the
    status is in the gauges and the exit status is 0 once they are printed (for
    node_exporter's textfile collector: write to a temporary file, then mv it into
    place). When DE_ENROLLMENT_ALERT_WEBHOOK is set and a client is in error, a JSON
    alert is POSTed there; a webhook that is down is reported on stderr and never
    changes the exit status.
    """
    if as_json and prometheus:
        raise click.UsageError("--json and --prometheus exclude each other")
    alert = alerts.AlertResult(attempted=False)
    with _connect(obj) as conn:
        found = health.health(conn)
        if found.status == "error":  # the document comes from the database, on this connection
            alert = alerts.post_alert(lambda: alerts.health_document(conn, socket.gethostname()))
    if alert.attempted:
        level = "" if alert.delivered else "warning: "
        click.echo(f"deenroll: {level}{alert.describe()}", err=True)
    if prometheus:
        click.echo(metrics.exposition(found), nl=False)
        return 0
    doc = {**found.to_json(), "exit_code": found.exit_code, "alert": alert.to_json()}
    return report(obj, as_json, doc, found.lines(), found.exit_code)


# --------------------------------------------------------------------------- stuck


@click.command("stuck")
@client_id_option("Only this client.")
@click.option("--limit", type=int, default=50, show_default=True, help="Leads listed (the count is always complete).")
@json_option
@pass_ctx
def stuck(obj: Context, client_id: str | None, limit: int, as_json: bool) -> int:
    """Leads that should have been de-enrolled and were not (view de_enrollment_stuck_leads).

    Held leads (reason held:<why>) are shown with the database's error. Also counts the
    leads linked to a campaign of another client or of none (view
    de_enrollment_campaign_links) and lists the first few. Exit status 0.
    """
    if limit < 0:
        raise UserError(f"--limit must be 0 or more, got {limit}")
    with _connect(obj) as conn:
        found = health.stuck(conn, limit, client_id)
    return report(obj, as_json, found, health.stuck_lines(found), note=health.stuck_hints(found))


# --------------------------------------------------------------------------- stats


@click.group("stats")
def stats_group() -> None:
    """Campaign counters: the SOP's stats repair and drift report."""


@stats_group.command("recalculate")
@client_id_option("Only this client's campaigns (default: all).")
@json_option
@pass_ctx
def stats_recalculate(obj: Context, client_id: str | None, as_json: bool) -> int:
    """Recount every counter from the leads (recalculate_campaign_stats); list what changed."""
    with _connect(obj) as conn, conn.transaction():
        changed = stats.recalculate(conn, client_id)
    scope = f"client {client_id}" if client_id else "all clients"
    lines = [*map(stats.recalculated_line, changed),
             f"{len(changed)} campaign(s) corrected ({scope}); every counter now matches its leads"]
    return report(obj, as_json, {"client_id": client_id, "changed": changed}, lines)


@stats_group.command("drift")
@json_option
@pass_ctx
def stats_drift(obj: Context, as_json: bool) -> int:
    """Campaigns whose stored counters differ from their leads (view campaign_stats_drift). Exit 1 if any."""
    with _connect(obj) as conn:
        rows = stats.drift(conn)
    total = f"{len(rows)} campaign(s) drifted; `deenroll stats recalculate` corrects them"
    lines = [*map(stats.drift_line, rows), total if rows else "no drift: every campaign's counters match its leads"]
    return report(obj, as_json, {"campaigns": rows, "count": len(rows)}, lines, int(bool(rows)))


# --------------------------------------------------------------------------- backup


@click.group("backup")
def backup_group() -> None:
    """The SOP's table backups (leads_backup_YYYYMMDD, campaigns_backup_YYYYMMDD)."""


@backup_group.command("create")
@click.option("--date", "day", metavar="YYYYMMDD", help="Suffix of the backup tables (default: today).")
@json_option
@pass_ctx
def backup_create(obj: Context, day: str | None, as_json: bool) -> int:
    """Copy leads and campaigns, verify the row counts; refuse if that date exists."""
    d = backup.parse_date(day)
    with _connect(obj) as conn:
        made = backup.create(conn, d)
    lines = [f"{t['backup']}: {t['rows']} rows (= {t['table']}, verified)" for t in made]
    return report(obj, as_json, {"date": d, "tables": made}, lines, note=f"backup {d} created")


@backup_group.command("list")
@json_option
@pass_ctx
def backup_list(obj: Context, as_json: bool) -> int:
    """Backup dates, newest first, with exact row counts."""
    with _connect(obj) as conn:
        found = backup.list_backups(conn)
    lines = [f"{b['date']}  " + ", ".join(f"{t} {b[t]['rows']} rows" if b[t] else f"{t} MISSING" for t in backup.TABLES)
             + ("" if b["complete"] else "  (incomplete: cannot be restored)") for b in found]
    note = "" if found else "no backups (create one with `deenroll backup create`)"
    return report(obj, as_json, {"backups": found}, lines, note=note)


@backup_group.command("restore")
@click.option("--date", "day", metavar="YYYYMMDD", required=True, help="The backup to restore.")
@json_option
@pass_ctx
def backup_restore(obj: Context, day: str, as_json: bool) -> int:
    """The SOP's Step 4 in one transaction: restore the de-enrollment columns from the backup.

    leads: is_active, completed_at, campaign_history; campaigns: is_active and the
    counters; only the columns both the table and the backup have (after a rollback
    some are gone). Then the counters are recounted exactly when they exist.
    """
    d = backup.parse_date(day)
    with _connect(obj) as conn:
        result = backup.restore(conn, d)
    lines = [
        f"{t['table']} <- {t['backup']}: {t['changed']} rows changed, {t['matched']} of {t['backup_rows']} backup rows"
        f" matched ({t['missing']} no longer exist); columns: {', '.join(t['columns']) or 'no common column'}; verified"
        for t in result["tables"]
    ]
    if result["recounted"] is not None:
        lines.append(f"counters recounted from the leads: {len(result['recounted'])} campaign(s) differed from the "
                     "backup's")
    return report(obj, as_json, {"date": d, **result}, lines, note=f"restored from backup {d}")


# --------------------------------------------------------------------------- maintenance


@click.group("maintenance")
def maintenance_group() -> None:
    """The SOP's monthly maintenance."""


@maintenance_group.command("cleanup")
# No default here: what the user does not give, archive_de_enrollment_history's own default decides.
@click.option("--runs-days", type=int,
              help=f"Keep runs this many days; archive older.  [default: {maintenance.RUNS_DAYS}]")
@click.option("--logs-days", type=int,
              help=f"Keep lead logs this many days; delete older.  [default: {maintenance.LOGS_DAYS}]")
@click.option("--dry-run", is_flag=True, help="Count what would be archived and deleted; change nothing.")
@json_option
@pass_ctx
def maintenance_cleanup(obj: Context, runs_days: int | None, logs_days: int | None, dry_run: bool, as_json: bool) -> int:
    """Archive old runs into de_enrollment_runs_archive, delete old lead logs (one
    transaction), then VACUUM ANALYZE both tables."""
    maintenance.check_days(runs_days, logs_days)
    with _connect(obj) as conn:
        r = maintenance.cleanup(conn, runs_days, logs_days, dry_run)
    verb = "would" if dry_run else "did"
    lines = [
        f"{verb} archive {r['runs_archived']} run(s) started before {r['runs_cutoff']:%Y-%m-%d %H:%M %Z} "
        f"into de_enrollment_runs_archive{' (created)' if r['archive_created'] and not dry_run else ''}",
        f"{verb} delete {r['lead_logs_deleted']} lead log(s) processed before {r['logs_cutoff']:%Y-%m-%d %H:%M %Z}"
        f" and {r['lead_logs_of_archived_runs']} younger one(s) of the archived runs",
    ]
    if r["vacuumed"]:
        lines.append(f"VACUUM ANALYZE {', '.join(r['vacuumed'])}")
    return report(obj, as_json, r, lines)


# --------------------------------------------------------------------------- demo


@click.command("demo")
@click.option("--clients", type=int, default=5, show_default=True, help="Synthetic clients.")
@click.option("--leads", type=int, default=20000, show_default=True, help="Synthetic leads.")
@click.option("--seed", default="deenroll", show_default=True, help="Same seed, same data set.")
@click.option("--force", is_flag=True, help="Allow a database other than the embedded one.")
@json_option
@pass_ctx
def demo(obj: Context, clients: int, leads: int, seed: str, force: bool, as_json: bool) -> int:
    """Migrate, (re)load a synthetic multi-client data set, run, report health.

    Uses the embedded database unless --database-url/DATABASE_URL/PG* name another,
    which needs --force. Only the demo's own rows (campaigns named "[demo] ...", their
    clients' leads and runs) are replaced; a second demo gives the same result.
    """
    from . import demo as demo_mod

    doc, lines, code = demo_mod.run_demo(obj.target, clients=clients, leads=leads, seed=seed, force=force)
    if doc["migrated"]:
        click.echo(f"deenroll: migrate: {doc['migrated']}", err=True)
    return report(obj, as_json, doc, lines, code)
