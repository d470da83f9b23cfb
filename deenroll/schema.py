"""Versioned migrations (through yoyo) and the function/view definitions on top of them.

migrations/NAME.sql and rollback/NAME.sql are handed to yoyo as one migration
each, one step forward and one back, each migration depending on the one before.
yoyo keeps its tracking tables, its lock and its transactions; the step runs the
file statement by statement so that a failure names the statement (and, for a lock
wait, the session holding the lock). A file that begins with `-- transactional: false`
(with its rollback) runs outside any transaction, statement by statement, so that it can
build indexes CONCURRENTLY and commit a backfill in batches; each of its statements can be
run again, and an INVALID index left by a failed concurrent build of an index it creates
is dropped (concurrently) before it runs. A migration that gives up waiting for a lock
(lock_timeout) is retried a few times with backoff: a transactional one left nothing
behind, a non-transactional one re-runs safely. functions/*.sql and views/*.sql are applied
after the migrations whenever their text changed, in dependency order, replaced in
place, and only once the migration named in their `-- requires:` header is applied.

Adopting a database:
- the baseline's prerequisite check runs in a transaction that is rolled back
  before anything is created, so a refused migrate leaves nothing behind;
- migrations applied by hand (`psql -f migrations/0019_...sql`) are recognised:
  each migration is applied to empty copies of the platform's tables in a scratch
  schema, inside a transaction that is rolled back, and what it created there is
  looked for in the real schema (see `_footprints`).

Rolling a migration back first drops the functions and views whose header requires
it; `uninstall` rolls back to the baseline and drops the bookkeeping tables and the
roles a migration created. Nothing of someone else's is ever dropped: where one of
their objects depends on ours, the command stops and names it.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import psycopg
import sqlparse
from psycopg import sql as pgsql
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
# yoyo's own tables (its defaults) and ours: what `uninstall` drops besides the migrations.
BOOKKEEPING_TABLES = (_MIGRATION_TABLE, "_yoyo_log", "_yoyo_version", "yoyo_lock", DEFINITIONS_TABLE)
# The mark a role created by a migration carries (COMMENT ON ROLE ... IS 'deenroll: ...').
ROLE_MARK = "deenroll:"


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class MigrationFile:
    stem: str
    apply_path: Path
    rollback_path: Path

    @property
    def transactional(self) -> bool:
        """False when the file begins with `-- transactional: false` (run outside a transaction)."""
        return is_transactional(self.apply_path.read_text())


_NOT_TRANSACTIONAL = re.compile(r"--[ \t]*transactional:[ \t]*false[ \t]*(\n|$)", re.I)


def is_transactional(text: str) -> bool:
    return _NOT_TRANSACTIONAL.match(text.lstrip()) is None


@dataclass(frozen=True)
class Definition:
    """One function, procedure or view file: its object name, kind, prerequisites and text."""

    name: str
    kind: str  # "function" (procedures too) or "view"
    path: Path
    requires: str
    after: tuple[str, ...]
    sql: str
    schema: str = "public"  # the schema its CREATE names: public, or deenroll for what the SOP does not name
    routine: str = "FUNCTION"  # what its CREATE makes: FUNCTION, PROCEDURE or VIEW

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def drop(self) -> str:
        """The statement that drops it (a rollback's generated line)."""
        return f"DROP {self.routine} IF EXISTS {self.schema}.{self.name};"

    def home(self, current: str) -> str:
        """The schema it lives in: files written for public follow the installation's schema."""
        return current if self.schema == "public" else self.schema


def migration_files() -> list[MigrationFile]:
    out = []
    for path in sorted(paths.sql_dir("migrations").glob("*.sql")):
        rollback = paths.sql_dir("rollback") / path.name
        out.append(MigrationFile(path.stem, path, rollback))
    return out


_HEADER = re.compile(r"^--\s*(requires|after):\s*(.+?)\s*$", re.M)
_CREATE = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE|VIEW)\s+(\w+)\.(\w+)\b", re.M | re.I)


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
            create = _CREATE.search(sql)
            if create is None or create.group(3) != path.stem:
                raise RuntimeError(f"{path}: needs a 'CREATE FUNCTION|PROCEDURE|VIEW <schema>.{path.stem}'")
            found[path.stem] = Definition(
                path.stem, kind, path, headers["requires"][0], tuple(headers["after"]), sql,
                schema=create.group(2), routine=create.group(1).upper(),
            )
    return _dependency_order(found)


# A rollback file also serves the psql route (no deenroll at hand): between these two lines it
# drops the functions and views that need its migration. The lines are written from the files'
# headers by scripts/sync-rollback-drops.py and checked by the tests; never edited by hand.
DROPS_BEGIN = "-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)"
DROPS_END = "-- end of the functions and views"


def rollback_drops(stem: str) -> list[str]:
    """The DROP statements of the functions and views whose `-- requires:` names `stem`, and of
    every function or view built on them (their `-- after:`), in the reverse of creation order."""
    ordered = definitions()
    gone = {d.name for d in ordered if d.requires == stem}
    for d in ordered:  # dependency order: what a definition is built on comes before it
        if gone.intersection(d.after):
            gone.add(d.name)
    return [d.drop for d in reversed(ordered) if d.name in gone]


