"""Campaign counters: the drift view and the exact recount, read and put into words."""

from __future__ import annotations

from typing import Any

import psycopg

from . import queries
from .errors import UserError

COUNTERS = ("active", "completed", "opted_out", "booked")
COUNTER_COLUMNS = ("active_leads_count", "completed_leads_count", "opted_out_count", "booked_count")


def drift(conn: psycopg.Connection) -> list[dict[str, Any]]:
    queries.require_relation(conn, "campaign_stats_drift")
    return queries.rows(conn, "drift")


def drift_line(d: dict[str, Any]) -> str:
    parts = [
        f"{k} {d['stored_' + k]} stored / {d['actual_' + k]} actual"
        for k in COUNTERS
        if d["stored_" + k] != d["actual_" + k]
    ]
    lag = " (pending deltas explain it: folded by the next run)" if d["pending_explains"] else ""
    return f"campaign {d['campaign_id']} {d['campaign_name']!r} (client {d['client_id']}): " + ", ".join(parts) + lag


def recalculate(conn: psycopg.Connection, client_id: str | None) -> list[dict[str, Any]]:
    """recalculate_campaign_stats(): the campaigns whose counters changed (the caller's transaction)."""
    queries.require_function(conn, "recalculate_campaign_stats(uuid)")
    if client_id is not None and not queries.value(conn, "client_exists", client_id=client_id):
        raise UserError(f"client {client_id} has no campaigns and no leads")
    return queries.rows(conn, "recalculate", client_id=client_id)


def recalculated_line(r: dict[str, Any]) -> str:
    parts = [
        f"{col} {r['old_' + col]} -> {r['new_' + col]}"
        for col in COUNTER_COLUMNS
        if r["old_" + col] != r["new_" + col]
    ]
    return f"campaign {r['campaign_id']} {r['name']!r} (client {r['client_id']}): " + ", ".join(parts)
