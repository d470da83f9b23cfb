"""The named statements the client sends, and running them.

Every statement lives in a named-query file of this package: queries.sql (the operations
commands) and queries_<part>.sql (one per part: queries_run.sql for the runner, ...). A
file holds blocks that each start with a `-- name: <name>` line; the text up to the next
such line is the statement. A name is defined once across all the files. Parameters are always
passed as a dict, so psycopg formats every statement the same way (a literal % is written %%).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .errors import UserError

_HEADER = re.compile(r"^-- name: *(\w+) *$", re.M)


@cache
def all_queries() -> dict[str, str]:
    """{name: statement} of every named-query file; the text before a file's first name is ignored."""
    found: dict[str, str] = {}
    files = [f for f in resources.files(__package__).iterdir() if re.fullmatch(r"queries(_.*)?\.sql", f.name)]
    for f in sorted(files, key=lambda f: f.name):
        parts = _HEADER.split(f.read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2]):
            if name in found:
                raise ValueError(f"query {name!r} is defined twice ({f.name})")
            found[name] = body.strip()
    return found


def rows(conn: psycopg.Connection, name: str, /, **params: Any) -> list[dict[str, Any]]:
    """Every row of a named query, as dicts."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(all_queries()[name], params).fetchall()


def one(conn: psycopg.Connection, name: str, /, **params: Any) -> tuple[Any, ...]:
    """The single row of a named query, as a tuple."""
    return conn.execute(all_queries()[name], params).fetchone()


def value(conn: psycopg.Connection, name: str, /, **params: Any) -> Any:
    """The first column of the single row of a named query."""
    return one(conn, name, **params)[0]


def run(conn: psycopg.Connection, name: str, /, **params: Any) -> psycopg.Cursor:
    """Execute a named query; the cursor (for rowcount or tuples)."""
    return conn.execute(all_queries()[name], params)


def require_relation(conn: psycopg.Connection, name: str) -> None:
    """One clear error when a view or table of ours is missing (the database was not migrated)."""
    if not value(conn, "relation_exists", name=name if "." in name else f"public.{name}"):
        raise UserError(f"{name} does not exist in this database: run `deenroll migrate` first")


def require_function(conn: psycopg.Connection, signature: str) -> None:
    """One clear error when a function of ours is missing (the database was not migrated)."""
    if not value(conn, "function_exists", signature=signature if "." in signature else f"public.{signature}"):
        raise UserError(f"{signature.split('(', 1)[0]}() does not exist in this database: run `deenroll migrate` first")