def rollback_with_drops(stem: str, text: str) -> str:
    """`text` (a rollback file) with its generated block replaced by `rollback_drops(stem)`."""
    block = "\n".join([DROPS_BEGIN, *rollback_drops(stem), DROPS_END])
    pattern = re.compile(re.escape(DROPS_BEGIN) + r".*?" + re.escape(DROPS_END), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text, count=1)
    if not rollback_drops(stem):
        return text
    raise ValueError(f"rollback of {stem}: the lines '{DROPS_BEGIN}' ... '{DROPS_END}' are missing")


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


# --------------------------------------------------------------------------- running SQL files


@dataclass(frozen=True)
class Statement:
    start: int  # the file's line where the text sent begins (leading comments included), 1-based
    line: int  # the file's line of its first line of code
    sql: str

    @property
    def first_line(self) -> str:
        return next((l.strip() for l in self.sql.splitlines() if l.strip() and not l.strip().startswith("--")), "")


def statements(text: str) -> list[Statement]:
    """The file's statements (as yoyo and psql split them), each with its line number."""
    out: list[Statement] = []
    offset = 0
    for chunk in sqlparse.split(text):
        at = text.find(chunk, offset)
        offset = at + len(chunk) if at >= 0 else offset
        code = sqlparse.format(chunk, strip_comments=True).strip()
        if not code or code == ";":
            continue
        lines_before = text.count("\n", 0, max(at, 0))
        leading = next((i for i, l in enumerate(chunk.splitlines()) if l.strip() and not l.strip().startswith("--")), 0)
        out.append(Statement(lines_before + 1, lines_before + leading + 1, chunk))
    return out


class _LockWatch:
    """Remembers who blocks a session while it waits for a lock, seen from a second connection."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._pid: int | None = None
        self._blockers: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "_LockWatch":
        try:
            self._conn = connect(self._target, autocommit=True, app="deenroll migrate (lock watch)")
        except UserError:
            self._conn = None
            return self
        self._thread = threading.Thread(target=self._loop, name="deenroll-lock-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._conn is not None:
            self._conn.close()

    def watch(self, pid: int) -> None:
        self._pid = pid
        self._blockers = []

    def blockers(self) -> list[str]:
        return list(self._blockers)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            pid = self._pid
            if pid is None or self._conn is None:
                continue
            try:
                rows = self._conn.execute(
                    """SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''),
                              coalesce(a.state, ''), a.xact_start, a.query_start, left(coalesce(a.query, ''), 120)
                         FROM pg_catalog.pg_stat_activity AS a
                        WHERE a.pid = ANY (pg_catalog.pg_blocking_pids(%s))
                        ORDER BY a.pid""",
                    (pid,),
                ).fetchall()
            except psycopg.Error:
                return
            if rows:
                self._blockers = [
                    f"pid {p} (application_name {app!r}, user {user!r}, state {state!r}, "
                    f"transaction started {xact:%Y-%m-%d %H:%M:%S%z}, query started {qs:%Y-%m-%d %H:%M:%S%z}, "
                    f"query {' '.join(q.split())!r})"
                    if xact and qs
                    else f"pid {p} (application_name {app!r}, user {user!r}, state {state!r}, query {' '.join(q.split())!r})"
                    for p, app, user, state, xact, qs, q in rows
                ]


class MigrationError(Exception):
    """A statement of a SQL file failed: where, what, and who held the lock it waited for."""

    def __init__(
        self, label: str, path: Path, stmt: Statement, cause: psycopg.Error, blockers: list[str], transactional: bool = True
    ) -> None:
        self.label, self.path, self.stmt, self.cause, self.blockers = label, path, stmt, cause, blockers
        self.transactional = transactional
        super().__init__(self.message())

    def message(self) -> str:
        diag = self.cause.diag
        line = self.stmt.line
        if diag.statement_position and diag.statement_position.isdigit():  # where in the statement, when known
            line = self.stmt.start + self.stmt.sql[: int(diag.statement_position) - 1].count("\n")
        where = f"{self.path.parent.name}/{self.path.name} line {line} ({self.stmt.first_line[:80]!r})"
        msg = _one_line(diag.message_primary or str(self.cause))
        if diag.message_detail:
            msg += f" ({_one_line(diag.message_detail)})"
        if diag.message_hint:
            msg += f"; hint: {_one_line(diag.message_hint)}"
        text = f"{self.label} failed at {where}: {msg}"
        if self.cause.sqlstate == "55P03":
            if self.blockers:
                text += f"; the lock is held by {'; '.join(self.blockers)}"
            if self.transactional:
                text += "; nothing of it took effect: run it again when that transaction has ended"
            else:
                text += "; what it finished stays and every statement can be re-run: run it again when that transaction has ended"
        return text


def _one_line(text: str) -> str:
    """A server message on one line: its lines joined with '; '."""
    return "; ".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


# The migration step in flight reports its session here (the lock watch follows it).
_active_watch: _LockWatch | None = None


def run_file(conn: psycopg.Connection, path: Path, label: str, text: str | None = None) -> None:
    """Execute a SQL file statement by statement on `conn`; a failure raises MigrationError."""
    watch = _active_watch
    if watch is not None:
        watch.watch(conn.info.backend_pid)
    in_transaction = not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    for stmt in statements(text if text is not None else path.read_text()):
        try:
            conn.execute(stmt.sql)
        except psycopg.Error as exc:
            blockers = watch.blockers() if watch is not None else []
            raise MigrationError(label, path, stmt, exc, blockers, in_transaction) from None


# CREATE INDEX CONCURRENTLY IF NOT EXISTS <name>: the statements whose failed build leaves an INVALID index.
_CONCURRENT_BUILD = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+((?:\"[^\"]+\"|[\w$]+)(?:\.(?:\"[^\"]+\"|[\w$]+))?)",
    re.I | re.M,
)


def drop_invalid_indexes(conn: psycopg.Connection, text: str) -> list[str]:
    """Drop (concurrently) every INVALID index that a failed concurrent build of an index the file
    creates left under its name, so that the file builds it again; returns their names.
    `conn` is in autocommit mode."""
    dropped = []
    for stmt in statements(text):
        code = sqlparse.format(stmt.sql, strip_comments=True)
        match = _CONCURRENT_BUILD.search(code)
        if match is None:
            continue
        row = conn.execute(
            """SELECT i.indexrelid::regclass::text FROM pg_catalog.pg_index AS i
                WHERE i.indexrelid = pg_catalog.to_regclass(%s) AND NOT i.indisvalid""",
            (match.group(1),),
        ).fetchone()
        if row is not None:
            conn.execute(pgsql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(pgsql.SQL(row[0])))
            dropped.append(row[0])
    return dropped


def _file_step(path: str, label: str) -> Callable[[psycopg.Connection], None]:
    """A yoyo step: the SQL file, run statement by statement in yoyo's transaction, or outside
    any (autocommit) for a non-transactional file, after dropping what failed builds left."""

    def step(conn: psycopg.Connection) -> None:
        text = Path(path).read_text()
        if not is_transactional(text):
            drop_invalid_indexes(conn, text)
        run_file(conn, Path(path), label, text)

    return step


def _rollback_step(path: str, stem: str) -> Callable[[psycopg.Connection], None]:
    """A yoyo rollback step: first the functions and views whose `-- requires:` names this
    migration (and ours built on them), newest first, then the rollback file; one transaction."""

    def step(conn: psycopg.Connection) -> None:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        text = Path(path).read_text()
        # Outside yoyo's transaction (a non-transactional migration) the drops get their own.
        with conn.transaction() if not is_transactional(text) else _nothing():
            for d in reversed(definitions()):
                if d.requires == stem:
                    for obj in _objects_of(conn, d, schema):
                        _drop_ours(conn, d, obj, schema, why=f"rolling back {stem} drops it")
        if not is_transactional(text):
            drop_invalid_indexes(conn, text)
        run_file(conn, Path(path), f"rollback of {stem}", text)

    return step


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# --------------------------------------------------------------------------- yoyo bridge


class _Backend(PostgresqlPsycopgBackend):
    """yoyo's psycopg 3 backend, connecting with our resolved conninfo."""

    conninfo = ""

    def connect(self, dburi):  # noqa: ARG002 - yoyo's signature
        return psycopg.connect(self.conninfo, autocommit=True, application_name="deenroll migrate")


