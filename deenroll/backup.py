"""The SOP's table backups: leads_backup_YYYYMMDD and campaigns_backup_YYYYMMDD.

Plain statements (queries_backup.sql) rather than stored functions, on purpose: the SOP
takes the backup before the first migration (Step 1.2, T-24 h) and restores it after a
rollback (Step 4), when none of our functions exist.

create:  CREATE TABLE ... AS SELECT * FROM ... for both tables, in one REPEATABLE READ
         transaction, so the backup and the count it is checked against are of the
         same instant; refuses a date whose tables exist.
restore: the SOP's Step 4 in one transaction: the columns it names that both the live
         table and the backup have, matched on id; then, when the counters exist, an
         exact recount (the backup's counters ignore leads created since). Writes to
         leads and campaigns wait while it runs (SHARE ROW EXCLUSIVE lock).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql

from . import queries
from .errors import UserError

TABLES = ("leads", "campaigns")
# The columns the SOP's Step 4 restores, per table.
RESTORED_COLUMNS = {
    "leads": ("is_active", "completed_at", "campaign_history"),
    "campaigns": ("is_active", "active_leads_count", "completed_leads_count", "opted_out_count", "booked_count"),
}


def parse_date(value: str | None) -> str:
    """YYYYMMDD (default: today's local date), checked to be a real date."""
    if value is None:
        return date.today().strftime("%Y%m%d")
    if not re.fullmatch(r"\d{8}", value):
        raise UserError(f"malformed backup date {value!r}: expected YYYYMMDD, e.g. 20241104")
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise UserError(f"malformed backup date {value!r}: no such day") from None
    return value


def table_name(table: str, day: str) -> str:
    return f"{table}_backup_{day}"


def _exists(conn: psycopg.Connection, name: str) -> bool:
    return queries.value(conn, "table_in_current_schema", name=name)


def _statement(name: str, **names: sql.Composable) -> sql.Composed:
    """The named statement with its {placeholders} filled in (identifiers, column lists)."""
    return sql.SQL(queries.all_queries()[name]).format(**names)


def _count(conn: psycopg.Connection, name: str) -> int:
    return conn.execute(_statement("backup_row_count", table=sql.Identifier(name))).fetchone()[0]


def create(conn: psycopg.Connection, day: str) -> list[dict[str, Any]]:
    """Both backup tables ({table, backup, rows} each), counts verified, or nothing at all. Commits."""
    for table in TABLES:
        if not _exists(conn, table):
            raise UserError(f"table {table} does not exist in this database")
    existing = [table_name(t, day) for t in TABLES if _exists(conn, table_name(t, day))]
    if existing:
        raise UserError(
            f"backup {day} already exists ({', '.join(existing)}); pick another --date or drop it first"
        )
    conn.rollback()
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    made = []
    try:
        with conn.transaction():
            for table in TABLES:
                name = table_name(table, day)
                conn.execute(_statement("backup_copy", backup=sql.Identifier(name), table=sql.Identifier(table)))
                source_rows, backup_rows = _count(conn, table), _count(conn, name)
                if source_rows != backup_rows:  # same snapshot: can only mean a broken copy
                    raise UserError(f"backup {name} has {backup_rows} rows, {table} has {source_rows}: nothing kept")
                comment = sql.Literal(f"deenroll backup create: copy of {table}, {source_rows} rows")
                conn.execute(_statement("backup_comment", backup=sql.Identifier(name), comment=comment))
                made.append({"table": table, "backup": name, "rows": backup_rows})
            # The copies hold personal data and got whatever default privileges hand out
            # (on Supabase: everything, to the API roles): closed like every table of ours.
            if queries.value(conn, "function_exists", signature="public.deenroll_apply_privileges()"):
                queries.run(conn, "apply_privileges")
    except psycopg.errors.DuplicateTable:
        raise UserError(f"backup {day} was created meanwhile by another session; nothing changed") from None
    finally:
        conn.isolation_level = None
    return made


def list_backups(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every backup date, newest first, with each table's exact row count and size (None when missing)."""
    found = queries.rows(conn, "backup_list")
    for entry in (b[t] for b in found for t in TABLES if b[t]):
        entry["rows"] = _count(conn, entry["table"])
    return found


def restore(conn: psycopg.Connection, day: str, lock_timeout_s: int = 10) -> dict[str, Any]:
    """The SOP's Step 4, in one transaction, verified; commits, or changes nothing.

    Per table: the columns restored, the backup's rows, those whose id is in the live table (matched)
    and those no longer there (missing), the live rows changed; then the campaigns whose counters
    the recount changed (None: no counters to recount).
    """
    for table in TABLES:
        name = table_name(table, day)
        if not _exists(conn, name):
            raise UserError(f"no backup {day}: table {name} does not exist (see `deenroll backup list`)")
    conn.rollback()
    tables: list[dict[str, Any]] = []
    recounted: list[dict[str, Any]] | None = None
    with conn.transaction():
        queries.run(conn, "backup_lock_timeout", timeout=f"{lock_timeout_s}s")
        queries.run(conn, "lock_platform_tables")
        for table in TABLES:
            backup = table_name(table, day)
            wanted = list(RESTORED_COLUMNS[table])
            cols = [r[0] for r in queries.run(conn, "common_columns", table=table, wanted=wanted, backup=backup)]
            names = {"table": sql.Identifier(table), "backup": sql.Identifier(backup)}
            backup_rows, matched = conn.execute(_statement("backup_rows_matched", **names)).fetchone()
            changed = 0
            if cols:
                columns = {
                    "columns": sql.SQL(", ").join(sql.Identifier(c) for c in cols),
                    "live": sql.SQL(", ").join(sql.Identifier("l", c) for c in cols),
                    "saved": sql.SQL(", ").join(sql.Identifier("b", c) for c in cols),
                }
                changed = conn.execute(_statement("backup_restore_columns", **names, **columns)).rowcount
                left = conn.execute(_statement("backup_rows_different", **names, **columns)).fetchone()[0]
                if left:
                    raise UserError(f"restore of {table} from {backup} left {left} rows different; nothing changed")
            tables.append({"table": table, "backup": backup, "columns": cols, "backup_rows": backup_rows,
                           "matched": matched, "changed": changed, "missing": backup_rows - matched})
        if queries.value(conn, "function_exists", signature="recalculate_campaign_stats(uuid)"):
            recounted = queries.rows(conn, "recalculate", client_id=None)
    return {"tables": tables, "recounted": recounted}
