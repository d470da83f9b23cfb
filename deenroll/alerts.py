"""Alerts: one JSON document POSTed to DE_ENROLLMENT_ALERT_WEBHOOK.

Used by `run` (a failed or partial run) and by `health-check` (errors found). The document
is built by the database (de_enrollment_run_alert, de_enrollment_health_alert: the same
functions the database's own alerts use); this module only delivers it.
Posting never raises: a webhook that is down, slow, redirecting, refusing or
misconfigured gives an AlertResult saying so, which the caller reports on stderr
and in its --json output; the run's own outcome never depends on it. Redirects
are not followed, and one deadline (DE_ENROLLMENT_ALERT_TIMEOUT seconds, default
10) bounds the whole POST, however slowly the server answers.
"""

from __future__ import annotations

import base64
import json
import math
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from . import __version__, database, queries
from .errors import one_line

WEBHOOK_ENV = "DE_ENROLLMENT_ALERT_WEBHOOK"
TIMEOUT_ENV = "DE_ENROLLMENT_ALERT_TIMEOUT"
DEFAULT_TIMEOUT = 10.0
_INVALID_TARGET = "<invalid webhook URL>"


@dataclass(frozen=True)
class AlertResult:
    """What happened to one alert. `target` is scheme://host only: webhook paths often hold secrets."""

    attempted: bool
    delivered: bool = False
    target: str | None = None
    http_status: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for stderr."""
        if not self.attempted:
            return "no alert sent"
        if self.delivered:
            return f"alert delivered to {self.target} (HTTP {self.http_status})"
        return f"alert NOT delivered to {self.target}: {self.error}"


def webhook_url() -> str | None:
    """The configured webhook, or None when DE_ENROLLMENT_ALERT_WEBHOOK is unset or empty."""
    return os.environ.get(WEBHOOK_ENV, "").strip() or None


def alert_timeout() -> float:
    """DE_ENROLLMENT_ALERT_TIMEOUT: seconds one POST may take in all (default 10). ValueError when invalid."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds greater than 0, not {raw[:20]!r}")
    return value


def check_url(url: str) -> tuple[str, str | None]:
    """(what may be shown of the URL: scheme://host[:port], the problem or None).

    Nothing of the URL's user, password, path or query is ever shown: they often hold a token.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        port, host = parts.port, parts.hostname
    except ValueError:
        return _INVALID_TARGET, f"{WEBHOOK_ENV} is not a valid URL (bad host or port)"
    if parts.scheme.lower() not in ("http", "https"):
        return _INVALID_TARGET, f"{WEBHOOK_ENV} must be an http:// or https:// URL"
    if not host:
        return _INVALID_TARGET, f"{WEBHOOK_ENV} has no host name"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return _INVALID_TARGET, f"{WEBHOOK_ENV} contains spaces or control characters (percent-encode them)"
    shown_host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{shown_host}" + (f":{port}" if port else ""), None


def _secrets_of(url: str) -> list[str]:
    parts = urllib.parse.urlsplit(url)
    pieces = [parts.username, parts.password, parts.path, parts.query, parts.fragment]
    pieces += [urllib.parse.unquote(p) for p in pieces if p]
    pieces += [seg for p in (parts.path, parts.query) for seg in p.replace("&", "/").split("/") if len(seg) >= 6]
    return [p for p in pieces if p and len(p) >= 4]


def _safe_reason(exc: BaseException, url: str) -> str:
    """The failure in one line, without any piece of the URL that may be a secret."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason  # what urllib wraps: refused, timed out, name not found...
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    text = one_line(exc) if str(exc).strip() else ""
    if any(secret in text for secret in _secrets_of(url)):
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is an answer: the alert was not delivered where it was meant to go."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _post(url: str, body: bytes, deadline: float) -> tuple[int | None, str | None]:
    """(HTTP status, problem) of one POST, the problem None when the status is 2xx; runs in a worker thread."""
    headers = {"Content-Type": "application/json", "User-Agent": f"deenroll/{__version__}"}
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        # user:password@ in the URL means HTTP Basic authentication; urllib would take it for the host
        credentials = urllib.parse.unquote(f"{parts.username or ''}:{parts.password or ''}").encode()
        headers["Authorization"] = f"Basic {base64.b64encode(credentials).decode()}"
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with _OPENER.open(request, timeout=deadline) as response:
            return response.status, None  # the opener raises HTTPError for any other status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, f"HTTP {exc.code}" + (" redirect (not followed)" if 300 <= exc.code < 400 else "")
    except Exception as exc:  # noqa: BLE001 - every failure becomes "not delivered"
        return None, _safe_reason(exc, url)