@contextmanager
def _yoyo(target: Target) -> Iterator[tuple[_Backend, object]]:
    """A yoyo backend on the target (its tables created if missing) and our migrations."""
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
            if is_transactional(m.rollback_path.read_text()) != m.transactional:
                raise RuntimeError(
                    f"{m.apply_path.name} and rollback/{m.apply_path.name} must both begin with "
                    "'-- transactional: false', or neither"
                )
            transactional = "" if m.transactional else "__transactional__ = False\n"
            Path(tmp, f"{m.stem}.py").write_text(
                "from deenroll.schema import _file_step, _rollback_step\n"
                f"{depends}{transactional}"
                f"step(_file_step({str(m.apply_path)!r}, 'migration {m.stem}'),"
                f" _rollback_step({str(m.rollback_path)!r}, {m.stem!r}))\n"
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


@contextmanager
def _watched(target: Target) -> Iterator[None]:
    """Migration steps run under a lock watch; their failures become one-line UserErrors."""
    global _active_watch
    with _LockWatch(target) as watch:
        _active_watch = watch
        try:
            yield
        except MigrationError as exc:
            raise UserError(exc.message()) from None
        except _Refused as exc:
            raise UserError(str(exc)) from None
        except (psycopg.Error, yoyo_exceptions.BadMigration) as exc:
            raise _sql_error(exc) from None
        finally:
            _active_watch = None


def _sql_error(exc: BaseException) -> UserError:
    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, psycopg.Error):
        cause = cause.__cause__
    if isinstance(cause, psycopg.Error) and cause.diag.message_primary:
        msg = _one_line(cause.diag.message_primary)
        if cause.diag.message_detail:
            msg += f" ({_one_line(cause.diag.message_detail)})"
        if cause.diag.message_hint:
            msg += f"; hint: {_one_line(cause.diag.message_hint)}"
        return UserError(msg)
    return UserError(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))


def _recorded_migrations(conn: psycopg.Connection) -> dict[str, object] | None:
    """yoyo's record (migration id -> applied at, UTC); None when yoyo never ran here. Reads only."""
    if conn.execute("SELECT pg_catalog.to_regclass(%s)", (_MIGRATION_TABLE,)).fetchone()[0] is None:
        return None
    rows = conn.execute(f"SELECT migration_id, applied_at_utc FROM {_MIGRATION_TABLE}").fetchall()
    return {mid: at for mid, at in rows}


# --------------------------------------------------------------------------- prerequisites


