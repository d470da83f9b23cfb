"""The SOP's monthly cleanup, done so that it can run: archive_de_enrollment_history()
in one transaction, then VACUUM ANALYZE of both tables outside it (VACUUM cannot run
inside a transaction block, which is what breaks the SOP's own block)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from . import queries
from .errors import UserError



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


def check_days(runs_days: int, logs_days: int) -> None:
    """The same rules as the SQL function, checked before connecting: one clear line."""
    if runs_days < 1 or logs_days < 1:
        raise UserError(f"--runs-days and --logs-days must be at least 1 (got {runs_days} and {logs_days})")
    if runs_days < logs_days:
        raise UserError(
            f"--runs-days ({runs_days}) must be >= --logs-days ({logs_days}): lead logs reference their runs"
        )


def cleanup(conn: psycopg.Connection, runs_days: int, logs_days: int, dry_run: bool) -> CleanupResult:
    """conn must be in autocommit mode (VACUUM)."""
    check_days(runs_days, logs_days)
    queries.require_function(conn, "archive_de_enrollment_history(integer, integer, boolean)")
    with conn.transaction():
        row = queries.one(conn, "archive_history", runs_days=runs_days, logs_days=logs_days, dry_run=dry_run)
    result = CleanupResult(*row, dry_run=dry_run)
    if not dry_run:
        # the tables the cleanup shrinks: the database's list (de_enrollment_maintained_tables)
        tables = tuple(r[0] for r in queries.run(conn, "maintained_tables").fetchall())
        for table in tables:
            conn.execute(sql.SQL(queries.all_queries()["vacuum_table"]).format(table=sql.Identifier(table)))
        result.vacuumed = tables
    return result
