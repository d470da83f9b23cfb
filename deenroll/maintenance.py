"""The SOP's monthly cleanup, done so that it can run: archive_de_enrollment_history()
in one transaction, then VACUUM ANALYZE of both tables outside it (VACUUM cannot run
inside a transaction block, which is what breaks the SOP's own block)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from . import paths, queries
from .errors import UserError


@dataclass(frozen=True)
class Retention:
    runs_days: int
    logs_days: int


def retention_defaults() -> Retention:
    """How many days of runs and of lead logs the cleanup keeps when not told: the defaults
    archive_de_enrollment_history declares, read from its file (their one home; the CLI passes
    only what the user gave, and shows these in --help)."""
    text = (paths.sql_dir("functions") / "archive_de_enrollment_history.sql").read_text()
    found = dict(re.findall(r"^\s*(p_runs_days|p_logs_days)\s+integer\s+DEFAULT\s+(\d+)\b", text, re.M))
    return Retention(int(found["p_runs_days"]), int(found["p_logs_days"]))


RETENTION = retention_defaults()


@dataclass
class CleanupResult:
    runs_archived: int
    lead_logs_deleted: int
    lead_logs_of_archived_runs: int
    runs_cutoff: datetime
    logs_cutoff: datetime
    archive_created: bool
    dry_run: bool
    vacuumed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def check_days(given_runs_days: int | None, given_logs_days: int | None) -> None:
    """The same rules as the SQL function, checked before connecting: one clear line. What is
    not given is the function's default."""
    runs_days = RETENTION.runs_days if given_runs_days is None else given_runs_days
    logs_days = RETENTION.logs_days if given_logs_days is None else given_logs_days
    if runs_days < 1 or logs_days < 1:
        raise UserError(f"--runs-days and --logs-days must be at least 1 (got {runs_days} and {logs_days})")
    if runs_days < logs_days:
        raise UserError(
            f"--runs-days ({runs_days}) must be >= --logs-days ({logs_days}): lead logs reference their runs"
        )


def cleanup(conn: psycopg.Connection, runs_days: int | None, logs_days: int | None, dry_run: bool) -> CleanupResult:
    """conn must be in autocommit mode (VACUUM). A retention of None is the function's default."""
    check_days(runs_days, logs_days)
    queries.require_function(conn, "archive_de_enrollment_history(integer, integer, boolean)")
    given = {"p_runs_days": runs_days, "p_logs_days": logs_days}
    retention = sql.SQL("").join(
        sql.SQL("{} => {}::integer, ").format(sql.Identifier(name), sql.Placeholder(name))
        for name, days in given.items() if days is not None
    )
    statement = sql.SQL(queries.all_queries()["archive_history"]).format(retention=retention)
    with conn.transaction():
        row = conn.execute(statement, {**given, "dry_run": dry_run}).fetchone()
        assert row is not None
    result = CleanupResult(*row, dry_run=dry_run)
    if not dry_run:
        # the tables the cleanup shrinks: the database's list (de_enrollment_maintained_tables)
        tables = tuple(r[0] for r in queries.run(conn, "maintained_tables").fetchall())
        for table in tables:
            conn.execute(sql.SQL(queries.all_queries()["vacuum_table"]).format(table=sql.Identifier(table)))
        result.vacuumed = tables
    return result