def check_prerequisites(target: Target) -> None:
    """Run the baseline in a transaction that is rolled back: refuse, creating nothing, if it fails."""
    baseline = next(m for m in migration_files() if m.stem == BASELINE)
    with connect(target) as conn:
        try:
            run_file(conn, baseline.apply_path, f"migration {BASELINE}")
        except MigrationError as exc:
            diag = exc.cause.diag
            if exc.cause.sqlstate in ("23505", "42P07", "40P01", "55P03"):
                # Another migrate is creating the baseline's tables right now (its uncommitted
                # catalog rows collide with this probe's): not a refusal. The migration itself
                # runs under yoyo's lock and decides.
                return
            if exc.cause.sqlstate == "42703" and diag.message_primary:
                raise UserError(
                    f"cannot install here: {_one_line(diag.message_primary)}"
                    + (f"; {_one_line(diag.message_hint)}" if diag.message_hint else "")
                ) from None
            raise UserError(exc.message()) from None
        finally:
            conn.rollback()


# --------------------------------------------------------------------------- migrations applied by hand

# What a footprint holds, for the schema named %(s)s: relations with their kind, columns
# with their type, and the names of indexes, constraints, triggers and functions (a later
# migration may redefine those; they still count as there).
_FOOTPRINT: dict[str, str] = {
    "relation": """
        SELECT c.relname, c.relkind::text FROM pg_catalog.pg_class c
         WHERE c.relnamespace = %(s)s::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f')""",
    "column": """
        SELECT c.relname || '.' || a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
          FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
         WHERE c.relnamespace = %(s)s::regnamespace AND c.relkind IN ('r', 'p')
           AND a.attnum > 0 AND NOT a.attisdropped""",
    "index": """
        SELECT i.relname, ''
          FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
         WHERE i.relnamespace = %(s)s::regnamespace""",
    "constraint": """
        SELECT c.relname || '.' || k.conname, ''
          FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
         WHERE c.relnamespace = %(s)s::regnamespace""",
    "trigger": """
        SELECT c.relname || '.' || t.tgname, ''
          FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = %(s)s::regnamespace AND NOT t.tgisinternal""",
    "function": """
        SELECT p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', ''
          FROM pg_catalog.pg_proc p WHERE p.pronamespace = %(s)s::regnamespace""",
}

Footprint = frozenset[tuple[str, str, str]]  # (kind, name, definition)


def _schema_objects(conn: psycopg.Connection, schema: str) -> set[tuple[str, str, str]]:
    conn.execute(pgsql.SQL("SET LOCAL search_path = {}").format(pgsql.Identifier(schema)))
    qualified = re.compile(r'(?<![\w"])("?' + re.escape(schema) + r'"?)\.')
    out = set()
    for kind, query in _FOOTPRINT.items():
        for name, definition in conn.execute(query, {"s": schema}).fetchall():
            out.add((kind, name, qualified.sub("", definition)))
    return out


def _probeable(text: str, schemas: set[str]) -> bool:
    """A migration that names no schema can be tried in a scratch schema without touching the real one."""
    if re.search(r"\bCREATE\s+SCHEMA\b", text, re.I):
        return False
    return not any(re.search(r'(?<![\w."])"?' + re.escape(s) + r'"?\s*\.\s*[\w"]', text) for s in schemas)


def _footprints(target: Target) -> tuple[dict[str, Footprint], set[tuple[str, str, str]]] | str:
    """What each migration after the baseline creates, learnt on empty tables in a scratch schema
    (rolled back), and what the real schema holds; a reason when the probe cannot run.
    The probe stops at the first migration that names a schema (it could reach outside the
    scratch schema) or fails there."""
    files = migration_files()
    after = files[[m.stem for m in files].index(BASELINE) + 1 :]
    probe = f"deenroll_probe_{uuid.uuid4().hex[:12]}"
    found: dict[str, Footprint] = {}
    with connect(target, app="deenroll migrate (probe)") as conn:
        try:
            conn.execute("SET LOCAL lock_timeout = '2s'")
            real_schema = conn.execute("SELECT current_schema()").fetchone()[0]
            schemas = {
                r[0]
                for r in conn.execute(
                    """SELECT nspname FROM pg_catalog.pg_namespace
                        WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'"""
                ).fetchall()
            }
            real = _schema_objects(conn, real_schema)
            conn.execute(pgsql.SQL("CREATE SCHEMA {}").format(pgsql.Identifier(probe)))
            conn.execute(pgsql.SQL("SET LOCAL search_path = {}").format(pgsql.Identifier(probe)))
            run_file(conn, files[[m.stem for m in files].index(BASELINE)].apply_path, "probe")
            before = _schema_objects(conn, probe)
            for m in after:
                text = m.apply_path.read_text()
                if not is_transactional(text):
                    continue  # cannot run in the probe's transaction; re-runnable, so migrate just runs it
                if not _probeable(text, schemas | {probe}):
                    break
                try:
                    with conn.transaction():
                        conn.execute(pgsql.SQL("SET LOCAL search_path = {}").format(pgsql.Identifier(probe)))
                        run_file(conn, m.apply_path, "probe", text)
                except MigrationError:
                    break
                now = _schema_objects(conn, probe)
                found[m.stem] = frozenset(now - before)
                before = now
        except psycopg.Error as exc:
            return _one_line(exc.diag.message_primary or str(exc))
        except MigrationError as exc:
            return exc.message()
        finally:
            conn.rollback()
    return found, real


