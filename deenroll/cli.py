"""The `deenroll` command line: parses options, calls the SQL through deenroll.*, reports.

Messages go to stderr, data to stdout. Every failure the user can act on is one
line on stderr and a non-zero exit; no traceback reaches the user.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
import psycopg

from . import __version__, cli_ops, cli_run, cli_schedule, database, pooler, schedule_status
from .cli_common import Context, json_option, pass_ctx, print_json, report
from .errors import UserError, one_line
from .migrate import commands, files, inspection


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--database-url",
    envvar="DATABASE_URL",
    show_envvar=True,
    metavar="URL",
    help="PostgreSQL URL or conninfo. Else libpq's PG* variables, else the embedded server.",
    callback=lambda ctx, _param, value: setattr(ctx.ensure_object(Context), "url", value),
    expose_value=False,
)
@click.version_option(__version__, prog_name="deenroll")
def cli() -> None:
    """De-enroll leads that finished their campaign sequence (the SOP's V2 system).

    Every command takes --json: one JSON document on stdout, errors included.
    """


# --------------------------------------------------------------------------- schema


@cli.command()
@click.option("--to", "to", metavar="V", help="Stop after this migration (full name or number).")
@click.option("--lock-wait", default=60.0, show_default=True, help="Seconds to wait for another migrate.")
@click.option("--break-lock", is_flag=True, help="Remove a migration lock left by a killed process, then exit.")
@json_option
@pass_ctx
def migrate(obj: Context, to: str | None, lock_wait: float, break_lock: bool, as_json: bool) -> int:
    """Apply pending migrations, then the current functions and views."""
    if break_lock:
        commands.break_lock(obj.target)
        click.echo("migration lock removed", err=True)
        return report(obj, as_json, {"lock_removed": True})
    pooler.require_session(obj.target, "migrate")
    r = commands.migrate(obj.target, to=to, lock_timeout=lock_wait)
    for note in [] if as_json else r.notes:
        click.echo(f"deenroll: note: {note}", err=True)
    lines = [*(f"recognised {stem} applied by hand" for stem in r.applied_by_hand),
             *(f"applied   {stem}" for stem in r.applied), *(f"installed {name}" for name in r.definitions)]
    doc = {"applied": r.applied, "applied_by_hand": r.applied_by_hand, "installed": r.definitions, "notes": r.notes}
    return report(obj, as_json, doc, lines or [
        "nothing to do: every migration is applied and every function and view is current"])


@cli.command()
@click.option("--to", "to", metavar="V", required=True, help="Keep this migration; roll back every later one.")
@click.option("--lock-wait", default=60.0, show_default=True, help="Seconds to wait for another migrate.")
@json_option
@pass_ctx
def rollback(obj: Context, to: str, lock_wait: float, as_json: bool) -> int:
    """Roll back every migration after V, newest first, with the scripts in rollback/; then remove
    deenroll's pg_cron jobs that call what it dropped."""
    pooler.require_session(obj.target, "rollback")
    jobs: list[dict[str, Any]] = []
    rolled = commands.rollback(obj.target, to, lock_timeout=lock_wait, removed_jobs=jobs)
    kept = files.resolve_target(to)
    lines = [*(f"rolled back {stem}" for stem in rolled), *_removed_jobs(jobs)]
    if not rolled:
        lines.append(f"nothing to do: no migration after {kept} is applied")
    return report(obj, as_json, {"rolled_back": rolled, "kept": kept, "removed_jobs": jobs}, lines)


@cli.command()
@json_option
@pass_ctx
def status(obj: Context, as_json: bool) -> int:
    """Applied and pending migrations; functions and views that differ from their files; whether
    pg_cron runs deenroll's jobs (`deenroll schedule`)."""
    st = inspection.status(obj.target)
    in_db = schedule_status.summary(obj.target)
    never = "deenroll has never migrated this database: nothing of it is installed (`deenroll migrate` installs it)"
    lines = [never] if st.never_migrated else []
    lines += ["migrations:", *(f"  {stem:<45} {state}" for stem, state in st.migrations)]
    lines += ["functions and views:", *(f"  {kind:<8} {name:<37} {state}" for name, kind, state in st.definitions)]
    lines.append(f"in-database schedule (pg_cron): {schedule_status.summary_line(in_db)}")
    return report(obj, as_json, {
        "migrations": [
            {"name": stem, "applied": state.startswith("applied"), "state": state} for stem, state in st.migrations
        ],
        "definitions": [{"name": name, "kind": kind, "state": state} for name, kind, state in st.definitions],
        "never_migrated": st.never_migrated,
        "in_database_schedule": in_db,
    }, lines)


@cli.command()
@click.option("--yes", is_flag=True, help="Confirm: the run history and held leads are deleted with our tables.")
@click.option("--lock-wait", default=60.0, show_default=True, help="Seconds to wait for another migrate.")
@json_option
@pass_ctx
def uninstall(obj: Context, yes: bool, lock_wait: float, as_json: bool) -> int:
    """Remove everything deenroll added: every migration after the baseline rolled back, its
    bookkeeping tables, the roles it created that nothing uses any more, and its pg_cron jobs
    for this database. campaigns and leads stay, with every row."""
    if not yes:
        raise UserError(
            "uninstall deletes deenroll's tables with their history (take `deenroll backup create` or pg_dump first); "
            "run it again with --yes"
        )
    pooler.require_session(obj.target, "uninstall")
    r = commands.uninstall(obj.target, lock_timeout=lock_wait)
    lines = [*(f"rolled back {stem}" for stem in r.rolled_back), *(f"dropped table {t}" for t in r.dropped_tables),
             *(f"dropped role {role}" for role in r.dropped_roles), *(f"kept role {kept}" for kept in r.kept_roles),
             *_removed_jobs(r.removed_jobs)]
    if not (r.rolled_back or r.dropped_tables or r.dropped_roles or r.removed_jobs):
        lines.append("nothing to do: nothing of deenroll is installed in this database")
    return report(obj, as_json, {"rolled_back": r.rolled_back, "dropped_tables": r.dropped_tables,
                                 "dropped_roles": r.dropped_roles, "kept_roles": r.kept_roles,
                                 "removed_jobs": r.removed_jobs}, lines)


def _removed_jobs(jobs: list[dict[str, Any]]) -> list[str]:
    return [f"removed pg_cron job {j['name']} (job {j['jobid']}, as {j['username']}, {j['schedule']})" for j in jobs]


@cli.command()
@json_option
@pass_ctx
def verify(obj: Context, as_json: bool) -> int:
    """The SOP's post-migration checks (Step 2.2), pass/fail per item, and any pg_cron job of
    deenroll's calling a function that does not exist; exit 1 on any fail."""
    checks = inspection.verify(obj.target)
    passed = sum(1 for _, ok, _ in checks if ok)
    doc = {"checks": [{"item": item, "passed": ok, "detail": detail} for item, ok, detail in checks],
           "passed": passed, "failed": len(checks) - passed}
    lines = [f"{'PASS' if ok else 'FAIL'}  {item:<42} {detail}" for item, ok, detail in checks]
    note = f"verify: {passed} of {len(checks)} checks passed"
    return report(obj, as_json, doc, lines, int(passed < len(checks)), note=note)


# --------------------------------------------------------------------------- embedded server


@cli.group()
def db() -> None:
    """The database in use; the embedded server."""


@db.command("url")
@json_option
@pass_ctx
def db_url(obj: Context, as_json: bool) -> int:
    """Print a URL for psql (never with a password)."""
    url = database.psql_url(obj.target)
    return report(obj, as_json, {"url": url}, [url])


@db.command("stop")
@json_option
@pass_ctx
def db_stop(obj: Context, as_json: bool) -> int:
    """Stop the embedded server (its data stays)."""
    stopped = database.stop_embedded()
    pgdata = database.embedded_pgdata()
    click.echo(f"stopped the embedded PostgreSQL in {pgdata}" if stopped else "the embedded PostgreSQL is not running",
               err=True)
    return report(obj, as_json, {"stopped": stopped, "pgdata": str(pgdata)})


# --------------------------------------------------------------------------- the other commands

for _command in (
    cli_run.run,
    cli_ops.health_check,
    cli_ops.stuck,
    cli_ops.stats_group,
    cli_ops.backup_group,
    cli_ops.maintenance_group,
    cli_ops.demo,
    cli_schedule.schedule_group,
):
    cli.add_command(_command)


# --------------------------------------------------------------------------- entry point


def _fail(obj: Context, as_json: bool, message: str, code: int, hint: str | None = None) -> NoReturn:
    """One line on stderr; with --json also one JSON object on stdout; exit with code."""
    click.echo(message, err=True)
    if hint:
        click.echo(hint, err=True)
    if as_json:
        text = message.removeprefix("deenroll: ").removeprefix("error: ")
        print_json(obj, {"error": text, "exit_code": code})
    sys.exit(code)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: turns every expected failure into one line (or one JSON object) and an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in args
    obj = Context()
    try:
        rv = cli.main(args=args, prog_name="deenroll", standalone_mode=False, obj=obj)
    except click.exceptions.Abort:
        _fail(obj, as_json, "deenroll: aborted", 130)
    except click.ClickException as exc:
        hint = None
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f"Try '{exc.ctx.command_path} --help'."
        _fail(obj, as_json, f"deenroll: error: {exc.format_message()}", exc.exit_code, hint)
    except UserError as exc:
        _fail(obj, as_json, f"deenroll: error: {exc}", exc.code)
    except psycopg.Error as exc:
        _fail(obj, as_json, f"deenroll: database error: {one_line(exc)}", 2)
    except KeyboardInterrupt:
        _fail(obj, as_json, "deenroll: interrupted", 130)
    except SystemExit as exc:
        # A command that stops early (run on SIGTERM) has said why on stderr already.
        code = exc.code if isinstance(exc.code, int) else 1
        if as_json and code:
            print_json(obj, {"error": f"stopped with exit status {code}", "exit_code": code})
        raise
    if isinstance(rv, int):
        sys.exit(rv)
    return rv


if __name__ == "__main__":
    main()
