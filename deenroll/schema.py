"""Versioned migrations (through yoyo) and the function/view definitions on top of them.

migrations/NAME.sql and rollback/NAME.sql are handed to yoyo as one migration
each, one step (the whole file) forward and one back, each migration depending
on the one before. yoyo keeps its tracking tables, its lock and its
transactions. functions/*.sql and views/*.sql are (re)applied after the
migrations whenever their text changed, in dependency order, and only once the
migration named in their `-- requires:` header is applied.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psycopg
from yoyo import exceptions as yoyo_exceptions
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri

from . import paths
from .database import Target, connect
from .errors import UserError

BASELINE = "0018_baseline"
DEFINITIONS_TABLE = "_deenroll_definitions"
_MIGRATION_TABLE = "_yoyo_migration"


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class MigrationFile:
    stem: str
    apply_path: Path
    rollback_path: Path

    @property
    def number(self) -> int:
        return int(self.stem.split("_", 1)[0])


@dataclass(frozen=True)
class Definition:
    """One function or view file: its object name, kind, prerequisites and text."""

    name: str
    kind: str  # "function" or "view"
    path: Path
    requires: str
    after: tuple[str, ...]
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migration_files() -> list[MigrationFile]:
    out = []
    for path in sorted(paths.sql_dir("migrations").glob("*.sql")):
        rollback = paths.sql_dir("rollback") / path.name
        out.append(MigrationFile(path.stem, path, rollback))
    return out


_HEADER = re.compile(r"^--\s*(requires|after):\s*(.+?)\s*$", re.M)


def definitions() -> list[Definition]:
    """Every function and view file, in the order they must be applied."""
    found: dict[str, Definition] = {}
    for kind, folder in (("function", "functions"), ("view", "views")):
        for path in sorted(paths.sql_dir(folder).glob("*.sql")):
            sql = path.read_text()
            headers: dict[str, list[str]] = {"requires": [], "after": []}
            for key, value in _HEADER.findall(sql):
                headers[key] += value.replace(",", " ").split()
            if len(headers["requires"]) != 1:
                raise RuntimeError(f"{path}: needs exactly one '-- requires: <migration>' header")
            found[path.stem] = Definition(
                path.stem, kind, path, headers["requires"][0], tuple(headers["after"]), sql
            )
    return _dependency_order(found)


def _dependency_order(defs: dict[str, Definition]) -> list[Definition]:
    """Functions before views, names in order, and each after what its `after:` names."""
    ordered: list[Definition] = []
    done: set[str] = set()

    def visit(d: Definition, trail: tuple[str, ...]) -> None:
        if d.name in done:
            return
        if d.name in trail:
            raise RuntimeError(f"definition cycle: {' -> '.join(trail + (d.name,))}")
        for dep in d.after:
            if dep not in defs:
                raise RuntimeError(f"{d.path}: '-- after: {dep}' names no function or view file")
            visit(defs[dep], trail + (d.name,))
        done.add(d.name)
        ordered.append(d)

    for d in sorted(defs.values(), key=lambda d: (d.kind != "function", d.name)):
        visit(d, ())
    return ordered


def resolve_target(value: str) -> str:
    """A migration's full stem, or its number ('19', '0019'), to the stem."""
    stems = [m.stem for m in migration_files()]
    if value in stems:
        return value
    if value.isdigit():
        for stem in stems:
            if int(stem.split("_", 1)[0]) == int(value):
                return stem
        if int(value) < int(BASELINE.split("_", 1)[0]):
            raise UserError(
                f"{value} is before the baseline {BASELINE}: deenroll never rolls back the platform's own tables"
            )
    raise UserError(f"no migration {value!r}; known: {', '.join(stems)}")


# --------------------------------------------------------------------------- yoyo bridge


class _Backend(PostgresqlPsycopgBackend):
    """yoyo's psycopg 3 backend, connecting with our resolved conninfo."""

    conninfo = ""

    def connect(self, dburi):  # noqa: ARG002 - yoyo's signature
        return psycopg.connect(self.conninfo, autocommit=True, application_name="deenroll migrate")