def run_document(target: database.Target, payload: dict[str, Any], host: str) -> dict[str, Any] | None:
    """A run's alert document from the database (None: nothing in the run needs attention),
    on a connection of its own: the run's own may be gone by then.

    payload: {"clients": [each client's --json object], "fold_error": str | None}.
    """
    clients = Jsonb(payload["clients"], dumps=lambda obj: json.dumps(obj, default=str))
    with database.connect(target, autocommit=True) as conn:
        return queries.value(
            conn, "alert_run_document", clients=clients, fold_error=payload.get("fold_error"), host=host
        )


def health_document(conn: psycopg.Connection, host: str) -> dict[str, Any] | None:
    """The health check's alert document from the database (None: no client in error)."""
    return queries.value(conn, "alert_health_document", host=host)


def unbuilt_document(kind: str, problem: str) -> dict[str, Any]:
    """The one document not built by the database: the database that builds the others could not
    be reached. The envelope of de_enrollment_alert_document; details say only that."""
    host = socket.gethostname()
    return {"source": "deenroll", "version": __version__, "kind": kind,
            "text": f"deenroll {kind} on {host}: the database could not be reached to build this alert ({problem})",
            "host": host, "sent_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "details": {"command": kind, "exit_code": 2, "error": problem}}


def post_alert(
    document: Callable[[], dict[str, Any] | None],
    *,
    kind: str | None = None,
    url: str | None = None,
    timeout: float | None = None,
) -> AlertResult:
    """POST one alert document to `url` (default: the webhook from the environment).

    document builds the document (run_document, health_document) and is called only when a
    webhook is configured and valid; None from it means there is nothing to send. When it fails
    and `kind` is given, unbuilt_document(kind, why) is sent instead. timeout
    bounds the whole POST (default: DE_ENROLLMENT_ALERT_TIMEOUT, else 10 s). Returns
    AlertResult(attempted=False) when no webhook is configured or nothing is to be sent;
    never raises.
    """
    url = url or webhook_url()
    if not url:
        return AlertResult(attempted=False)
    target, problem = check_url(url)
    try:
        timeout = alert_timeout() if timeout is None else timeout
    except ValueError as exc:
        problem = problem or str(exc)
    if problem:
        return AlertResult(True, False, target, None, problem)
    try:
        built = document()
    except Exception as exc:  # noqa: BLE001 - a database that cannot build it: reported, not raised
        if kind is None:
            return AlertResult(True, False, target, None, f"the alert could not be built: {one_line(exc)}")
        built = unbuilt_document(kind, one_line(exc))
    if built is None:
        return AlertResult(attempted=False)
    body = json.dumps(built, default=str).encode()
    # The POST runs in a daemon thread: a server that keeps it busy (e.g. trickles its answer) is given
    # up on at the deadline. The thread ends with its socket's own timeout or with the process.
    outcome: list[tuple[int | None, str | None]] = [(None, f"timed out after {timeout:g} s")]
    worker = threading.Thread(
        target=lambda: outcome.append(_post(url, body, timeout)), name="deenroll-alert", daemon=True
    )
    worker.start()
    worker.join(timeout)
    status, problem = outcome[-1]
    return AlertResult(True, problem is None, target, status, problem)
