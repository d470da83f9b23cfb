"""Alerts sent by the database itself through the real pg_net, to real receivers on 127.0.0.1.

scripts/test.sh's PostgreSQL 15 preloads pg_net (built from ../shared/vendor) with its worker on
the database deenroll_net: pg_net sends the requests of one database only. So these tests share
that database, one at a time (an advisory lock), each starting from empty tables and no webhook.
Where the server has no pg_net (the embedded PostgreSQL 18, a clone without ../shared) they skip.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import errors

from alert_helpers import call_run, command_document, runner_login, troubled_dataset, without_time
from conftest import Server, add_campaign, new_id, run_cli
from deenroll import alerts
from engine_data import build_dataset
from processes import wait_until
from webhooks import Webhook, closed_port_url

pytestmark = pytest.mark.pg_net

LOCK = 727_027  # the advisory lock that lets one test at a time use the pg_net database
BOOKKEEPING = ["public._deenroll_definitions", "public._yoyo_migration", "public._yoyo_log",
               "public._yoyo_version", "public.yoyo_lock"]
SECRETS = ("hookuser", "Pa55-w0rd-x", "SECRET-TOKEN", "QueryTok3n")


def _lock(conn: psycopg.Connection) -> None:
    """Take the lock without waiting inside a statement: a session blocked on a lock is a
    transaction in progress, which the migration's concurrent index builds would wait for."""
    wait_until(lambda: conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK,)).fetchone()[0], timeout=600, every=0.2)


@pytest.fixture(scope="session")
def net_db(pg_server: Server) -> str:
    with pg_server.admin() as conn:
        name = conn.execute("SELECT current_setting('pg_net.database_name', true)").fetchone()[0]
    reason = "this server has no pg_net (scripts/test.sh loads it into PostgreSQL 15 when ../shared/vendor has its source)"
    if name is None:
        pytest.skip(reason)
    url = pg_server.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regprocedure('net.http_post(text,jsonb,jsonb,jsonb,integer)') IS NULL").fetchone()[0]:
            pytest.skip(reason)
        _lock(conn)
        try:
            assert run_cli("migrate", db=url).code == 0
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
    return url


def _reset(conn: psycopg.Connection) -> None:
    conn.execute("DROP TRIGGER IF EXISTS zz_refuse ON leads; DROP TRIGGER IF EXISTS zz_frozen_campaigns ON campaigns;"
                 " DROP FUNCTION IF EXISTS zz_refuse(); DROP FUNCTION IF EXISTS zz_frozen_campaigns();")
    tables = [r[0] for r in conn.execute(
        "SELECT t::text FROM deenroll.own_tables() AS t WHERE t <> ALL (%s::text[]::regclass[])", (BOOKKEEPING,))]
    conn.execute(f"TRUNCATE public.leads, public.campaigns, {', '.join(tables)} CASCADE")


@dataclass
class Net:
    url: str
    conn: psycopg.Connection  # the owner's
    notices: list[str]

    def keep(self, webhook_url: str, timeout_ms: int = 5000) -> str:
        return self.conn.execute("SELECT deenroll.set_de_enrollment_alert_webhook(%s, %s)",
                                 (webhook_url, timeout_ms)).fetchone()[0]

    def deliveries(self) -> list[dict]:
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute("SELECT * FROM deenroll.de_enrollment_alert_deliveries()").fetchall()

    def answered(self, n: int = 1) -> list[dict]:
        """The deliveries, once pg_net has answered n of them."""
        wait_until(lambda: sum(d["answered"] for d in self.deliveries()) >= n, timeout=60, every=0.1)
        return self.deliveries()


@pytest.fixture
def net(net_db: str) -> Iterator[Net]:
    with psycopg.connect(net_db, autocommit=True) as conn:
        _lock(conn)
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(f"{d.severity}: {d.message_primary}"))
        _reset(conn)
        try:
            yield Net(net_db, conn, notices)
        finally:
            _reset(conn)
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))


def secret_url(webhook: Webhook) -> str:
    scheme, rest = webhook.url.split("://", 1)
    return f"{scheme}://hookuser:Pa55-w0rd-x@{rest}?token=QueryTok3n"


def assert_no_secret(*shown: object) -> None:
    text = json.dumps(shown, default=str)
    for secret in SECRETS:
        assert secret not in text


def marker_after_nothing(net: Net, webhook: Webhook, before: int) -> None:
    """Nothing more arrives: a last alert sent now is the only one after the `before` already there."""
    marker = {"source": "deenroll", "kind": "run", "text": "marker", "details": {}}
    assert net.conn.execute("SELECT deenroll.send_de_enrollment_alert(%s::jsonb)", (json.dumps(marker),)).fetchone()[0]
    net.answered(before + 1)
    wait_until(lambda: len(webhook.received) >= before + 1, timeout=30)
    assert [r["body"]["text"] for r in webhook.received[before:]] == ["marker"]