def _describe(items: set[tuple[str, str, str]], limit: int = 6) -> str:
    names = sorted(f"{kind} {name}" for kind, name, _ in items)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _recognise(target: Target, applied: set[str], notes: list[str]) -> list[str]:
    """The migrations not in `applied` that were applied by hand (all their objects are there).

    Reads only (the probe is rolled back). A pending migration with only some of its
    objects there is half applied: refused, naming what is there and what is missing.
    A migration recorded as applied none of whose objects is left was rolled back by
    hand: refused too, with the command that records that.
    """
    probed = _footprints(target)
    if isinstance(probed, str):
        notes.append(f"could not look for migrations applied by hand: {probed}")
        return []
    footprints, real = probed
    stems = [m.stem for m in migration_files()]
    recognised: list[str] = []
    for stem, fp in footprints.items():
        if not fp:
            continue
        present = fp & real
        if stem not in applied:
            if present == fp:
                recognised.append(stem)
            elif present:
                raise UserError(
                    f"{stem} is partly in the database (present: {_describe(present)}; missing: {_describe(fp - present)}): "
                    f"finish it by hand, or undo it with psql -1 -f {_sop_rollback_path(stem)}, then run migrate again"
                )
        elif not present:
            previous = stems[stems.index(stem) - 1]
            raise UserError(
                f"{stem} is recorded as applied but none of its objects is in the database (rolled back by hand?): "
                f"run `deenroll rollback --to {previous}` to record that (the rollback scripts skip what is gone), "
                "then run migrate again"
            )
    return recognised


def _sop_rollback_path(stem: str) -> str:
    return f"migrations/rollback/{stem.split('_', 1)[0]}_rollback.sql"


# --------------------------------------------------------------------------- migrate / rollback


@dataclass
class MigrateResult:
    applied: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)
    applied_by_hand: list[str] = field(default_factory=list)  # recognised and recorded as applied
    notes: list[str] = field(default_factory=list)


def migrate(target: Target, to: str | None = None, lock_timeout: float = 60.0) -> MigrateResult:
    """Apply pending migrations (up to `to`), then every changed function and view.

    Before anything is created: the prerequisites are checked and migrations applied by
    hand are recognised; either may refuse, leaving the database as it was."""
    stop_at = resolve_target(to) if to else None
    result = MigrateResult()
    check_prerequisites(target)
    recognise = stop_at is None or stop_at > BASELINE
    with connect(target, autocommit=True) as conn:
        first_time = _recorded_migrations(conn) is None
    # On a database deenroll never migrated, a refusal must leave nothing behind: look before
    # yoyo creates its tables. Otherwise look under the migration lock, where no other
    # migrate changes the database between the look and the record.
    by_hand = _recognise(target, set(), result.notes) if recognise and first_time else []
    with _yoyo(target) as (backend, migrations), _watched(target):
        with _locked(backend, lock_timeout):
            if recognise and not first_time:
                by_hand = _recognise(target, set(_applied_stems(backend, migrations)), result.notes)
            for m in backend.to_apply(migrations):
                if m.id in by_hand:
                    backend.mark_one(m)
                    result.applied_by_hand.append(m.id)
            pending = backend.to_apply(migrations)
            if stop_at:
                pending = pending.filter(lambda m: m.id <= stop_at)
            for m in pending:
                _retrying_lock_waits(lambda: backend.apply_one(m))
                result.applied.append(m.id)
            applied = set(_applied_stems(backend, migrations))
        with _locked(backend, lock_timeout):
            result.definitions = apply_definitions(target, applied)
    return result


# A statement that gave up waiting for a lock (lock_timeout) or was chosen as a deadlock victim.
RETRIED_SQLSTATES = ("55P03", "40P01")


def _retrying_lock_waits(action: Callable[[], None], attempts: int = 5, first_pause: float = 0.5) -> None:
    """Run one migration or rollback; when a statement of it gives up waiting for a lock, run it
    again after a pause that doubles each time. A transactional migration left nothing behind
    (yoyo rolled it back); a non-transactional one is written to be re-run."""
    for attempt in range(1, attempts + 1):
        try:
            action()
            return
        except MigrationError as exc:
            if exc.cause.sqlstate not in RETRIED_SQLSTATES or attempt == attempts:
                raise
            time.sleep(first_pause * 2 ** (attempt - 1))


def _applied_stems(backend: _Backend, migrations) -> list[str]:
    applied = set(backend.get_applied_migration_hashes())
    return [m.id for m in migrations if m.hash in applied]


def rollback(target: Target, to: str, lock_timeout: float = 60.0) -> list[str]:
    """Roll back every migration after `to`, newest first."""
    stop_at = resolve_target(to)
    rolled: list[str] = []
    with _yoyo(target) as (backend, migrations), _watched(target):
        with _locked(backend, lock_timeout):
            for m in backend.to_rollback(migrations).filter(lambda m: m.id > stop_at):
                _retrying_lock_waits(lambda: backend.rollback_one(m))
                rolled.append(m.id)
    with connect(target) as conn:
        _forget_missing_definitions(conn)
    return rolled


def break_lock(target: Target) -> None:
    with _yoyo(target) as (backend, _):
        backend.break_lock()


@dataclass
class UninstallResult:
    rolled_back: list[str] = field(default_factory=list)
    dropped_tables: list[str] = field(default_factory=list)
    dropped_roles: list[str] = field(default_factory=list)
    kept_roles: list[str] = field(default_factory=list)  # "name: why"


