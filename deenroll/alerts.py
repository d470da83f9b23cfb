"""Alerts: one JSON document POSTed to DE_ENROLLMENT_ALERT_WEBHOOK.

Used by `run` (a failed or partial run) and by `health-check` (errors found).
Posting never raises: a webhook that is down, slow or refusing gives an
AlertResult saying so, which the caller reports on stderr and in its --json
output; the run's own outcome never depends on it.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import __version__

WEBHOOK_ENV = "DE_ENROLLMENT_ALERT_WEBHOOK"
DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class AlertResult:
    """What happened to one alert. `target` is scheme://host only: webhook paths often hold secrets."""

    attempted: bool
    delivered: bool = False
    target: str | None = None
    http_status: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "delivered": self.delivered,
            "target": self.target,
            "http_status": self.http_status,
            "error": self.error,
        }

    def describe(self) -> str:
        """One line for stderr."""
        if not self.attempted:
            return "no alert sent"
        if self.delivered:
            return f"alert delivered to {self.target} (HTTP {self.http_status})"
        return f"alert NOT delivered to {self.target}: {self.error}"


def webhook_url() -> str | None:
    """The configured webhook, or None when DE_ENROLLMENT_ALERT_WEBHOOK is unset or empty."""
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    return url or None


def _display(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and parts.hostname:
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}"
    return "<unparsable webhook URL>"


def document(kind: str, payload: dict[str, Any], summary: str | None = None) -> dict[str, Any]:
    """The JSON document an alert carries: who, what, when, and the caller's details."""
    return {
        "source": "deenroll",
        "version": __version__,
        "kind": kind,
        "text": summary or f"deenroll {kind} alert",
        "host": socket.gethostname(),
        "sent_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "details": payload,
    }


def post_alert(
    kind: str,
    payload: dict[str, Any],
    *,
    summary: str | None = None,
    url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> AlertResult:
    """POST one alert document to `url` (default: the webhook from the environment).

    kind names the sender ("run", "health-check"); payload is its JSON-able details;
    summary is a one-line human text (Slack-style webhooks show the "text" field).
    Returns AlertResult(attempted=False) when no webhook is configured.
    """
    url = url or webhook_url()
    if not url:
        return AlertResult(attempted=False)
    target = _display(url)
    if urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
        return AlertResult(True, False, target, None, f"{WEBHOOK_ENV} must be an http:// or https:// URL")
    body = json.dumps(document(kind, payload, summary), default=str).encode()
    try:
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"deenroll/{__version__}"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked above
            status = response.status
    except urllib.error.HTTPError as exc:
        return AlertResult(True, False, target, exc.code, f"HTTP {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return AlertResult(True, False, target, None, f"{type(exc).__name__}: {reason}")
    if 200 <= status < 300:
        return AlertResult(True, True, target, status, None)
    return AlertResult(True, False, target, status, f"HTTP {status}")
