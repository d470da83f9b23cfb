"""What a run did, client by client, and the words and documents it is reported in."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .. import alerts
from .options import RunOptions

log = logging.getLogger("deenroll.run")


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
        return {
            "dry_run": self.options.dry_run,
            "batch_size": self.options.batch_size,
            "max_runtime_ms": self.options.max_runtime_ms,
            "started_at": self.started_at.isoformat(timespec="milliseconds"),
            "duration_ms": self.duration_ms,
            "clients": [c.to_json() for c in self.clients],
            "totals": self.totals(),
            "deltas_folded": self.deltas_folded,
            "fold_error": self.fold_error,
            "exit_code": self.exit_code,
            "alert": self.alert.to_json(),
        }


class LogObserver:
    """What the run reports as it goes, as plain log lines on the `deenroll.run` logger (the
    terminal's progress display is a subclass, in cli_run)."""

    def clients_found(self, count: int) -> None:
        log.info("%d client(s) to process", count)

    def client_started(self, client_id: str) -> None:
        log.debug("client %s: starting", client_id)

    def batch_done(self, result: ClientResult, size: int) -> None:
        log.debug("client %s: batch %d de-enrolled %d (run total %d)", result.client_id, result.batches, size,
                  result.leads_de_enrolled)

    def client_done(self, result: ClientResult) -> None:
        for warning in result.warnings:
            log.warning("client %s: %s", result.client_id, warning)
        level = {"failed": logging.ERROR, "partial": logging.WARNING, "skipped": logging.WARNING}.get(result.status, 20)
        log.log(level, "client %s: %s", result.client_id, describe_client(result))


def describe_client(r: ClientResult) -> str:
    """One human line for a client's outcome."""
    if r.status == "skipped":
        return f"skipped: {r.error}"
    if r.status == "dry_run":
        text = f"would de-enroll {r.completed + r.opted_out} (completed {r.completed}, opted out {r.opted_out})"
    else:
        text = (
            f"{r.status}: de-enrolled {r.leads_de_enrolled} (completed {r.completed}, "
            f"opted out {r.opted_out}) in {r.batches} batch{'es' if r.batches != 1 else ''}, {r.duration_ms} ms"
        )
    if r.held:
        text += f"; {describe_held(r.held)}"
    if r.invalid_campaigns:
        text += f"; {len(r.invalid_campaigns)} campaign(s) with invalid messages"
    if r.error and r.status not in ("dry_run", "success"):  # a success's details only repeat the held leads
        text += f"; {r.error}"
    return text


def describe_held(held: dict[str, int]) -> str:
    """'held 3 (check_violation 2, refused_by_trigger 1)'."""
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(held.items()))
    return f"held {sum(held.values())} ({reasons})"


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


def summary_lines(report: RunReport) -> Iterable[str]:
    """The short human summary printed on stdout."""
    for c in report.clients:
        yield f"{c.client_id}  {describe_client(c)}"
    t = report.totals()
    if report.options.dry_run:
        yield (
            f"dry run: {t['clients']} client(s), would de-enroll {t['completed'] + t['opted_out']} "
            f"(completed {t['completed']}, opted out {t['opted_out']}), held {t['leads_held']}; nothing was changed"
        )
    else:
        yield (
            f"{t['clients']} client(s): {t['success']} success, {t['partial']} partial, {t['failed']} failed, "
            f"{t['skipped']} skipped; de-enrolled {t['leads_de_enrolled']} (completed {t['completed']}, "
            f"opted out {t['opted_out']}), held {t['leads_held']} in {report.duration_ms} ms; exit {report.exit_code}"
        )
