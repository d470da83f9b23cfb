"""Reads the health, stuck-leads and drift views; formats them. The judging is in the views."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from .errors import UserError

ICONS = {"ok": "✅", "warning": "⚠️", "error": "❌"}
EXIT_CODES = {"ok": 0, "warning": 1, "error": 2}
_SEVERITY = "CASE status WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END"


def to_jsonable(value: Any) -> Any:
    """uuid, Decimal, datetime and date as JSON-friendly values (json.dumps default=)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(doc: Any) -> str:
    return json.dumps(doc, default=to_jsonable, ensure_ascii=False, indent=2)


def require(conn: psycopg.Connection, *relations: str) -> None:
    """A one-line error naming the first missing view or table (schema not migrated)."""
    for name in relations:
        if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
            raise UserError(f"{name} does not exist in this database: run `deenroll migrate` first")


def parse_uuid(value: str | None, what: str = "client id") -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise UserError(f"malformed {what} {value!r}: expected a UUID like 123e4567-e89b-12d3-a456-426614174000") from None


# --------------------------------------------------------------------------- health


@dataclass
class HealthReport:
    clients: list[dict[str, Any]]
    checked_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def count(self, status: str) -> int:
        return sum(1 for c in self.clients if c["status"] == status)

    @property
    def status(self) -> str:
        if self.count("error"):
            return "error"
        if self.count("warning"):
            return "warning"
        return "ok"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def errors(self) -> list[dict[str, Any]]:
        return [c for c in self.clients if c["status"] == "error"]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checked_at": self.checked_at,
            "counts": {s: self.count(s) for s in ("ok", "warning", "error")},
            "clients": self.clients,
        }

    def lines(self) -> list[str]:
        """The SOP's health-check lines: one per client, then a summary."""
        out = [client_line(c) for c in self.clients]
        if not self.clients:
            out.append("no clients: no campaigns and no runs in this database")
        elif self.status == "ok":
            out.append("✅ All clients processed successfully in last 24h")
        else:
            out.append(
                f"{ICONS[self.status]} {len(self.clients)} clients: {self.count('ok')} ok, "
                f"{self.count('warning')} warning, {self.count('error')} error"
            )
        return out


def client_line(c: dict[str, Any]) -> str:
    status = c["status"]
    head = f"{ICONS[status]} Client {c['client_id']}"
    if status != "ok":
        return f"{head} {status.upper()}: " + "; ".join(c["status_reasons"])
    rate = "n/a" if c["success_rate_24h"] is None else f"{c['success_rate_24h']}%"
    since = "never" if c["last_success_at"] is None else f"{c['hours_since_success']} h ago"
    runs = f"{c['runs_24h']} run" + ("" if c["runs_24h"] == 1 else "s")
    return (
        f"{head} OK: {runs} in 24 h ({c['failed_runs_24h']} failed), success rate {rate}, "
        f"last success {since}, {c['leads_de_enrolled_24h']} de-enrolled, {c['stuck_leads']} stuck"
    )


def health(conn: psycopg.Connection, client_id: str | None = None) -> HealthReport:
    require(conn, "de_enrollment_health")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"""SELECT * FROM de_enrollment_health
                 WHERE %(client)s::uuid IS NULL OR client_id = %(client)s::uuid
                 ORDER BY {_SEVERITY}, client_id""",
            {"client": client_id},
        ).fetchall()
    return HealthReport(rows)


# --------------------------------------------------------------------------- stuck leads


def stuck(conn: psycopg.Connection, limit: int, client_id: str | None = None) -> dict[str, Any]:
    require(conn, "de_enrollment_stuck_leads")
    params = {"client": client_id, "limit": limit}
    where = "WHERE %(client)s::uuid IS NULL OR client_id = %(client)s::uuid"
    by_reason = dict(
        conn.execute(
            f"SELECT reason, count(*) FROM de_enrollment_stuck_leads {where} GROUP BY reason ORDER BY reason", params
        ).fetchall()
    )
    with conn.cursor(row_factory=dict_row) as cur:
        leads = cur.execute(
            f"""SELECT * FROM de_enrollment_stuck_leads {where}
                 ORDER BY client_id, campaign_id, lead_id LIMIT %(limit)s""",
            params,
        ).fetchall()
    return {"count": sum(by_reason.values()), "by_reason": by_reason, "leads": leads}


# --------------------------------------------------------------------------- stats


def drift(conn: psycopg.Connection) -> list[dict[str, Any]]:
    require(conn, "campaign_stats_drift")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM campaign_stats_drift ORDER BY max_difference DESC, client_id, campaign_id"
        ).fetchall()


COUNTERS = ("active", "completed", "opted_out", "booked")


def drift_line(d: dict[str, Any]) -> str:
    parts = [
        f"{k} {d['stored_' + k]} stored / {d['actual_' + k]} actual"
        for k in COUNTERS
        if d["stored_" + k] != d["actual_" + k]
    ]
    lag = " (pending deltas explain it: folded by the next run)" if d["pending_explains"] else ""
    return f"campaign {d['campaign_id']} {d['campaign_name']!r} (client {d['client_id']}): " + ", ".join(parts) + lag


def recalculate(conn: psycopg.Connection, client_id: str | None) -> list[dict[str, Any]]:
    """recalculate_campaign_stats() in one transaction; the campaigns whose counters changed."""
    if conn.execute("SELECT to_regprocedure('recalculate_campaign_stats(uuid)')").fetchone()[0] is None:
        raise UserError("recalculate_campaign_stats() does not exist in this database: run `deenroll migrate` first")
    if client_id is not None and not conn.execute(
        "SELECT EXISTS (SELECT 1 FROM campaigns WHERE client_id = %s)", (client_id,)
    ).fetchone()[0]:
        raise UserError(f"client {client_id} has no campaigns")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM recalculate_campaign_stats(%s)", (client_id,)).fetchall()


def recalculated_line(r: dict[str, Any]) -> str:
    names = {"active": "active_leads_count", "completed": "completed_leads_count",
             "opted_out": "opted_out_count", "booked": "booked_count"}
    parts = [
        f"{col} {r['old_' + col]} -> {r['new_' + col]}"
        for col in names.values()
        if r["old_" + col] != r["new_" + col]
    ]
    return f"campaign {r['campaign_id']} {r['name']!r} (client {r['client_id']}): " + ", ".join(parts)
