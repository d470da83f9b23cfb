"""The `deenroll` command line: parses options, calls the SQL through deenroll.*, reports.

Messages go to stderr, data to stdout. Every failure the user can act on is one
line on stderr and a non-zero exit; no traceback reaches the user.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import psycopg

from deenroll import __version__, database, schema
from deenroll.errors import UserError


class Context:
    """Resolves the database lazily, so `--help` never starts a server."""

    def __init__(self, database_url: str | None) -> None:
        self._url = database_url
        self._target: database.Target | None = None

    @property
    def target(self) -> database.Target:
        if self._target is None:
            self._target = database.resolve(self._url)
        return self._target


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--database-url",
    envvar="DATABASE_URL",
    show_envvar=True,
    metavar="URL",
    help="PostgreSQL URL or conninfo. Else libpq's PG* variables, else the embedded server.",
)
@click.version_option(__version__, prog_name="deenroll")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None) -> None:
    """De-enroll leads that finished their campaign sequence (the SOP's V2 system)."""
    ctx.obj = Context(database_url)


# --------------------------------------------------------------------------- schema


@cli.command()
@click.option("--to", "to", metavar="V", help="Stop after this migration (full name or number).")
@click.option("--lock-wait", default=60.0, show_default=True, help="Seconds to wait for another migrate.")
@click.option("--break-lock", is_flag=True, help="Remove a migration lock left by a killed process, then exit.")
@pass_ctx
def migrate(obj: Context, to: str | None, lock_wait: float, break_lock: bool) -> None:
    """Apply pending migrations, then the current functions and views."""
    if break_lock:
        schema.break_lock(obj.target)
        click.echo("migration lock removed", err=True)
        return
    result = schema.migrate(obj.target, to=to, lock_timeout=lock_wait)
    for stem in result.applied:
        click.echo(f"applied   {stem}")
    for name in result.definitions:
        click.echo(f"installed {name}")
    if not result.applied and not result.definitions:
        click.echo("nothing to do: every migration is applied and every function and view is current")


@cli.command()
@click.option("--to", "to", metavar="V", required=True, help="Keep this migration; roll back every later one.")
@click.option("--lock-wait", default=60.0, show_default=True, help="Seconds to wait for another migrate.")
@pass_ctx
def rollback(obj: Context, to: str, lock_wait: float) -> None:
    """Roll back every migration after V, newest first, with the scripts in rollback/."""
    rolled = schema.rollback(obj.target, to, lock_timeout=lock_wait)
    for stem in rolled:
        click.echo(f"rolled back {stem}")
    if not rolled:
        click.echo(f"nothing to do: no migration after {schema.resolve_target(to)} is applied")


@cli.command()
@pass_ctx
def status(obj: Context) -> None:
    """Applied and pending migrations; functions and views that differ from their files."""
    st = schema.status(obj.target)
    click.echo("migrations:")
    for stem, state in st.migrations:
        click.echo(f"  {stem:<45} {state}")
    click.echo("functions and views:")
    for name, kind, state in st.definitions:
        click.echo(f"  {kind:<8} {name:<37} {state}")


@cli.command()
@pass_ctx
def verify(obj: Context) -> None:
    """The SOP's post-migration checks (Step 2.2), pass/fail per item; exit 1 on any fail."""
    checks = schema.verify(obj.target)
    for item, ok, detail in checks:
        click.echo(f"{'PASS' if ok else 'FAIL'}  {item:<42} {detail}")
    failed = sum(1 for _, ok, _ in checks if not ok)
    click.echo(f"verify: {len(checks) - failed} of {len(checks)} checks passed", err=True)
    if failed:
        raise SystemExit(1)


# --------------------------------------------------------------------------- embedded server


@cli.group()
def db() -> None:
    """The database in use; the embedded server."""


@db.command("url")
@pass_ctx
def db_url(obj: Context) -> None:
    """Print a URL for psql (never with a password)."""
    click.echo(database.psql_url(obj.target))


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded server (its data stays)."""
    if database.stop_embedded():
        click.echo(f"stopped the embedded PostgreSQL in {database.embedded_pgdata()}", err=True)
    else:
        click.echo("the embedded PostgreSQL is not running", err=True)


def _register_optional_commands() -> None:
    """Commands from the engine and operations modules (kept out of this file)."""
    from deenroll import commands

    for command in commands.COMMANDS:
        cli.add_command(command)


_register_optional_commands()


def main(argv: list[str] | None = None) -> Any:
    """Entry point: turns every expected failure into one line and an exit code."""
    try:
        rv = cli.main(args=argv, prog_name="deenroll", standalone_mode=False)
        if isinstance(rv, int):
            sys.exit(rv)
        return rv
    except click.exceptions.Abort:
        click.echo("deenroll: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"deenroll: error: {exc.format_message()}", err=True)
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            click.echo(f"Try '{exc.ctx.command_path} --help'.", err=True)
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"deenroll: error: {exc}", err=True)
        sys.exit(exc.code)
    except psycopg.Error as exc:
        first = (exc.diag.message_primary or str(exc)).strip().splitlines()
        click.echo(f"deenroll: database error: {database.redact(first[0] if first else repr(exc))}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("deenroll: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
