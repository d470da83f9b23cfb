"""What every command shares: the database it uses, the --json and --client-id options, the one JSON
printer and the one way a command reports (a JSON document, or lines).

Every JSON document the CLI prints goes through print_json(), which adds the
"database" object (host, port, dbname, user, source; never a password).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import date, datetime
from decimal import Decimal
from collections.abc import Iterable
from typing import Any

import click

from . import database
from .errors import UserError

_UNKNOWN = {"host": None, "port": None, "dbname": None, "user": None}


class Context:
    """The --database-url option; the database is resolved on first use, so `--help` starts no server."""

    def __init__(self) -> None:
        self.url: str | None = None
        self._target: database.Target | None = None

    @property
    def target(self) -> database.Target:
        if self._target is None:
            self._target = database.resolve(self.url)
        return self._target

    def database_json(self) -> dict[str, Any]:
        """The database this command uses, without starting the embedded server to find out."""
        if self._target is not None:
            return self._target.describe_json()
        if self.url:
            source = "DATABASE_URL" if self.url == os.environ.get("DATABASE_URL") else "--database-url"
            return database.Target(self.url, source).describe_json()  # a malformed URL: nothing of it shown
        if any(os.environ.get(v) for v in database._LIBPQ_VARS):
            return database.Target("", "PG* variables").describe_json()
        try:
            embedded = database.embedded_policy() != "never"
        except UserError:
            embedded = False
        if not embedded:  # no database configured, and the embedded one is not allowed
            return {**_UNKNOWN, "source": None}
        return {**_UNKNOWN, "dbname": database.EMBEDDED_DB, "source": "embedded"}


pass_ctx = click.make_pass_decorator(Context, ensure=True)

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")


def to_jsonable(value: Any) -> Any:
    """uuid, Decimal, datetime and date as JSON values (the default= of json.dumps)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def print_json(obj: Context, doc: dict[str, Any]) -> None:
    """The one way the CLI prints JSON: the document plus the database used, on stdout."""
    full = {**doc, "database": obj.database_json()}
    click.echo(json.dumps(full, default=to_jsonable, ensure_ascii=False, indent=2))


def report(obj: Context, as_json: bool, doc: dict[str, Any], lines: Iterable[str] = (), code: int = 0,
           note: str = "") -> int:
    """With --json the document and its exit code on stdout; else the lines on stdout, then the note (if any)
    on stderr. Returns the exit code."""
    if as_json:
        print_json(obj, {**doc, "exit_code": code})
        return code
    for line in lines:
        click.echo(line)
    if note:
        click.echo(note, err=True)
    return code


def _uuid(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    try:
        return None if value is None else str(uuid.UUID(value.strip()))
    except ValueError:
        raise UserError(
            f"malformed client id {value!r}: it is not a UUID like 123e4567-e89b-12d3-a456-426614174000"
        ) from None


def client_id_option(help_text: str) -> Any:
    """--client-id, checked to be a UUID while the options are parsed."""
    return click.option("--client-id", metavar="UUID", callback=_uuid, help=help_text)


def describe_held(held: dict[str, int]) -> str:
    """'held 3 (check_violation 2, refused_by_trigger 1)'."""
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(held.items()))
    return f"held {sum(held.values())} ({reasons})"