@contextmanager
def _yoyo(target: Target) -> Iterator[tuple[_Backend, object]]:
    """A yoyo backend on the target and our migrations as yoyo migrations."""
    connect(target, autocommit=True).close()  # fail early, with our one-line message
    backend_cls = type("DeenrollBackend", (_Backend,), {"conninfo": target.dsn})
    backend = backend_cls(parse_uri("postgresql+psycopg://deenroll/deenroll"), _MIGRATION_TABLE)
    backend.init_database()
    with tempfile.TemporaryDirectory(prefix="deenroll-yoyo-") as tmp:
        previous = None
        for m in migration_files():
            if not m.rollback_path.exists():
                raise RuntimeError(f"{m.apply_path.name} has no rollback/{m.apply_path.name}")
            depends = f"__depends__ = {{{previous!r}}}\n" if previous else ""
            Path(tmp, f"{m.stem}.py").write_text(
                "from pathlib import Path\n"
                f"{depends}"
                f"step(Path({str(m.apply_path)!r}).read_text(), Path({str(m.rollback_path)!r}).read_text())\n"
            )
            previous = m.stem
        try:
            yield backend, read_migrations(tmp)
        finally:
            backend.connection.close()


@contextmanager
def _locked(backend: _Backend, timeout: float) -> Iterator[None]:
    try:
        with backend.lock(timeout=timeout):
            yield
    except yoyo_exceptions.LockTimeout as exc:
        raise UserError(
            f"another migrate or rollback holds the migration lock ({exc}); "
            "if no such process is running, run `deenroll migrate --break-lock`"
        ) from None


def _sql_error(exc: BaseException) -> UserError:
    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, psycopg.Error):
        cause = cause.__cause__
    if isinstance(cause, psycopg.Error) and cause.diag.message_primary:
        msg = cause.diag.message_primary
        if cause.diag.message_hint:
            msg += f" ({cause.diag.message_hint})"
        if cause.sqlstate == "55P03":
            msg += "; a live transaction holds a lock the migration needs, retry when traffic is lower"
        return UserError(msg)
    return UserError(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))


def _applied_stems(backend: _Backend, migrations) -> list[str]:
    applied = set(backend.get_applied_migration_hashes())
    return [m.id for m in migrations if m.hash in applied]


@dataclass
class MigrateResult:
    applied: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)


def migrate(target: Target, to: str | None = None, lock_timeout: float = 60.0) -> MigrateResult:
    """Apply pending migrations (up to `to`), then every changed function and view."""
    stop_at = resolve_target(to) if to else None
    result = MigrateResult()
    with _yoyo(target) as (backend, migrations):
        with _locked(backend, lock_timeout):
            pending = backend.to_apply(migrations)
            if stop_at:
                pending = pending.filter(lambda m: m.id <= stop_at)
            try:
                for m in pending:
                    backend.apply_one(m)
                    result.applied.append(m.id)
            except (psycopg.Error, yoyo_exceptions.BadMigration) as exc:
                raise _sql_error(exc) from None
            applied = set(_applied_stems(backend, migrations))
        with _locked(backend, lock_timeout):
            result.definitions = apply_definitions(target, applied)
    return result


def rollback(target: Target, to: str, lock_timeout: float = 60.0) -> list[str]:
    """Roll back every migration after `to`, newest first."""
    stop_at = resolve_target(to)
    rolled: list[str] = []
    with _yoyo(target) as (backend, migrations):
        with _locked(backend, lock_timeout):
            todo = backend.to_rollback(migrations).filter(lambda m: m.id > stop_at)
            try:
                for m in todo:
                    backend.rollback_one(m)
                    rolled.append(m.id)
            except (psycopg.Error, yoyo_exceptions.BadMigration) as exc:
                raise _sql_error(exc) from None
    with connect(target) as conn:
        _forget_missing_definitions(conn)
    return rolled


def break_lock(target: Target) -> None:
    with _yoyo(target) as (backend, _):
        backend.break_lock()


