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
from dataclasses import asdict, dataclass
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
_NAME = re.compile(r"^(leads|campaigns)_backup_(\d{8})$")


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


@dataclass
class BackupTable:
    table: str
    backup: str
    rows: int


def create(conn: psycopg.Connection, day: str) -> list[BackupTable]:
    """Both backup tables, counts verified, or nothing at all. Commits."""
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
    made: list[BackupTable] = []
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
                made.append(BackupTable(table, name, backup_rows))
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
    """Every backup date, with each table's exact row count and size (None when missing)."""
    rows = queries.run(conn, "backup_tables").fetchall()
    by_day: dict[str, dict[str, Any]] = {}
    for name, size in rows:
        m = _NAME.match(name)
        if not m:
            continue
        table, day = m.groups()
        entry = by_day.setdefault(day, {"date": day, "complete": False, **{t: None for t in TABLES}})
        entry[table] = {"table": name, "rows": _count(conn, name), "bytes": size}
    for entry in by_day.values():
        entry["complete"] = all(entry[t] is not None for t in TABLES)
    return [by_day[d] for d in sorted(by_day, reverse=True)]


def _common_columns(conn: psycopg.Connection, table: str, backup: str) -> list[str]:
    wanted = list(RESTORED_COLUMNS[table])
    rows = queries.run(conn, "common_columns", table=table, wanted=wanted, backup=backup).fetchall()
    present = {r[0] for r in rows}
    return [c for c in wanted if c in present]


@dataclass
class RestoredTable:
    table: str
    backup: str
    columns: list[str]
    backup_rows: int
    matched: int  # backup rows whose id is in the live table
    changed: int  # live rows the restore changed
    missing: int  # backup rows whose id is no longer in the live table


@dataclass
class RestoreResult:
    tables: list[RestoredTable]
    recounted: list[dict[str, Any]] | None  # campaigns whose counters the recount changed; None: no counters

    def to_json(self) -> dict[str, Any]:
        return {"tables": [asdict(t) for t in self.tables], "recounted": self.recounted}


def restore(conn: psycopg.Connection, day: str, lock_timeout_s: int = 10) -> RestoreResult:
    """The SOP's Step 4, in one transaction, verified; commits, or changes nothing."""
    for table in TABLES:
        name = table_name(table, day)
        if not _exists(conn, name):
            raise UserError(f"no backup {day}: table {name} does not exist (see `deenroll backup list`)")
    conn.rollback()
    tables: list[RestoredTable] = []
    recounted: list[dict[str, Any]] | None = None
    with conn.transaction():
        queries.run(conn, "backup_lock_timeout", timeout=f"{lock_timeout_s}s")
        queries.run(conn, "lock_platform_tables")
        for table in TABLES:
            backup = table_name(table, day)
            cols = _common_columns(conn, table, backup)
            names = {"table": sql.Identifier(table), "backup": sql.Identifier(backup)}
            backup_rows = _count(conn, backup)
            matched = conn.execute(_statement("backup_rows_matched", **names)).fetchone()[0]
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
            tables.append(RestoredTable(table, backup, cols, backup_rows, matched, changed, backup_rows - matched))
        if queries.value(conn, "function_exists", signature="recalculate_campaign_stats(uuid)"):
            recounted = queries.rows(conn, "recalculate", client_id=None)
    return RestoreResult(tables, recounted)
