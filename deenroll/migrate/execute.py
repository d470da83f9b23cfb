"""Running a SQL file statement by statement, so that a failure names the statement's line and,
for a lock wait, the sessions holding the lock (followed by a lock watch on a second connection)."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import psycopg
import sqlparse

from .. import queries
from ..database import Target, connect
from ..errors import UserError, flatten, one_line

T = TypeVar("T")


@dataclass(frozen=True)
class Statement:
    start: int  # the file's line where the text sent begins (leading comments included), 1-based
    line: int  # the file's line of its first line of code
    first_line: str  # that line's text
    sql: str


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
        start = text.count("\n", 0, max(at, 0)) + 1
        numbered = [(i, l.strip()) for i, l in enumerate(chunk.splitlines()) if l.strip()[:2] not in ("", "--")]
        leading, first = numbered[0] if numbered else (0, "")
        out.append(Statement(start, start + leading, first, chunk))
    return out


class LockWatch:
    """Remembers who blocks the session `pid` while it waits for a lock (`blockers`), seen from a
    second connection."""

    def __init__(self, target: Target) -> None:
        self._target, self._stop, self._conn = target, threading.Event(), None
        self.pid: int | None = None
        self.blockers: list[str] = []

    def __enter__(self) -> "LockWatch":
        try:
            self._conn = connect(self._target, autocommit=True, app="deenroll migrate (lock watch)")
        except UserError:
            return self
        self._thread = threading.Thread(target=self._loop, name="deenroll-lock-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._conn is not None:
            self._thread.join(timeout=5)
            self._conn.close()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            if self.pid is None:
                continue
            try:
                rows = queries.run(self._conn, "migrate_lock_blockers", pid=self.pid).fetchall()
            except psycopg.Error:
                return
            if rows:
                self.blockers = [_describe_blocker(*row) for row in rows]


def _describe_blocker(pid: int, app: str, user: str, state: str, xact, query_start, query: str) -> str:
    said = f"pid {pid} (application_name {app!r}, user {user!r}, state {state!r}, "
    if xact and query_start:
        said += f"transaction started {xact:%Y-%m-%d %H:%M:%S%z}, query started {query_start:%Y-%m-%d %H:%M:%S%z}, "
    return said + f"query {' '.join(query.split())!r})"


class MigrationError(UserError):
    """A statement of a SQL file failed: where, what, and who held the lock it waited for (its text
    is the one line to show)."""

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
            done = ("nothing of it took effect" if self.transactional
                    else "what it finished stays and every statement can be re-run")
            text += f"; {done}: run it again when that transaction has ended"
        return text


def retry_lock_waits(action: Callable[[], T], attempts: int) -> T:
    """`action`, run again after a pause that doubles each time (from 0.5 s) while a statement of it
    gives up waiting for a lock (lock_timeout) or is chosen as a deadlock's victim."""
    for attempt in range(1, attempts):
        try:
            return action()
        except MigrationError as exc:
            if exc.cause.sqlstate not in ("55P03", "40P01"):
                raise
        time.sleep(0.5 * 2 ** (attempt - 1))
    return action()


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
        watch.pid, watch.blockers = conn.info.backend_pid, []
    in_transaction = not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    for stmt in statements(text if text is not None else path.read_text()):
        try:
            conn.execute(stmt.sql)
        except psycopg.Error as exc:
            raise MigrationError(label, path, stmt, exc, watch.blockers if watch else [], in_transaction) from None


# CREATE INDEX CONCURRENTLY IF NOT EXISTS <name>: the statements whose failed build leaves an INVALID index.
_CONCURRENT_BUILD = re.compile(
    r"^\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+IF\s+NOT\s+EXISTS\s+((?:\"[^\"]+\"|[\w$]+)(?:\.(?:\"[^\"]+\"|[\w$]+))?)",
    re.I | re.M,
)


def drop_invalid_indexes(conn: psycopg.Connection, text: str) -> None:
    """Drop (concurrently) every INVALID index that a failed concurrent build of an index the file
    creates left under its name, so that the file builds it again. `conn` is in autocommit mode."""
    builds = (_CONCURRENT_BUILD.search(sqlparse.format(s.sql, strip_comments=True)) for s in statements(text))
    for (drop,) in queries.run(conn, "migrate_invalid_indexes", names=[m.group(1) for m in builds if m]).fetchall():
        conn.execute(drop)
