"""deenroll.alerts' delivery against a real HTTP server on 127.0.0.1 (in a thread). The documents
it delivers are the database's (tests/test_alert_documents.py); here any document will do."""

from __future__ import annotations

import base64
import json

import pytest

from deenroll import alerts
from webhooks import Trickle, Webhook, closed_port_url


def doc(**details: object):
    """A document builder as the commands pass one: called only when there is a webhook."""
    return lambda: {"source": "deenroll", "kind": "run", "text": "1 partial", "details": details}


def test_an_alert_is_one_json_document_posted_to_the_webhook(webhook: Webhook, monkeypatch) -> None:
    monkeypatch.setenv(alerts.WEBHOOK_ENV, webhook.url)
    result = alerts.post_alert(doc(exit_code=1, clients=[{"status": "partial"}]))
    assert result.attempted and result.delivered and result.http_status == 200 and result.error is None
    assert len(webhook.received) == 1
    got = webhook.received[0]
    assert got["path"] == "/hooks/T0/SECRET-TOKEN"
    assert got["content_type"] == "application/json"
    body = got["body"]
    assert body == {"source": "deenroll", "kind": "run", "text": "1 partial",
                    "details": {"exit_code": 1, "clients": [{"status": "partial"}]}}
    # what is reported never carries the webhook's path (it often holds a secret)
    assert "SECRET" not in json.dumps(result.to_json()) and "SECRET" not in result.describe()
    assert result.target == webhook.url.split("/hooks")[0]


def test_no_webhook_configured_means_nothing_is_attempted(monkeypatch) -> None:
    monkeypatch.delenv(alerts.WEBHOOK_ENV, raising=False)
    built: list[int] = []
    result = alerts.post_alert(lambda: built.append(1))
    assert result.to_json() == {"attempted": False, "delivered": False, "target": None, "http_status": None, "error": None}
    monkeypatch.setenv(alerts.WEBHOOK_ENV, "  ")
    assert alerts.post_alert(lambda: built.append(1)).attempted is False
    assert built == []  # the document is not even built


def test_a_webhook_that_is_down_is_reported_not_raised() -> None:
    result = alerts.post_alert(doc(x=1), url=closed_port_url(), timeout=2)
    assert result.attempted and not result.delivered
    assert result.http_status is None and "refused" in result.error.lower()
    assert "NOT delivered" in result.describe()


def test_a_webhook_answering_an_error_status_is_reported(webhook: Webhook) -> None:
    webhook.status = 503
    result = alerts.post_alert(doc(), url=webhook.url)
    assert (result.delivered, result.http_status) == (False, 503)
    assert "503" in result.error
    assert len(webhook.received) == 1


def test_a_slow_webhook_times_out_quickly(webhook: Webhook) -> None:
    webhook.delay = 3
    result = alerts.post_alert(doc(), url=webhook.url, timeout=0.3)
    assert result.attempted and not result.delivered
    assert "timed out" in result.error.lower()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_not_delivered(webhook: Webhook, status: int) -> None:
    webhook.status = status
    result = alerts.post_alert(doc(x=1), url=webhook.url)
    assert (result.attempted, result.delivered, result.http_status) == (True, False, status)
    assert result.error == f"HTTP {status} redirect (not followed)"
    assert [r["method"] for r in webhook.received] == ["POST"]  # nothing went to /elsewhere


def test_a_server_trickling_its_answer_cannot_outlast_the_deadline(trickle: Trickle) -> None:
    """Each byte arrives well within any per-read timeout; only a deadline on the whole POST ends it."""
    result = alerts.post_alert(doc(x=1), url=trickle.url, timeout=0.5)
    assert (result.attempted, result.delivered, result.http_status) == (True, False, None)
    assert result.error == "timed out after 0.5 s"
    assert len(trickle.connections) == 1


def test_the_deadline_comes_from_the_environment(trickle: Trickle, monkeypatch) -> None:
    monkeypatch.setenv(alerts.TIMEOUT_ENV, " 0.4 ")
    assert alerts.alert_timeout() == 0.4
    result = alerts.post_alert(doc(), url=trickle.url)
    assert not result.delivered and result.error == "timed out after 0.4 s"
    monkeypatch.delenv(alerts.TIMEOUT_ENV)
    assert alerts.alert_timeout() == 10.0


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "10s", "1e999"])
def test_an_invalid_deadline_is_one_clear_line_and_nothing_is_sent(webhook: Webhook, monkeypatch, value: str) -> None:
    monkeypatch.setenv(alerts.TIMEOUT_ENV, value)
    result = alerts.post_alert(doc(), url=webhook.url)
    assert result.attempted and not result.delivered
    assert result.error == f"{alerts.TIMEOUT_ENV} must be a number of seconds greater than 0, not {value!r}"
    assert webhook.received == []


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "ftp://example.invalid/hook",
        "javascript:alert(1)",
        "http://",
        "http:///no-host/SECRET-TOKEN",
        "http://[::1/SECRET-TOKEN",
        "http://127.0.0.1:notaport/SECRET-TOKEN",
        "http://127.0.0.1:99999/SECRET-TOKEN",
        "https://user:SECRET-TOKEN@",
        "http://127.0.0.1/hook with spaces/SECRET-TOKEN",
        "http://127.0.0.1/\x7fSECRET-TOKEN",
        "http://127.0.0.1/\tSECRET-TOKEN",
    ],
)
def test_an_invalid_webhook_url_is_one_clear_line(monkeypatch, url: str) -> None:
    monkeypatch.setenv(alerts.WEBHOOK_ENV, url)
    result = alerts.post_alert(doc())
    assert result.attempted and not result.delivered and result.http_status is None
    assert result.target == "<invalid webhook URL>"
    assert result.error.startswith(alerts.WEBHOOK_ENV) and "\n" not in result.error
    shown = result.describe() + json.dumps(result.to_json())
    assert "SECRET" not in shown and "user" not in shown


@pytest.mark.parametrize("down", [False, True])
def test_credentials_in_the_webhook_url_are_never_shown(webhook: Webhook, down: bool) -> None:
    base = closed_port_url() if down else webhook.url
    scheme, rest = base.split("://", 1)
    url = f"{scheme}://hookuser:Pa55-w0rd-x@{rest}?token=QueryTok3n"
    result = alerts.post_alert(doc(x=1), url=url, timeout=2)
    assert result.delivered is not down
    if not down:
        assert webhook.received[0]["path"] == "/hooks/T0/SECRET-TOKEN?token=QueryTok3n"
        # user:password@ is sent as HTTP Basic authentication
        assert webhook.received[0]["authorization"] == "Basic " + base64.b64encode(b"hookuser:Pa55-w0rd-x").decode()
    shown = result.describe() + json.dumps(result.to_json())
    for secret in ("hookuser", "Pa55-w0rd-x", "SECRET-TOKEN", "QueryTok3n"):
        assert secret not in shown


def test_nothing_to_report_sends_nothing_and_a_document_that_cannot_be_built_is_reported(webhook: Webhook) -> None:
    assert alerts.post_alert(lambda: None, url=webhook.url).to_json()["attempted"] is False

    def unreachable() -> dict:
        raise OSError("connection to the database refused")

    result = alerts.post_alert(unreachable, url=webhook.url)
    assert (result.attempted, result.delivered, result.http_status) == (True, False, None)
    assert result.error == "the alert could not be built: connection to the database refused"
    assert webhook.received == []