def uninstall(target: Target, lock_timeout: float = 60.0) -> UninstallResult:
    """Everything deenroll added, gone: every migration after the baseline rolled back, the
    bookkeeping tables dropped, and the roles a migration created (marked by their comment)
    dropped when no login is a member and no database still grants them anything.
    The platform's campaigns and leads stay, with every row."""
    result = UninstallResult()
    marked_roles = """SELECT r.rolname FROM pg_catalog.pg_roles r
                       WHERE pg_catalog.shobj_description(r.oid, 'pg_authid') LIKE %s ORDER BY 1"""
    with connect(target, autocommit=True) as conn:
        never = _recorded_migrations(conn) is None
        roles_before = [r[0] for r in conn.execute(marked_roles, (ROLE_MARK + "%",)).fetchall()]
    if not never:
        result.rolled_back = rollback(target, BASELINE, lock_timeout)
    with connect(target) as conn:
        conn.execute("SET LOCAL lock_timeout = '5s'")
        for table in BOOKKEEPING_TABLES:
            if conn.execute("SELECT pg_catalog.to_regclass(%s)", (table,)).fetchone()[0] is not None:
                conn.execute(pgsql.SQL("DROP TABLE {}").format(pgsql.Identifier(table)))
                result.dropped_tables.append(table)
        roles = conn.execute(
            """SELECT r.rolname,
                      EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.roleid = r.oid)
                 FROM pg_catalog.pg_roles r
                WHERE pg_catalog.shobj_description(r.oid, 'pg_authid') LIKE %s
                ORDER BY r.rolname""",
            (ROLE_MARK + "%",),
        ).fetchall()
        for name, has_members in roles:
            if has_members:
                result.kept_roles.append(f"{name}: other roles are members of it")
                continue
            try:
                with conn.transaction():
                    conn.execute(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(name)))
            except psycopg.errors.DependentObjectsStillExist:
                result.kept_roles.append(f"{name}: another database still grants it privileges")
            except psycopg.errors.InsufficientPrivilege:
                result.kept_roles.append(f"{name}: this login may not drop roles")
        conn.commit()
        left = {r[0] for r in conn.execute(marked_roles, (ROLE_MARK + "%",)).fetchall()}
        result.dropped_roles = [r for r in roles_before if r not in left]
    return result


# --------------------------------------------------------------------------- definitions


# The search path every definition is created and hashed under (pg_get_viewdef and
# pg_get_functiondef print names relative to the path in force).
_PINNED_PATH = "SET LOCAL search_path = pg_catalog, pg_temp"


def _catalog_hash(conn: psycopg.Connection, d: Definition, schema: str) -> str | None:
    """md5 of the object's definition as the database holds it (read under _PINNED_PATH); None when absent."""
    if d.kind == "view":
        sql = """SELECT pg_catalog.md5(pg_catalog.pg_get_viewdef(c.oid)) FROM pg_catalog.pg_class c
                  WHERE c.relname = %s AND c.relkind IN ('v', 'm') AND c.relnamespace = pg_catalog.to_regnamespace(%s)"""
    else:
        sql = """SELECT pg_catalog.md5(pg_catalog.string_agg(pg_catalog.pg_get_functiondef(p.oid), ';'
                                                             ORDER BY p.oid::regprocedure::text))
                   FROM pg_catalog.pg_proc p
                  WHERE p.proname = %s AND p.pronamespace = pg_catalog.to_regnamespace(%s)
                 HAVING count(*) > 0"""
    row = conn.execute(sql, (d.name, d.home(schema))).fetchone()
    return row[0] if row else None


def _definitions_table(schema: str) -> pgsql.Composed:
    return pgsql.SQL("{}.{}").format(pgsql.Identifier(schema), pgsql.Identifier(DEFINITIONS_TABLE))