# --------------------------------------------------------------------------- definitions


def _catalog_hash(conn: psycopg.Connection, d: Definition) -> str | None:
    """md5 of the object's definition as the database holds it; None when absent."""
    if d.kind == "view":
        sql = """SELECT md5(pg_get_viewdef(c.oid)) FROM pg_class c
                  WHERE c.relname = %s AND c.relkind IN ('v', 'm')
                    AND c.relnamespace = current_schema()::regnamespace"""
    else:
        sql = """SELECT md5(string_agg(pg_get_functiondef(p.oid), ';' ORDER BY p.oid::regprocedure::text))
                   FROM pg_proc p
                  WHERE p.proname = %s AND p.pronamespace = current_schema()::regnamespace
                 HAVING count(*) > 0"""
    row = conn.execute(sql, (d.name,)).fetchone()
    return row[0] if row else None


def _ensure_definitions_table(conn: psycopg.Connection) -> None:
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {DEFINITIONS_TABLE} (
                name         text PRIMARY KEY,
                kind         text NOT NULL,
                file_sha256  text NOT NULL,
                catalog_md5  text NOT NULL,
                applied_at   timestamptz NOT NULL DEFAULT now())"""
    )


def _recorded(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    exists = conn.execute("SELECT to_regclass(%s)", (DEFINITIONS_TABLE,)).fetchone()[0]
    if not exists:
        return {}
    rows = conn.execute(f"SELECT name, file_sha256, catalog_md5 FROM {DEFINITIONS_TABLE}").fetchall()
    return {name: (sha, md5) for name, sha, md5 in rows}


def _drop_existing(conn: psycopg.Connection, d: Definition) -> None:
    """Drop the object (every overload) so a changed signature or column list can be created."""
    if d.kind == "view":
        conn.execute(f'DROP VIEW IF EXISTS "{d.name}" CASCADE')
        return
    procs = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p "
        "WHERE p.proname = %s AND p.pronamespace = current_schema()::regnamespace",
        (d.name,),
    ).fetchall()
    for (signature,) in procs:
        conn.execute(f"DROP FUNCTION IF EXISTS {signature} CASCADE")


def apply_definitions(target: Target, applied: set[str]) -> list[str]:
    """(Re)create every function and view whose file changed, was dropped or was edited by hand."""
    changed: list[str] = []
    with connect(target) as conn:
        conn.execute("SET LOCAL lock_timeout = '5s'")
        _ensure_definitions_table(conn)
        recorded = _recorded(conn)
        for d in definitions():
            if d.requires not in applied:
                continue
            current = _catalog_hash(conn, d)
            seen = recorded.get(d.name)
            if current is not None and seen == (d.sha256, current):
                continue
            try:
                _drop_existing(conn, d)
                conn.execute(d.sql)
            except psycopg.Error as exc:
                raise UserError(f"{d.path.parent.name}/{d.path.name}: {_sql_error(exc)}") from None
            conn.execute(
                f"""INSERT INTO {DEFINITIONS_TABLE} (name, kind, file_sha256, catalog_md5)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT (name) DO UPDATE
                       SET kind = EXCLUDED.kind, file_sha256 = EXCLUDED.file_sha256,
                           catalog_md5 = EXCLUDED.catalog_md5, applied_at = now()""",
                (d.name, d.kind, d.sha256, _catalog_hash(conn, d)),
            )
            changed.append(d.name)
    return changed


def _forget_missing_definitions(conn: psycopg.Connection) -> None:
    if not _recorded(conn):
        return
    for d in definitions():
        if _catalog_hash(conn, d) is None:
            conn.execute(f"DELETE FROM {DEFINITIONS_TABLE} WHERE name = %s", (d.name,))


# --------------------------------------------------------------------------- status


@dataclass
class Status:
    migrations: list[tuple[str, str]]  # (stem, "applied <when>" | "pending")
    definitions: list[tuple[str, str, str]]  # (name, kind, state)

    @property
    def pending(self) -> list[str]:
        return [stem for stem, state in self.migrations if state == "pending"]

    @property
    def out_of_date(self) -> list[str]:
        return [name for name, _, state in self.definitions if state not in ("up to date",) and not state.startswith("waits")]


def status(target: Target) -> Status:
    with _yoyo(target) as (backend, migrations):
        rows = backend.execute(
            f"SELECT migration_id, applied_at_utc FROM {_MIGRATION_TABLE}"
        ).fetchall()
        when = {mid: at for mid, at in rows}
        applied = set(_applied_stems(backend, migrations))
    mig_states = [
        (m.stem, f"applied {when[m.stem]:%Y-%m-%d %H:%M:%S} UTC" if m.stem in applied else "pending")
        for m in migration_files()
    ]
    def_states = []
    with connect(target) as conn:
        recorded = _recorded(conn)
        for d in definitions():
            current = _catalog_hash(conn, d)
            seen = recorded.get(d.name)
            if d.requires not in applied:
                state = f"waits for {d.requires}"
            elif current is None:
                state = "missing (run migrate)"
            elif seen is None:
                state = "unmanaged (run migrate)"
            elif seen[0] != d.sha256:
                state = "file changed (run migrate)"
            elif seen[1] != current:
                state = "changed in the database by hand (run migrate to restore)"
            else:
                state = "up to date"
            def_states.append((d.name, d.kind, state))
    return Status(mig_states, def_states)


# --------------------------------------------------------------------------- verify

# The SOP's Step 2.2: each new column with the type it must have.
SOP_COLUMNS = [
    ("campaigns", "active_leads_count", "integer"),
    ("campaigns", "auto_discovered", "boolean"),
    ("campaigns", "booked_count", "integer"),
    ("campaigns", "completed_leads_count", "integer"),
    ("campaigns", "deactivated_at", "timestamp with time zone"),
    ("campaigns", "is_active", "boolean"),
    ("campaigns", "last_enrollment_at", "timestamp with time zone"),
    ("campaigns", "opted_out_count", "integer"),
    ("leads", "campaign_history", "jsonb"),
    ("leads", "completed_at", "timestamp with time zone"),
]
SOP_TABLES = ["de_enrollment_runs", "de_enrollment_lead_log"]
SOP_FUNCTIONS = ["get_leads_for_de_enrollment", "process_de_enrollment_batch"]
SOP_VIEWS = ["de_enrollment_health"]


def verify(target: Target) -> list[tuple[str, bool, str]]:
    """The SOP's post-migration checks: (item, passed, detail) for each."""
    checks: list[tuple[str, bool, str]] = []
    with connect(target) as conn:
        cols = dict(
            ((t, c), ty)
            for t, c, ty in conn.execute(
                """SELECT table_name, column_name, data_type FROM information_schema.columns
                    WHERE table_schema = current_schema() AND table_name IN ('leads', 'campaigns')"""
            ).fetchall()
        )
        for table, column, typ in SOP_COLUMNS:
            found = cols.get((table, column))
            ok = found == typ
            checks.append((f"column {table}.{column}", ok, found or "missing" if not ok else typ))
        for table in SOP_TABLES:
            regclass = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]
            if regclass is None:
                checks.append((f"table {table}", False, "missing"))
                continue
            count = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            checks.append((f"table {table}", True, f"{count} rows"))
        routines = {
            r[0]
            for r in conn.execute(
                """SELECT routine_name FROM information_schema.routines
                    WHERE routine_schema = current_schema() AND routine_name LIKE '%de_enrollment%'"""
            ).fetchall()
        }
        for fn in SOP_FUNCTIONS:
            checks.append((f"function {fn}", fn in routines, "present" if fn in routines else "missing"))
        for view in SOP_VIEWS:
            kind = conn.execute(
                "SELECT relkind FROM pg_class WHERE relname = %s AND relnamespace = current_schema()::regnamespace",
                (view,),
            ).fetchone()
            ok = kind is not None and kind[0] == "v"
            checks.append((f"view {view}", ok, "present" if ok else "missing"))
    return checks
