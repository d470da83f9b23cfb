"""The health report in Prometheus' text exposition format (for node_exporter's textfile collector).

Every gauge has its HELP and TYPE lines; per-client gauges carry a client_id label.
A gauge whose value is unknown for a client (no successful run yet, no finished run
in 24 h) has no sample for that client rather than a made-up one.
"""

from __future__ import annotations

import math
from typing import Any

from .health import EXIT_CODES, HealthReport

PREFIX = "deenroll"

# (name, the view's column, help); status is mapped through EXIT_CODES.
CLIENT_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("client_status", "status", "Health of the client's de-enrollment: 0 ok, 1 warning, 2 error."),
    ("client_hours_since_success", "hours_since_success", "Hours since the client's last successful run."),
    ("client_last_success_timestamp_seconds", "last_success_at", "Unix time of the client's last successful run."),
    ("client_runs_24h", "runs_24h", "Runs of the client started in the last 24 hours."),
    ("client_failed_runs_24h", "failed_runs_24h", "Of those, runs that failed (or died while running)."),
    ("client_partial_runs_24h", "partial_runs_24h", "Of those, runs stopped by their time budget."),
    ("client_success_rate_24h", "success_rate_24h", "Percent (0-100) of the client's finished runs in 24 hours that succeeded."),
    ("client_leads_de_enrolled_24h", "leads_de_enrolled_24h", "Leads of the client de-enrolled in the last 24 hours."),
    ("client_stuck_leads", "stuck_leads", "Active leads of the client that a run should have de-enrolled and has not."),
)


def _number(column: str, value: Any) -> float | None:
    if value is None:
        return None
    if column == "status":
        return float(EXIT_CODES[value])
    if hasattr(value, "timestamp"):
        return value.timestamp()
    return float(value)


def _format(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return repr(int(value)) if value.is_integer() else repr(value)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _gauge(name: str, help_text: str, samples: list[tuple[str, float]]) -> list[str]:
    full = f"{PREFIX}_{name}"
    return [f"# HELP {full} {help_text}", f"# TYPE {full} gauge", *(f"{full}{labels} {_format(v)}" for labels, v in samples)]


def exposition(report: HealthReport) -> str:
    """The whole exposition: one overall status, counts per status, then the per-client gauges."""
    lines = _gauge("health_status", "Worst status over all clients: 0 ok, 1 warning, 2 error.",
                   [("", float(report.exit_code))])
    lines += _gauge("clients", "Clients per health status.",
                    [(f'{{status="{s}"}}', float(report.count(s))) for s in EXIT_CODES])
    lines += _gauge("health_checked_timestamp_seconds", "Unix time the health check read the view.",
                    [("", report.checked_at.timestamp())])
    for name, column, help_text in CLIENT_GAUGES:
        samples = []
        for client in report.clients:
            value = _number(column, client[column])
            if value is not None:
                samples.append((f'{{client_id="{_label(str(client["client_id"]))}"}}', value))
        lines += _gauge(name, help_text, samples)
    return "\n".join(lines) + "\n"