def _ensure_definitions_table(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(
        pgsql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (
                name         text PRIMARY KEY,
                kind         text NOT NULL,
                file_sha256  text NOT NULL,
                catalog_md5  text NOT NULL,
                applied_at   timestamptz NOT NULL DEFAULT now())"""
        ).format(_definitions_table(schema))
    )


def _recorded(conn: psycopg.Connection, schema: str) -> dict[str, tuple[str, str]]:
    exists = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_class WHERE relname = %s AND relnamespace = %s::regnamespace",
        (DEFINITIONS_TABLE, schema),
    ).fetchone()
    if not exists:
        return {}
    rows = conn.execute(
        pgsql.SQL("SELECT name, file_sha256, catalog_md5 FROM {}").format(_definitions_table(schema))
    ).fetchall()
    return {name: (sha, md5) for name, sha, md5 in rows}


def _or_replace(sql: str) -> str:
    """The file's `CREATE FUNCTION` / `CREATE VIEW` as CREATE OR REPLACE: replaced in place,
    so that what others built on it (views, grants) stays."""
    return re.sub(r"^(\s*)CREATE\s+(FUNCTION|PROCEDURE|VIEW)\b", r"\1CREATE OR REPLACE \2", sql, count=1, flags=re.M | re.I)


# Every object that depends on one (views through their rewrite rule, functions through a
# view's row type too), transitively; what DROP ... CASCADE would take with it.
_DEPENDENTS = """
WITH RECURSIVE dep(classid, objid) AS (
    SELECT %(classid)s::regclass::oid, %(objid)s::oid
  UNION
    SELECT CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::regclass THEN 'pg_catalog.pg_class'::regclass::oid
                ELSE d.classid END,
           CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::regclass THEN r.ev_class ELSE d.objid END
      FROM dep
     CROSS JOIN LATERAL (SELECT dep.classid AS c, dep.objid AS o
                         UNION ALL
                         SELECT 'pg_catalog.pg_type'::regclass::oid, rel.reltype
                           FROM pg_catalog.pg_class AS rel
                          WHERE dep.classid = 'pg_catalog.pg_class'::regclass AND rel.oid = dep.objid) AS ref
      JOIN pg_catalog.pg_depend AS d ON d.refclassid = ref.c AND d.refobjid = ref.o AND d.deptype IN ('n', 'a')
      LEFT JOIN pg_catalog.pg_rewrite AS r ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND r.oid = d.objid
     WHERE NOT (d.classid = 'pg_catalog.pg_rewrite'::regclass AND r.ev_class = dep.objid)
)
SELECT dep.classid::regclass::text, dep.objid, pg_catalog.pg_describe_object(dep.classid, dep.objid, 0),
       coalesce(c.relname, p.proname), coalesce(c.relnamespace, p.pronamespace)
  FROM dep
  LEFT JOIN pg_catalog.pg_class AS c ON dep.classid = 'pg_catalog.pg_class'::regclass AND c.oid = dep.objid
  LEFT JOIN pg_catalog.pg_proc AS p ON dep.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = dep.objid
 WHERE NOT (dep.classid = %(classid)s::regclass::oid AND dep.objid = %(objid)s::oid)
"""


def _objects_of(conn: psycopg.Connection, d: Definition, schema: str) -> list[tuple[str, int, str]]:
    """(catalog, oid, signature or name) of the database's objects named like `d`."""
    if d.kind == "view":
        sql = """SELECT 'pg_catalog.pg_class', c.oid, pg_catalog.format('%%I.%%I', n.nspname, c.relname)
                   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relname = %s AND c.relkind IN ('v', 'm') AND n.nspname = %s"""
    else:
        sql = """SELECT 'pg_catalog.pg_proc', p.oid, p.oid::regprocedure::text
                   FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                  WHERE p.proname = %s AND n.nspname = %s ORDER BY p.oid"""
    return [(c, int(o), s) for c, o, s in conn.execute(sql, (d.name, d.home(schema))).fetchall()]


class _Refused(Exception):
    pass


def _drop_ours(
    conn: psycopg.Connection,
    d: Definition,
    obj: tuple[str, int, str],
    schema: str,
    why: str = "",
) -> list[str]:
    """Drop one of our objects (a changed file cannot replace it in place, or a rollback). Refuses,
    naming them, when anything that is not one of our functions or views depends on it; our
    dependents go with it (migrate creates them again from their files). Returns their names."""
    catalog, oid, ident = obj
    if catalog == "pg_catalog.pg_class":
        conn.execute(pgsql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(pgsql.SQL(ident)))
    ours = {(x.kind, x.name) for x in definitions()}
    schema_oid = conn.execute("SELECT %s::regnamespace::oid", (schema,)).fetchone()[0]
    foreign, mine = [], []
    for cls, _, described, name, nsp in conn.execute(_DEPENDENTS, {"classid": catalog, "objid": oid}).fetchall():
        kind = {"pg_class": "view", "pg_proc": "function"}.get(cls.split(".")[-1])
        if kind and nsp == schema_oid and (kind, name) in ours:
            mine.append(name)
        else:
            foreign.append(described)
    if foreign:
        reason = why or f"{d.path.parent.name}/{d.path.name} changes it in a way that needs it dropped and created again"
        raise _Refused(
            f"cannot drop {ident} ({reason}): objects that are not deenroll's functions or views depend on it: "
            f"{', '.join(sorted(set(foreign)))}; drop or change them first (they would be lost), then try again"
        )
    what = "VIEW" if catalog == "pg_catalog.pg_class" else "ROUTINE"
    conn.execute(pgsql.SQL("DROP {} {} CASCADE").format(pgsql.SQL(what), pgsql.SQL(ident)))
    return mine


def _apply_one(conn: psycopg.Connection, d: Definition, schema: str) -> None:
    """Create or replace one definition in place; drop and create only when it must, and never
    anything someone else built on it."""
    text = _or_replace(d.sql)
    before = _objects_of(conn, d, schema)
    try:
        with conn.transaction():
            run_file(conn, d.path, d.path.stem, text)
    except MigrationError as exc:
        # 42P16: a view's columns changed; 42P13: a function's result type or parameter names.
        if exc.cause.sqlstate not in ("42P16", "42P13"):
            raise
        for obj in before:
            _drop_ours(conn, d, obj, schema)
        run_file(conn, d.path, d.path.stem, text)
        return
    if d.kind == "function":
        after = _objects_of(conn, d, schema)
        if len(after) > len(before):  # a new signature: the old overloads are stale
            for obj in before:
                _drop_ours(conn, d, obj, schema)


def apply_definitions(target: Target, applied: set[str], attempts: int = 4) -> list[str]:
    """(Re)create every function and view whose file changed, was dropped or was edited by hand,
    all in one short transaction; a lock wait that gives up after lock_timeout, or a deadlock
    with a run's batch, rolls the whole back and it is retried."""
    for attempt in range(1, attempts + 1):
        try:
            return _apply_definitions_once(target, applied)
        except MigrationError as exc:
            if exc.cause.sqlstate not in RETRIED_SQLSTATES or attempt == attempts:
                raise UserError(exc.message()) from None
            time.sleep(min(2.0, 0.25 * 2**attempt))
        except _Refused as exc:
            raise UserError(str(exc)) from None
    raise AssertionError("unreachable")


def _apply_definitions_once(target: Target, applied: set[str]) -> list[str]:
    global _active_watch
    changed: list[str] = []
    outer = _active_watch
    with _LockWatch(target) as watch, connect(target) as conn:
        _active_watch = watch
        try:
            schema = conn.execute("SELECT current_schema()").fetchone()[0]
            # Views and SQL-standard function bodies bind the functions and operators they call
            # when they are created: with only pg_catalog in the path, a better-matching overload
            # planted in a schema others can write to is never bound. Every name of ours in the
            # files is schema-qualified. (The catalog hashes are read under the same path.)
            conn.execute(_PINNED_PATH)
            conn.execute("SET LOCAL lock_timeout = '3s'")
            _ensure_definitions_table(conn, schema)
            recorded = _recorded(conn, schema)
            todo = [d for d in definitions() if d.requires in applied]
            for _pass in range(3):  # a drop may take our dependents with it: they come back next pass
                redo = False
                for d in todo:
                    current = _catalog_hash(conn, d, schema)
                    if current is not None and recorded.get(d.name) == (d.sha256, current):
                        continue
                    _apply_one(conn, d, schema)
                    new_hash = _catalog_hash(conn, d, schema)
                    conn.execute(
                        pgsql.SQL(
                            """INSERT INTO {} (name, kind, file_sha256, catalog_md5)
                               VALUES (%s, %s, %s, %s)
                               ON CONFLICT (name) DO UPDATE
                                  SET kind = EXCLUDED.kind, file_sha256 = EXCLUDED.file_sha256,
                                      catalog_md5 = EXCLUDED.catalog_md5, applied_at = now()"""
                        ).format(_definitions_table(schema)),
                        (d.name, d.kind, d.sha256, new_hash),
                    )
                    recorded[d.name] = (d.sha256, new_hash)
                    if d.name not in changed:
                        changed.append(d.name)
                for d in todo:
                    if _catalog_hash(conn, d, schema) is None:
                        recorded.pop(d.name, None)
                        redo = True
                if not redo:
                    break
            # New objects of ours start closed to PUBLIC; default privileges may also have handed
            # them (or tables a migration just made) to API roles: the one list of grants is
            # applied after every migrate.
            homes = {d.name: d.home(schema) for d in todo}
            for name in changed:
                for (signature,) in conn.execute(
                    "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p "
                    "WHERE p.proname = %s AND p.pronamespace = pg_catalog.to_regnamespace(%s)",
                    (name, homes[name]),
                ).fetchall():
                    conn.execute(f"REVOKE ALL ON ROUTINE {signature} FROM PUBLIC")
            if conn.execute("SELECT to_regprocedure('public.deenroll_apply_privileges()')").fetchone()[0]:
                conn.execute("SELECT public.deenroll_apply_privileges()")
            # What ran after a file may have altered its object (owner, settings): record the final state.
            for d in todo:
                final = _catalog_hash(conn, d, schema)
                if d.name in recorded and final is not None and recorded[d.name][1] != final:
                    conn.execute(
                        pgsql.SQL("UPDATE {} SET catalog_md5 = %s WHERE name = %s").format(_definitions_table(schema)),
                        (final, d.name),
                    )
            conn.commit()
        finally:
            _active_watch = outer
    return changed


def _forget_missing_definitions(conn: psycopg.Connection) -> None:
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    conn.execute(_PINNED_PATH)
    if not _recorded(conn, schema):
        return
    for d in definitions():
        if _catalog_hash(conn, d, schema) is None:
            conn.execute(
                pgsql.SQL("DELETE FROM {} WHERE name = %s").format(_definitions_table(schema)), (d.name,)
            )


# --------------------------------------------------------------------------- status


@dataclass
class Status:
    migrations: list[tuple[str, str]]  # (stem, "applied <when>" | "pending")
    definitions: list[tuple[str, str, str]]  # (name, kind, state)
    never_migrated: bool = False  # no migration was ever recorded in this database


def status(target: Target) -> Status:
    """What is applied and current, read from the catalog in a read-only transaction."""
    with connect(target) as conn:
        conn.execute("SET TRANSACTION READ ONLY")
        recorded = _recorded_migrations(conn)
        when = recorded or {}
        mig_states = [
            (m.stem, f"applied {when[m.stem]:%Y-%m-%d %H:%M:%S} UTC" if m.stem in when else "pending")
            for m in migration_files()
        ]
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        conn.execute(_PINNED_PATH)
        seen_defs = _recorded(conn, schema)
        def_states = []
        for d in definitions():
            current = _catalog_hash(conn, d, schema)
            seen = seen_defs.get(d.name)
            if d.requires not in when:
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
        conn.rollback()
    return Status(mig_states, def_states, never_migrated=recorded is None)


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
        # The engine runs as the owner of its functions: row-level security it cannot see
        # through would make runs silently miss leads.
        if conn.execute("SELECT to_regprocedure('public.de_enrollment_rls_blind_spots()')").fetchone()[0]:
            blind = conn.execute("SELECT table_name, reason FROM public.de_enrollment_rls_blind_spots()").fetchall()
            for table, reason in blind:
                checks.append((f"row-level security on {table}", False, reason))
            if not blind:
                checks.append(("row-level security on leads, campaigns", True, "the engine sees every row"))
    return checks
