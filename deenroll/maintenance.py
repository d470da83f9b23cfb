"""The SOP's monthly cleanup, done so that it can run: archive_de_enrollment_history()
in one transaction, then VACUUM ANALYZE of both tables outside it (VACUUM cannot run
inside a transaction block, which is what breaks the SOP's own block)."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from . import paths, queries
from .errors import UserError


def retention_defaults() -> tuple[int, int]:
    """How many days of runs and of lead logs the cleanup keeps when not told: the defaults
    archive_de_enrollment_history declares, read from its file (their one home; the CLI passes
    only what the user gave, and shows these in --help)."""
    text = (paths.sql_dir("functions") / "archive_de_enrollment_history.sql").read_text()
    found = dict(re.findall(r"^\s*(p_runs_days|p_logs_days)\s+integer\s+DEFAULT\s+(\d+)\b", text, re.M))
    return int(found["p_runs_days"]), int(found["p_logs_days"])


RUNS_DAYS, LOGS_DAYS = retention_defaults()


def check_days(given_runs_days: int | None, given_logs_days: int | None) -> None:
    """The same rules as the SQL function, checked before connecting: one clear line. What is
    not given is the function's default."""
    runs_days = RUNS_DAYS if given_runs_days is None else given_runs_days
    logs_days = LOGS_DAYS if given_logs_days is None else given_logs_days
    if runs_days < 1 or logs_days < 1:
        raise UserError(f"--runs-days and --logs-days must be at least 1 (got {runs_days} and {logs_days})")
    if runs_days < logs_days:
        raise UserError(
            f"--runs-days ({runs_days}) must be >= --logs-days ({logs_days}): lead logs reference their runs"
        )


def cleanup(conn: psycopg.Connection, runs_days: int | None, logs_days: int | None, dry_run: bool) -> dict[str, Any]:
    """archive_de_enrollment_history's counts and cutoffs, dry_run, and the tables vacuumed. conn must be in
    autocommit mode (VACUUM). A retention of None is the function's default."""
    check_days(runs_days, logs_days)
    queries.require_function(conn, "archive_de_enrollment_history(integer, integer, boolean)")
    given = {"p_runs_days": runs_days, "p_logs_days": logs_days}
    retention = sql.SQL("").join(
        sql.SQL("{} => {}::integer, ").format(sql.Identifier(name), sql.Placeholder(name))
        for name, days in given.items() if days is not None
    )
    statement = sql.SQL(queries.all_queries()["archive_history"]).format(retention=retention)
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        result = {**cur.execute(statement, {**given, "dry_run": dry_run}).fetchone(), "dry_run": dry_run}
    # the tables the cleanup shrinks: the database's list (de_enrollment_maintained_tables)
    result["vacuumed"] = [] if dry_run else [r[0] for r in queries.run(conn, "maintained_tables")]
    for table in result["vacuumed"]:
        conn.execute(sql.SQL(queries.all_queries()["vacuum_table"]).format(table=sql.Identifier(table)))
    return result
