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
from .cli_common import Context, json_option, pass_ctx, print_json
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
        if as_json:
            print_json(obj, {"lock_removed": True, "exit_code": 0})
        return 0
    pooler.require_session(obj.target, "migrate")
    result = commands.migrate(obj.target, to=to, lock_timeout=lock_wait)
    if as_json:
        print_json(obj, {
            "applied": result.applied,
            "applied_by_hand": result.applied_by_hand,
            "installed": result.definitions,
            "notes": result.notes,
            "exit_code": 0,
        })
        return 0
    for note in result.notes:
        click.echo(f"deenroll: note: {note}", err=True)
    for stem in result.applied_by_hand:
        click.echo(f"recognised {stem} applied by hand")
    for stem in result.applied:
        click.echo(f"applied   {stem}")
    for name in result.definitions:
        click.echo(f"installed {name}")
    if not result.applied and not result.definitions and not result.applied_by_hand:
        click.echo("nothing to do: every migration is applied and every function and view is current")
    return 0


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
    if as_json:
        print_json(obj, {"rolled_back": rolled, "kept": files.resolve_target(to), "removed_jobs": jobs,
                         "exit_code": 0})
        return 0
    for stem in rolled:
        click.echo(f"rolled back {stem}")
    _removed_jobs(jobs)
    if not rolled:
        click.echo(f"nothing to do: no migration after {files.resolve_target(to)} is applied")
    return 0


@cli.command()
@json_option
@pass_ctx
def status(obj: Context, as_json: bool) -> int:
    """Applied and pending migrations; functions and views that differ from their files; whether
    pg_cron runs deenroll's jobs (`deenroll schedule`)."""
    st = inspection.status(obj.target)
    in_db = schedule_status.summary(obj.target)
    if as_json:
        print_json(obj, {
            "migrations": [
                {"name": stem, "applied": state.startswith("applied"), "state": state} for stem, state in st.migrations
            ],
            "definitions": [{"name": name, "kind": kind, "state": state} for name, kind, state in st.definitions],
            "never_migrated": st.never_migrated,
            "in_database_schedule": in_db,
            "exit_code": 0,
        })
        return 0
    if st.never_migrated:
        click.echo("deenroll has never migrated this database: nothing of it is installed (`deenroll migrate` installs it)")
    click.echo("migrations:")
    for stem, state in st.migrations:
        click.echo(f"  {stem:<45} {state}")
    click.echo("functions and views:")
    for name, kind, state in st.definitions:
        click.echo(f"  {kind:<8} {name:<37} {state}")
    click.echo(f"in-database schedule (pg_cron): {schedule_status.summary_line(in_db)}")
    return 0


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
    result = commands.uninstall(obj.target, lock_timeout=lock_wait)
    if as_json:
        print_json(obj, {"rolled_back": result.rolled_back, "dropped_tables": result.dropped_tables,
                         "dropped_roles": result.dropped_roles, "kept_roles": result.kept_roles,
                         "removed_jobs": result.removed_jobs, "exit_code": 0})
        return 0
    for stem in result.rolled_back:
        click.echo(f"rolled back {stem}")
    for table in result.dropped_tables:
        click.echo(f"dropped table {table}")
    for role in result.dropped_roles:
        click.echo(f"dropped role {role}")
    for kept in result.kept_roles:
        click.echo(f"kept role {kept}")
    _removed_jobs(result.removed_jobs)
    if not (result.rolled_back or result.dropped_tables or result.dropped_roles or result.removed_jobs):
        click.echo("nothing to do: nothing of deenroll is installed in this database")
    return 0


def _removed_jobs(jobs: list[dict[str, Any]]) -> None:
    for j in jobs:
        click.echo(f"removed pg_cron job {j['name']} (job {j['jobid']}, as {j['username']}, {j['schedule']})")


@cli.command()
@json_option
@pass_ctx
def verify(obj: Context, as_json: bool) -> int:
    """The SOP's post-migration checks (Step 2.2), pass/fail per item, and any pg_cron job of
    deenroll's calling a function that does not exist; exit 1 on any fail."""
    checks = inspection.verify(obj.target)
    failed = sum(1 for _, ok, _ in checks if not ok)
    code = 1 if failed else 0
    if as_json:
        print_json(obj, {
            "checks": [{"item": item, "passed": ok, "detail": detail} for item, ok, detail in checks],
            "passed": len(checks) - failed,
            "failed": failed,
            "exit_code": code,
        })
        return code
    for item, ok, detail in checks:
        click.echo(f"{'PASS' if ok else 'FAIL'}  {item:<42} {detail}")
    click.echo(f"verify: {len(checks) - failed} of {len(checks)} checks passed", err=True)
    return code


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
    if as_json:
        print_json(obj, {"url": url, "exit_code": 0})
    else:
        click.echo(url)
    return 0


@db.command("stop")
@json_option
@pass_ctx
def db_stop(obj: Context, as_json: bool) -> int:
    """Stop the embedded server (its data stays)."""
    stopped = database.stop_embedded()
    pgdata = database.embedded_pgdata()
    if stopped:
        click.echo(f"stopped the embedded PostgreSQL in {pgdata}", err=True)
    else:
        click.echo("the embedded PostgreSQL is not running", err=True)
    if as_json:
        print_json(obj, {"stopped": stopped, "pgdata": str(pgdata), "exit_code": 0})
    return 0


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