def test_a_failed_client_and_a_partial_one_arrive_as_the_commands_document(net: Net, webhook: Webhook) -> None:
    troubled_dataset(net.conn)
    shown = net.keep(secret_url(webhook))
    host, port = webhook.server.server_address[:2]
    assert shown == f"http://{host}:{port}"
    summary = call_run(net.url)  # pg_cron's CALL queues the run's alert itself, once
    assert {c["status"] for c in summary["clients"]} == {"failed", "partial", "success"}
    [delivery] = net.answered()
    with runner_login(net.url) as login, psycopg.connect(login, autocommit=True) as runner:
        webhook_shown = runner.execute("SELECT * FROM deenroll.de_enrollment_alert_webhook()").fetchone()
    assert (delivery["kind"], delivery["target"], delivery["status_code"], delivery["error_msg"]) == ("run", shown, 200, None)
    [got] = webhook.received
    assert got["path"] == "/hooks/T0/SECRET-TOKEN?token=QueryTok3n"
    assert got["authorization"] == "Basic " + base64.b64encode(b"hookuser:Pa55-w0rd-x").decode()
    assert got["content_type"] == "application/json"
    body = got["body"]
    assert body["host"] == f"database {net.conn.info.dbname}"
    # the command's document for the same results, had it run on a host of that name
    assert without_time(body) == without_time(command_document(net.url, summary, body["host"]))
    assert body["details"]["exit_code"] == 2
    assert webhook_shown[0] == shown and webhook_shown[3] is None
    assert_no_secret(delivery, webhook_shown, net.notices)


def test_a_health_job_finding_an_error_sends_its_document_and_still_fails(net: Net, webhook: Webhook) -> None:
    build_dataset(net.conn)
    call_run(net.url)
    dead = new_id()
    add_campaign(net.conn, dead)
    net.keep(webhook.url)
    with runner_login(net.url) as login, psycopg.connect(login, autocommit=True) as runner:
        with pytest.raises(errors.RaiseException) as caught:
            runner.execute("CALL deenroll.alert_de_enrollment_health()")
        assert caught.value.diag.message_primary.startswith("deenroll health: 1 client(s) in error: " + dead)
        [delivery] = net.answered()
        expected = alerts.health_document(runner, f"database {net.conn.info.dbname}")
    assert (delivery["kind"], delivery["status_code"]) == ("health-check", 200)
    [got] = webhook.received
    assert without_time(got["body"]) == without_time(expected)
    assert [c["client_id"] for c in got["body"]["details"]["clients"]] == [dead]
    # the job's old command keeps its meaning: it fails, and sends nothing (its transaction rolls back)
    with pytest.raises(errors.RaiseException):
        net.conn.execute("SELECT public.check_de_enrollment_health()")
    marker_after_nothing(net, webhook, 1)


def test_nothing_is_sent_when_nothing_is_wrong_nor_from_a_rolled_back_transaction(net: Net, webhook: Webhook) -> None:
    build_dataset(net.conn)
    net.keep(webhook.url)
    summary = call_run(net.url)
    assert {c["status"] for c in summary["clients"]} == {"success"}
    send = "SELECT deenroll.send_de_enrollment_alert(deenroll.de_enrollment_run_alert(%s::jsonb, %s))"
    assert net.conn.execute(send, (json.dumps(summary["clients"]), None)).fetchone()[0] is False
    net.conn.execute("CALL deenroll.alert_de_enrollment_health()")  # healthy: no error, nothing sent
    with pytest.raises(psycopg.errors.RaiseException):
        with net.conn.transaction():
            failed = json.dumps([{"client_id": new_id(), "status": "failed"}])
            assert net.conn.execute(send, (failed, None)).fetchone()[0] is True
            net.conn.execute("DO $$ BEGIN RAISE EXCEPTION 'the caller rolls back'; END $$")
    marker_after_nothing(net, webhook, 0)


@pytest.mark.parametrize("case", ["refused", "500", "hangs"])
def test_a_receiver_that_fails_is_recorded_and_never_raises(net: Net, webhook: Webhook, case: str) -> None:
    url, timeout_ms = {"refused": (closed_port_url(), 5000), "500": (webhook.url, 5000), "hangs": (webhook.url, 300)}[case]
    webhook.status = 500 if case == "500" else 200
    webhook.delay = 3 if case == "hangs" else 0
    net.keep(url, timeout_ms)
    failed = json.dumps([{"client_id": new_id(), "status": "failed"}])
    with runner_login(net.url) as login, psycopg.connect(login, autocommit=True) as runner:
        assert runner.execute(
            "SELECT deenroll.send_de_enrollment_alert(deenroll.de_enrollment_run_alert(%s::jsonb))", (failed,)
        ).fetchone()[0] is True
    [delivery] = net.answered()
    if case == "refused":
        assert delivery["status_code"] is None and "connect" in delivery["error_msg"].lower()
    elif case == "500":
        assert (delivery["status_code"], delivery["error_msg"]) == (500, None)
    else:
        assert delivery["status_code"] is None and delivery["timed_out"] is True
        assert "timeout" in delivery["error_msg"].lower()
    assert_no_secret(delivery, net.notices)


def test_a_bad_webhook_or_timeout_is_refused_in_one_line_and_the_kept_one_stays(net: Net, webhook: Webhook) -> None:
    kept = net.keep(secret_url(webhook))
    for url, timeout_ms, error in [
        ("ftp://hookuser:Pa55-w0rd-x@example.com/SECRET-TOKEN", 5000, errors.InvalidParameterValue),
        ("https://hookuser:Pa55-w0rd-x@/SECRET-TOKEN", 5000, errors.InvalidParameterValue),
        ("https://example.com/SECRET-TOKEN", 0, errors.InvalidParameterValue),
    ]:
        with pytest.raises(error) as caught:
            net.keep(url, timeout_ms)
        message = caught.value.diag.message_primary
        assert "\n" not in message
        assert_no_secret(message)
    row = net.conn.execute("SELECT target, timeout_ms FROM deenroll.de_enrollment_alert_webhook()").fetchone()
    assert row == (kept, 5000)
    assert net.conn.execute("SELECT deenroll.clear_de_enrollment_alert_webhook()").fetchone()[0] is True
    assert net.conn.execute("SELECT target FROM deenroll.de_enrollment_alert_webhook()").fetchone()[0] is None
