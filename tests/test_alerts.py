"""deenroll.alerts against a real HTTP server on 127.0.0.1 (in a thread)."""

from __future__ import annotations

import json

from deenroll import alerts
from webhooks import Webhook, closed_port_url


def test_an_alert_is_one_json_document_posted_to_the_webhook(webhook: Webhook, monkeypatch) -> None:
    monkeypatch.setenv(alerts.WEBHOOK_ENV, webhook.url)
    result = alerts.post_alert("run", {"exit_code": 1, "clients": [{"status": "partial"}]}, summary="1 partial")
    assert result.attempted and result.delivered and result.http_status == 200 and result.error is None
    assert len(webhook.received) == 1
    got = webhook.received[0]
    assert got["path"] == "/hooks/T0/SECRET-TOKEN"
    assert got["content_type"] == "application/json"
    doc = got["body"]
    assert doc["source"] == "deenroll" and doc["kind"] == "run" and doc["text"] == "1 partial"
    assert doc["details"] == {"exit_code": 1, "clients": [{"status": "partial"}]}
    assert doc["host"] and doc["sent_at"]
    # what is reported never carries the webhook's path (it often holds a secret)
    assert "SECRET" not in json.dumps(result.to_json()) and "SECRET" not in result.describe()
    assert result.target == webhook.url.split("/hooks")[0]


def test_no_webhook_configured_means_nothing_is_attempted(monkeypatch) -> None:
    monkeypatch.delenv(alerts.WEBHOOK_ENV, raising=False)
    result = alerts.post_alert("run", {})
    assert result.to_json() == {"attempted": False, "delivered": False, "target": None, "http_status": None, "error": None}
    monkeypatch.setenv(alerts.WEBHOOK_ENV, "  ")
    assert alerts.post_alert("run", {}).attempted is False


def test_a_webhook_that_is_down_is_reported_not_raised() -> None:
    result = alerts.post_alert("health-check", {"x": 1}, url=closed_port_url(), timeout=2)
    assert result.attempted and not result.delivered
    assert result.http_status is None and "refused" in result.error.lower()
    assert "NOT delivered" in result.describe()


def test_a_webhook_answering_an_error_status_is_reported(webhook: Webhook) -> None:
    webhook.status = 503
    result = alerts.post_alert("run", {}, url=webhook.url)
    assert (result.delivered, result.http_status) == (False, 503)
    assert "503" in result.error
    assert len(webhook.received) == 1


def test_a_slow_webhook_times_out_quickly(webhook: Webhook) -> None:
    webhook.delay = 3
    result = alerts.post_alert("run", {}, url=webhook.url, timeout=0.3)
    assert result.attempted and not result.delivered
    assert "timed out" in result.error.lower()


def test_a_malformed_webhook_url_is_reported(monkeypatch) -> None:
    monkeypatch.setenv(alerts.WEBHOOK_ENV, "not a url")
    result = alerts.post_alert("run", {})
    assert result.attempted and not result.delivered and "http" in result.error
