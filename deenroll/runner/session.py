"""One connection of a run (one per worker), and what the run's procedure reports on it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from .. import database
from ..errors import UserError

PROGRESS_PREFIX = "deenroll: "  # the procedure's progress messages: this, then a JSON object


Event = dict[str, Any]


class Session:
    """One connection of the runner (one per worker thread), reopened when it broke.

    The procedure's progress messages go to `on_event`; other notices and warnings (a dead
    run taken over, a client another run holds) are kept in `notices`."""

    def __init__(self, target: database.Target) -> None:
        self.target = target
        self._conn: psycopg.Connection | None = None
        self.notices: list[str] = []
        self.on_event: Callable[[Event], None] = lambda event: None
        self._unreachable: str | None = None

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if diag.severity_nonlocalized == "INFO" and text.startswith(PROGRESS_PREFIX):
            try:
                event = json.loads(text[len(PROGRESS_PREFIX):])
            except ValueError:
                return
            self.on_event(event)
        elif diag.severity_nonlocalized in ("WARNING", "NOTICE") and text:
            self.notices.append(text)

    @property
    def conn(self) -> psycopg.Connection:
        """The connection, reopened when it broke; once the database is unreachable, fail fast."""
        if self._unreachable is not None:
            raise UserError(self._unreachable)
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            try:
                conn = database.connect(self.target, autocommit=True, app="deenroll run")
            except UserError as exc:
                self._unreachable = str(exc)
                raise
            conn.add_notice_handler(self._on_notice)
            self._conn = conn
        return self._conn

    @property
    def lost(self) -> bool:
        """Whether the connection broke (the server ended the session, or the network went)."""
        return self._conn is not None and (self._conn.closed or self._conn.broken)

    def abandon(self) -> None:
        """After a failure: drop the connection unless it is idle and usable (the next use reconnects)."""
        if self._conn is None:
            return
        if self._conn.closed or self._conn.broken or self._conn.info.transaction_status != TransactionStatus.IDLE:
            self.close()

    def cancel(self) -> None:
        """Cancel the statement in flight, from another thread (a stop signal)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.cancel_safe(timeout=5)
            except (psycopg.Error, OSError):
                pass  # the statement ends anyway; the worker sees the stop before its next call

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

