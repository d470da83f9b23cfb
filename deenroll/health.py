"""The health and stuck-leads views, read and put into words. The judging is in the views."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg

from . import queries

ICONS = {"ok": "✅", "warning": "⚠️", "error": "❌"}
EXIT_CODES = {"ok": 0, "warning": 1, "error": 2}


# --------------------------------------------------------------------------- health


@dataclass
class HealthReport:
    clients: list[dict[str, Any]]
    checked_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    # Row-level security that hides leads or campaigns from the engine: an error for everyone.
    blind_spots: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for c in self.clients if c["status"] == status)

    @property
    def status(self) -> str:
        if self.blind_spots or self.count("error"):
            return "error"
        if self.count("warning"):
            return "warning"
        return "ok"

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checked_at": self.checked_at,
            "counts": {s: self.count(s) for s in ("ok", "warning", "error")},
            "clients": self.clients,
            "row_level_security": self.blind_spots,
        }

    def lines(self) -> list[str]:
        """The SOP's health-check lines: one per client, then a summary."""
        out = [f"{ICONS['error']} row-level security hides rows from deenroll: {b}" for b in self.blind_spots]
        out += [client_line(c) for c in self.clients]
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
    queries.require_relation(conn, "de_enrollment_health")
    blind = [r["reason"] for r in queries.rows(conn, "rls_blind_spots")]
    return HealthReport(queries.rows(conn, "health", client_id=client_id), blind_spots=blind)


# --------------------------------------------------------------------------- stuck leads


LINKS_SHOWN = 5  # leads of de_enrollment_campaign_links listed by `stuck` (the count is complete)


def stuck(conn: psycopg.Connection, limit: int, client_id: str | None = None) -> dict[str, Any]:
    """Stuck leads (count by reason, the first `limit`) and leads linked to a campaign of another client or none."""
    queries.require_relation(conn, "de_enrollment_stuck_leads")
    queries.require_relation(conn, "de_enrollment_campaign_links")
    with conn.transaction():
        queries.run(conn, "jit_off_here")
        by_reason = {r["reason"]: r["count"] for r in queries.rows(conn, "stuck_by_reason", client_id=client_id)}
        leads = queries.rows(conn, "stuck_leads", client_id=client_id, limit=limit)
        by_link = {r["link"]: r["count"] for r in queries.rows(conn, "campaign_links_by_link", client_id=client_id)}
        links = queries.rows(conn, "campaign_links", client_id=client_id, limit=min(limit, LINKS_SHOWN))
    return {
        "count": sum(by_reason.values()),
        "by_reason": by_reason,
        "held": sum(n for r, n in by_reason.items() if r.startswith("held:")),
        "leads": leads,
        "campaign_links": {"count": sum(by_link.values()), "by_link": by_link, "leads": links},
    }


def stuck_lines(found: dict[str, Any]) -> list[str]:
    """`stuck`'s report: the count by reason, the first leads (held ones with the database's error), the links."""
    reasons = ", ".join(f"{n} {r}" for r, n in found["by_reason"].items()) or "none"
    out = [f"stuck leads: {found['count']} ({reasons})"]
    for lead in found["leads"]:
        out.append(f"  {lead['lead_id']}  client {lead['client_id']}  campaign {lead['campaign_name']!r}  "
                   f"{lead['reason']}  {lead['messages_received']}/{lead['total_messages']} messages")
        if lead["error_message"]:  # the database's error, held leads only
            out.append(f"      error: {lead['error_message']}")
    if found["count"] > len(found["leads"]):
        out.append(f"  ... {found['count'] - len(found['leads'])} more (--limit)")
    links = found["campaign_links"]
    if links["count"]:
        kinds = ", ".join(f"{n} {k}" for k, n in links["by_link"].items())
        out.append(f"leads in a campaign of another client or of none: {links['count']} ({kinds})")
    for link in links["leads"]:
        owner = "of no client" if link["campaign_client_id"] is None else f"of client {link['campaign_client_id']}"
        out.append(f"  {link['lead_id']}  client {link['client_id']}  campaign {link['campaign_name']!r} {owner}")
    if links["count"] > len(links["leads"]):
        out.append(f"  ... {links['count'] - len(links['leads'])} more (view de_enrollment_campaign_links)")
    return out


def stuck_hints(found: dict[str, Any]) -> str:
    """What the operator can do about what `stuck` found (printed on stderr)."""
    hints = []
    if found["count"] > found["held"]:
        hints.append("the next `deenroll run` de-enrolls the leads not held; if they stay, see docs/runbook.md")
    if found["held"]:
        hints.append(
            "held leads are retried once the lead or its campaign changes, or after "
            "SELECT de_enrollment_release_held_leads('<client id>') (no argument: every client)"
        )
    if found["campaign_links"]["count"]:
        hints.append("leads linked to a campaign of another client or of none are de-enrolled under their own client")
    return "\n".join(hints)
