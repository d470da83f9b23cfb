"""Whether a connection reaches PostgreSQL through a transaction-mode pooler.

`run` and the scheduler's commands keep nothing in a server session beyond a transaction, so
they work through any pooler. migrate, rollback and uninstall need their session for longer
(the lock watch names who blocks their own backend; non-transactional steps set lock_timeout
for several statements): they call `require_session` first, which stops with one line behind a
transaction-mode pooler (PgBouncer with pool_mode=transaction, Supabase's pooler on port 6543).
Told apart with ordinary queries:
  direct       the backend pid announced at login (BackendKeyData) answers the queries; a
               pooler announces a key of its own.
  transaction  a second connection, opened while the first is between transactions, gets the
               first one's server session, or the first one's next transaction runs on another.
  session      otherwise (PgBouncer with pool_mode=session, Supabase's pooler on port 5432).
"""

from __future__ import annotations

from typing import Literal

import psycopg

from . import database, queries
from .errors import UserError

Kind = Literal["direct", "session", "transaction"]
_PROBES = 3  # a pooler handing out sessions per transaction shows it within a few tries


def _pid(conn: psycopg.Connection) -> int:
    return int(queries.value(conn, "backend_pid"))


def server_session_kind(target: database.Target) -> Kind:
    """'direct', 'session' (a pooler that keeps one server session per client) or 'transaction'."""
    with database.connect(target, autocommit=True, app="deenroll probe") as first:
        mine = _pid(first)
        if first.info.backend_pid == mine:
            return "direct"
        with database.connect(target, app="deenroll probe") as second:
            for _ in range(_PROBES):
                with second.transaction():
                    if _pid(second) == mine:  # the first one's server session, handed over
                        return "transaction"
                    # second holds another server session until the block ends; first's next
                    # transaction gets its own back only if it keeps it between transactions
                    again = _pid(first)
                if again != mine:
                    return "transaction"
    return "session"


def require_session(target: database.Target, command: str) -> None:
    """One clear line, and no change, when `command` would run through a transaction-mode pooler."""
    if server_session_kind(target) == "transaction":
        raise UserError(
            f"{command} needs a database session of its own, and this connection goes through a "
            "transaction-mode pooler (PgBouncer pool_mode=transaction, Supabase's pooler on port 6543): "
            "connect directly or through a session-mode pooler (Supabase: port 5432)"
        )
