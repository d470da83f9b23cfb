"""One connection of a run (one per worker), and what the run's procedure reports on it."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from .. import database
from ..errors import UserError

PROGRESS_PREFIX = "deenroll: "  # the procedure's progress messages: this, then a JSON object
RECONNECT_ENV = "DEENROLL_RECONNECT_WAIT"
RECONNECT_WAIT = 60.0  # seconds a lost connection is tried again, while a server restarts

Event = dict[str, Any]


def reconnect_wait() -> float:
    """DEENROLL_RECONNECT_WAIT: how long a run tries to reconnect after losing its database."""
    raw = os.environ.get(RECONNECT_ENV, "").strip()
    if not raw:
        return RECONNECT_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise UserError(f"{RECONNECT_ENV} must be a number of seconds of at least 0, not {raw[:20]!r}")
    return value


class Session:
    """One connection of the runner, reopened when it broke.

    The procedure's progress messages go to `on_event`; other notices and warnings (a dead
    run taken over, a client another run holds) wait in `notices` until the procedure
    reports the client they are about."""

    def __init__(self, target: database.Target, on_event: Callable[[Session, Event], None]) -> None:
        self.target = target
        self._conn: psycopg.Connection | None = None
        self.notices: list[str] = []
        self.on_event = on_event

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if diag.severity_nonlocalized == "INFO" and text.startswith(PROGRESS_PREFIX):
            try:
                event = json.loads(text[len(PROGRESS_PREFIX):])
            except ValueError:
                return
            self.on_event(self, event)
        elif diag.severity_nonlocalized in ("WARNING", "NOTICE") and text:
            self.notices.append(text)

    @property
    def conn(self) -> psycopg.Connection:
        """The connection, opened when there is none or it broke."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            conn = database.connect(self.target, autocommit=True, app="deenroll run")
            conn.add_notice_handler(self._on_notice)
            self._conn = conn
        return self._conn

    @property
    def lost(self) -> bool:
        """Whether the connection broke (the server ended the session, or the network went)."""
        return self._conn is not None and (self._conn.closed or self._conn.broken)

    def reconnect(self, wait: float, stopped: Callable[[], bool]) -> str | None:
        """A new connection after a lost one, tried with growing pauses for `wait` seconds while
        the server comes back (a restart, a failover). None once connected, else the last error."""
        self.close()
        give_up = time.monotonic() + wait
        pause = 0.25
        while True:
            try:
                self.conn
                return None
            except UserError as exc:
                if stopped() or time.monotonic() + pause > give_up:
                    return str(exc)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

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
