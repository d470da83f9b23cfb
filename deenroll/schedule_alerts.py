"""`deenroll schedule`'s side of the database's alerts: the webhook the database keeps (pg_net
posts its alerts there), checked and kept by `install`, shown by `status`, cleared by `remove
--alert-webhook`. A webhook is a secret: only ever shown as scheme://host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from . import database, queries
from .errors import UserError

if TYPE_CHECKING:
    from .schedule import Where

# What calling a function of ours raises in a database migrated before the release that added it.
MIGRATED_BEFORE = (psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName)


@dataclass(frozen=True)
class Webhook:
    """A webhook URL to keep (a secret: only ever shown as scheme://host) and where it came
    from: the option, or the environment variable the runner reads."""
    url: str
    source: str  # "--alert-webhook" (refused in one line) or "DE_ENROLLMENT_ALERT_WEBHOOK" (a note)


def alert_state(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The database's webhook as scheme://host (None: none) and what keeps pg_net from sending;
    None where the database predates alerts or the login may not read them."""
    try:
        with conn.transaction():
            return queries.rows(conn, "alert_webhook_state")[0]
    except (psycopg.errors.InsufficientPrivilege, *MIGRATED_BEFORE):
        return None  # a login that is not a member of deenroll_runner, or no alerts yet


def check_webhook(where: Where, hook: Webhook, notes: list[str]) -> bool:
    """Whether the webhook can be kept here, checked before anything changes: pg_net is
    installed for this database and the login may keep it. Refused in one line for the option;
    for the environment variable a note, and the install goes on without it."""
    state = alert_state(where.conn)
    problem = ((state["pg_net_problem"] or queries.value(where.conn, "alert_webhook_rights", what="set")) if state
               else f"login {where.login} may not read the alert webhook of database {where.dbname} "
                    "(`deenroll migrate` adds it and grants it to deenroll_runner)")
    if problem is None:
        return True
    if hook.source == "--alert-webhook":
        raise UserError(f"--alert-webhook: {problem}; nothing changed")
    notes.append(f"{hook.source} is set, but the database's alerts stay as they are: {problem}")
    return False


def keep_webhook(where: Where, hook: Webhook, notes: list[str]) -> str | None:
    """Keep the webhook (inside the install's transaction); its scheme://host, or None when the
    environment variable's URL is refused (a note says why). The database checks the URL and
    words its refusal without the URL's secret parts."""
    try:
        with where.conn.transaction():
            return queries.value(where.conn, "alert_webhook_set", url=hook.url)
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.ObjectNotInPrerequisiteState) as exc:
        message = exc.diag.message_primary or type(exc).__name__
        if hook.source == "--alert-webhook":
            raise UserError(f"--alert-webhook: {message}; nothing changed") from None
        notes.append(f"{hook.source} is not kept for the database's alerts: {message}")
        return None


def alerts_status(conn: psycopg.Connection, deliveries: int) -> dict[str, Any] | None:
    """Whether the database sends alerts (its webhook as scheme://host), what keeps pg_net from
    sending, and the newest deliveries with pg_net's answer; None where the database predates
    alerts."""
    state = alert_state(conn)
    if state is None:
        return None
    try:
        with conn.transaction():
            last = queries.rows(conn, "alert_deliveries", limit=deliveries)
    except psycopg.errors.InsufficientPrivilege:
        last = []
    return {**state, "deliveries": last}


def remove_webhook(target: database.Target) -> dict[str, Any]:
    """Forget the database's alert webhook: {"cleared": whether there was one, "webhook": it as
    scheme://host}. Only its owner may: else one line naming who can, and the statement."""
    with database.connect(target, autocommit=True) as conn:
        state = alert_state(conn)
        if state is None or state["webhook"] is None:
            return {"cleared": False, "webhook": None}
        problem = queries.value(conn, "alert_webhook_rights", what="clear")
        if problem:
            raise UserError(problem)
        return {"cleared": bool(queries.value(conn, "alert_webhook_clear")), "webhook": state["webhook"]}
