"""Running a SQL file statement by statement, so that a failure names the statement's line and,
for a lock wait, the sessions holding the lock (followed by a lock watch on a second connection)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlparse

from .. import queries
from ..database import Target, connect
from ..errors import UserError, flatten, one_line

# A statement that gave up waiting for a lock (lock_timeout) or was chosen as a deadlock victim.
RETRIED_SQLSTATES = ("55P03", "40P01")


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


class LockWatch:
    """Remembers who blocks a session while it waits for a lock, seen from a second connection."""

    def __init__(self, target: Target) -> None:
        self._target = target
        self._pid: int | None = None
        self._blockers: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LockWatch":
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
                rows = queries.run(self._conn, "migrate_lock_blockers", pid=pid).fetchall()
            except psycopg.Error:
                return
            if rows:
                self._blockers = [_describe_blocker(*row) for row in rows]


def _describe_blocker(pid: int, app: str, user: str, state: str, xact, query_start, query: str) -> str:
    said = " ".join(query.split())
    if xact and query_start:
        return (
            f"pid {pid} (application_name {app!r}, user {user!r}, state {state!r}, "
            f"transaction started {xact:%Y-%m-%d %H:%M:%S%z}, query started {query_start:%Y-%m-%d %H:%M:%S%z}, "
            f"query {said!r})"
        )
    return f"pid {pid} (application_name {app!r}, user {user!r}, state {state!r}, query {said!r})"


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
        said = one_line(self.cause, details=True) if diag.message_primary else flatten(str(self.cause))
        text = f"{self.label} failed at {where}: {said}"
        if self.cause.sqlstate == "55P03":
            if self.blockers:
                text += f"; the lock is held by {'; '.join(self.blockers)}"
            if self.transactional:
                text += "; nothing of it took effect: run it again when that transaction has ended"
            else:
                text += "; what it finished stays and every statement can be re-run: run it again when that transaction has ended"
        return text


def run_written(conn: psycopg.Connection, name: str, /, **params: object) -> psycopg.Cursor | None:
    """Run the statement the named query `name` writes (for an object named at run time, quoted
    by the database); None when it writes none."""
    row = queries.one(conn, name, **params)
    return None if row is None else conn.execute(row[0])


def run_file(
    conn: psycopg.Connection, path: Path, label: str, text: str | None = None, watch: LockWatch | None = None
) -> None:
    """Execute a SQL file statement by statement on `conn`; a failure raises MigrationError.
    `watch`, when given, follows `conn`'s session and names who blocked a lock wait."""
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
        row = queries.one(conn, "migrate_invalid_index", name=match.group(1))
        if row is not None:
            name, drop = row
            conn.execute(drop)
            dropped.append(name)
    return dropped
