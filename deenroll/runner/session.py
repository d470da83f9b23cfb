"""One connection of a run (one per worker), and what the run's procedure reports on it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from .. import database
from ..errors import UserError

PROGRESS_PREFIX = "deenroll: "  # the procedure's progress messages: this, then a JSON object

Event = dict[str, Any]


class Session:
    """One connection of the runner, reopened when it broke. The procedure's progress messages
    go to `on_event`; other notices (a dead run taken over, a client another run holds) wait in
    `notices` until the procedure reports the client they are about."""

    def __init__(self, target: database.Target, on_event: Callable[[Session, Event], None]) -> None:
        self.target = target
        self.on_event = on_event
        self.notices: list[str] = []
        self._conn: psycopg.Connection | None = None

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if diag.severity_nonlocalized == "INFO" and text.startswith(PROGRESS_PREFIX):
            self.on_event(self, json.loads(text[len(PROGRESS_PREFIX):]))
        elif diag.severity_nonlocalized in ("WARNING", "NOTICE") and text:
            self.notices.append(text)

    @property
    def conn(self) -> psycopg.Connection:
        """The connection, opened when there is none or it broke."""
        if self.lost or self._conn is None:
            self.close()
            self._conn = database.connect(self.target, autocommit=True, app="deenroll run")
            self._conn.add_notice_handler(self._on_notice)
        return self._conn

    @property
    def lost(self) -> bool:
        """Whether the connection broke (the server ended the session, or the network went)."""
        return self._conn is not None and (self._conn.closed or self._conn.broken)

    def reconnect(self, wait: int, stopped: Callable[[], bool]) -> str | None:
        """A new connection after a lost one, tried with growing pauses for `wait` seconds while the
        server comes back (a restart, a failover): None once connected, else the last error."""
        self.close()
        give_up, pause = time.monotonic() + wait, 0.25
        while True:
            try:
                self.conn
                return None
            except UserError as exc:
                if stopped() or time.monotonic() + pause > give_up:
                    return str(exc)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def cancel(self) -> None:
        """Cancel the statement in flight, from another thread (a stop signal)."""
        if self._conn is not None and not self._conn.closed:
            try:
                self._conn.cancel_safe(timeout=5)
            except (psycopg.Error, OSError):
                pass  # the statement ends anyway; the worker sees the stop before its next call

    def close(self, *, unless_idle: bool = False) -> None:
        """Close the connection (with unless_idle: only when it is not idle and usable)."""
        conn = self._conn
        if conn is not None and not (unless_idle and not self.lost and
                                     conn.info.transaction_status == TransactionStatus.IDLE):
            conn.close()
            self._conn = None
