"""What a run did, client by client, as --json and the alert document show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import alerts
from .options import RunOptions


_COUNTS = ("leads_evaluated", "leads_de_enrolled", "completed", "opted_out", "batches")
_CLIENT_KEYS = ("client_id", "run_id", "status", *_COUNTS, "duration_ms", "error", "invalid_campaigns", "warnings",
                "leads_held", "held", "newly_held")


@dataclass
class ClientResult:
    client_id: str
    run_id: str | None = None
    status: str = "running"  # success | partial | failed | skipped | dry_run
    leads_evaluated: int = 0
    leads_de_enrolled: int = 0
    completed: int = 0
    opted_out: int = 0
    batches: int = 0
    duration_ms: int = 0
    error: str | None = None
    invalid_campaigns: list[dict[str, Any]] = field(default_factory=list)  # messages not an array
    warnings: list[str] = field(default_factory=list)
    campaigns: list[dict[str, Any]] = field(default_factory=list)  # dry run only
    held: dict[str, int] = field(default_factory=dict)  # leads runs hold, by reason, after the run
    newly_held: int = 0  # of them, held by this run

    @property
    def leads_held(self) -> int:
        return sum(self.held.values())

    def to_json(self) -> dict[str, Any]:
        out = {key: getattr(self, key) for key in _CLIENT_KEYS}
        if self.status == "dry_run":
            out.update(would_de_enroll=self.completed + self.opted_out, campaigns=self.campaigns)
        return out


@dataclass
class RunReport:
    options: RunOptions
    started_at: datetime
    clients: list[ClientResult] = field(default_factory=list)
    duration_ms: int = 0
    alert: alerts.AlertResult = field(default_factory=lambda: alerts.AlertResult(attempted=False))
    deltas_folded: int = 0  # after the clients: pending counter deltas of every other campaign
    fold_error: str | None = None
    exit_code: int = 0  # the database's rule (de_enrollment_run_exit_code), set when the run ends

    def count(self, status: str) -> int:
        return sum(1 for c in self.clients if c.status == status)

    def totals(self) -> dict[str, int]:
        return {"clients": len(self.clients), **{k: self.count(k) for k in ("success", "partial", "failed", "skipped")},
                **{k: sum(getattr(c, k) for c in self.clients) for k in (*_COUNTS, "leads_held")}}

    def to_json(self) -> dict[str, Any]:
        o = self.options
        return {"dry_run": o.dry_run, "batch_size": o.batch_size, "max_runtime_ms": o.max_runtime_ms,
                "started_at": self.started_at.isoformat(timespec="milliseconds"), "duration_ms": self.duration_ms,
                "clients": [c.to_json() for c in self.clients], "totals": self.totals(),
                "deltas_folded": self.deltas_folded, "fold_error": self.fold_error, "exit_code": self.exit_code,
                "alert": self.alert.to_json()}


class Observer:
    """What a run reports as it goes (`deenroll run` logs it and draws its progress): nothing here."""

    def clients_found(self, count: int) -> None: ...

    def client_started(self, client_id: str) -> None: ...

    def batch_done(self, result: ClientResult, size: int) -> None: ...

    def client_done(self, result: ClientResult) -> None: ...


def fill(result: ClientResult, summary: dict[str, Any]) -> None:
    """A client's result from the run procedure's summary of it."""
    result.run_id, result.status, result.error = summary.get("run_id"), summary["status"], summary.get("error")
    for key in (*_COUNTS, "duration_ms", "newly_held"):
        setattr(result, key, int(summary.get(key) or 0))
    result.invalid_campaigns = list(summary.get("invalid_campaigns") or [])
    result.held = {str(k): int(v) for k, v in sorted((summary.get("held") or {}).items())}


def alert_payload(report: RunReport) -> dict[str, Any]:
    """The run's results as the database builds its alert from them (alerts.run_document)."""
    return {"clients": [c.to_json() for c in report.clients], "fold_error": report.fold_error}
