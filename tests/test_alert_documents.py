"""The alert document is the database's: `deenroll run`, `deenroll health-check` and the database
itself get it from the same SQL functions. Real runs of the procedure on dirty data, the real
command posting to a real receiver on 127.0.0.1; keeping a webhook without pg_net."""

from __future__ import annotations

import json
import socket
from itertools import product

import psycopg
import pytest
from psycopg import errors

import deenroll
from alert_helpers import HOST, call_run, command_document, runner_login, troubled_dataset, without_time
from conftest import add_campaign, add_run, new_id
from deenroll.runner.report import ClientResult
from engine_data import CLIENT_A, CLIENT_B, CLIENT_C, build_dataset
from webhooks import Webhook


def test_the_database_names_the_packages_release(conn: psycopg.Connection) -> None:
    assert conn.execute("SELECT deenroll.de_enrollment_version()").fetchone()[0] == deenroll.__version__


@pytest.mark.parametrize("dry_run", [False, True])
def test_the_exit_status_of_a_run_is_the_databases_rule(conn: psycopg.Connection, dry_run: bool) -> None:
    """Every mix of client outcomes, held leads, invalid campaigns and a fold error: the database's
    rule, which `deenroll run` exits with, against the rule as the README states it."""
    kinds = [("success", False, False), ("partial", False, False), ("failed", False, False),
             ("skipped", False, False), ("success", True, False), ("success", False, True)]
    checked = set()
    for mix, fold_error in product(product(kinds, repeat=2), [None, "folding failed"]):
        clients = []
        for n, (status, held, invalid) in enumerate(mix):
            result = ClientResult(f"c{n}", status=status, held={"check_violation": 2} if held else {})
            if invalid:
                result.invalid_campaigns = [{"campaign_id": new_id(), "campaign_name": "broken",
                                             "messages_type": "string", "active_leads": 1}]
            clients.append(result.to_json())
        statuses = {status for status, _, _ in mix}
        expected = (2 if "failed" in statuses or fold_error
                    else 1 if "partial" in statuses or any(h for _, h, _ in mix) or (dry_run and any(i for *_, i in mix))
                    else 0)
        sql = conn.execute(
            "SELECT deenroll.de_enrollment_run_exit_code(%s::jsonb, %s, %s)",
            (json.dumps(clients), fold_error, dry_run),
        ).fetchone()[0]
        assert sql == expected, (mix, fold_error)
        checked.add(sql)
    assert checked == {0, 1, 2}


def test_a_call_and_the_command_build_one_document_for_the_same_results(db_url: str, conn: psycopg.Connection) -> None:
    troubled_dataset(conn)
    summary = call_run(db_url)
    by_client = {c["client_id"]: c for c in summary["clients"]}
    assert (by_client[CLIENT_A]["status"], by_client[CLIENT_C]["status"]) == ("failed", "partial")
    assert by_client[CLIENT_B]["held"] == {"refused_by_trigger": 1}

    from_call = conn.execute(
        "SELECT deenroll.de_enrollment_run_alert(%s::jsonb, %s, %s)",
        (json.dumps(summary["clients"]), summary["fold_error"], HOST),
    ).fetchone()[0]
    from_command = command_document(db_url, summary)
    assert without_time(from_call) == without_time(from_command)

    assert {k: from_call[k] for k in ("source", "version", "kind", "host")} == {
        "source": "deenroll", "version": deenroll.__version__, "kind": "run", "host": HOST}
    assert from_call["text"] == f"deenroll run on {HOST}: 1 failed, 1 partial of 3 client(s), 1 lead(s) held"
    details = from_call["details"]
    assert (details["command"], details["exit_code"]) == ("run", 2)
    assert details["fold_error"] == summary["fold_error"] and "read-only" in details["fold_error"]  # A's deltas stay
    assert details["totals"]["clients"] == len(summary["clients"]) == 3 and details["totals"]["leads_held"] == 1
    flagged = {c["client_id"]: c for c in details["clients"]}
    assert set(flagged) == {CLIENT_A, CLIENT_B, CLIENT_C}
    assert "read-only" in flagged[CLIENT_A]["error"]
    assert flagged[CLIENT_B]["leads_held"] == 1 and flagged[CLIENT_B]["warnings"] == []
    assert flagged[CLIENT_C]["invalid_campaigns"][0]["messages_type"] == "string"
    # the sender defaults to the database
    dbname = conn.info.dbname
    assert conn.execute(
        "SELECT deenroll.de_enrollment_run_alert(%s::jsonb) ->> 'host'", (json.dumps(summary["clients"]),)
    ).fetchone()[0] == f"database {dbname}"


def test_nothing_is_to_be_sent_when_nothing_is_wrong(db_url: str, conn: psycopg.Connection) -> None:
    build_dataset(conn)
    summary = call_run(db_url)
    assert {c["status"] for c in summary["clients"]} == {"success"}
    assert conn.execute("SELECT deenroll.de_enrollment_run_alert(%s::jsonb, NULL)",
                        (json.dumps(summary["clients"]),)).fetchone()[0] is None
    assert command_document(db_url, summary) is None
    assert conn.execute("SELECT deenroll.de_enrollment_health_alert()").fetchone()[0] is None
    # dirty input builds nothing and raises nothing
    for odd in ("null", "{}", "[1, \"x\", null, {\"status\": 7}]"):
        assert conn.execute("SELECT deenroll.de_enrollment_run_alert(%s::jsonb)", (odd,)).fetchone()[0] is None


def test_the_health_check_posts_the_databases_document(cli, db_url: str, conn: psycopg.Connection, webhook: Webhook) -> None:
    dead, late = new_id(), new_id()
    add_campaign(conn, dead)
    add_campaign(conn, late)
    add_run(conn, late, "success", ago="5 hours")
    res = cli("health-check", db=db_url, env={"DE_ENROLLMENT_ALERT_WEBHOOK": webhook.url})
    assert res.code == 2 and len(webhook.received) == 1
    posted = webhook.received[0]["body"]
    built = conn.execute("SELECT deenroll.de_enrollment_health_alert(%s)", (socket.gethostname(),)).fetchone()[0]
    assert without_time(posted) == without_time(built)
    assert posted["kind"] == "health-check" and posted["details"]["counts"] == {"ok": 0, "warning": 0, "error": 2}
    assert [c["client_id"] for c in posted["details"]["clients"]] == sorted([dead, late])
    assert posted["text"].startswith("deenroll health check: 2 client(s) in error: ")


def test_the_runner_builds_and_sends_but_never_reads_or_keeps_the_webhook(db_url: str, conn: psycopg.Connection) -> None:
    with runner_login(db_url) as url, psycopg.connect(url, autocommit=True) as runner:
        failed = json.dumps([{"client_id": CLIENT_A, "status": "failed"}])
        assert runner.execute("SELECT deenroll.de_enrollment_run_alert(%s::jsonb) ->> 'kind'", (failed,)).fetchone()[0] == "run"
        assert runner.execute("SELECT deenroll.de_enrollment_health_alert()").fetchone()[0] is None
        assert runner.execute(
            "SELECT deenroll.send_de_enrollment_alert(deenroll.de_enrollment_run_alert(%s::jsonb))", (failed,)
        ).fetchone()[0] is False  # no webhook kept
        assert runner.execute("SELECT target FROM deenroll.de_enrollment_alert_webhook()").fetchone()[0] is None
        assert runner.execute("SELECT count(*) FROM deenroll.de_enrollment_alert_deliveries()").fetchone()[0] == 0
        for statement in ("SELECT * FROM deenroll.alert_webhook",
                          "SELECT deenroll.set_de_enrollment_alert_webhook('https://example.com/x')",
                          "SELECT deenroll.clear_de_enrollment_alert_webhook()",
                          "SELECT * FROM deenroll.de_enrollment_webhook_parts('https://example.com/x')"):
            with pytest.raises(errors.InsufficientPrivilege):
                runner.execute(statement)


def test_without_pg_net_keeping_a_webhook_says_so_in_one_line_and_changes_nothing(conn: psycopg.Connection) -> None:
    if conn.execute("SELECT to_regprocedure('net.http_post(text,jsonb,jsonb,jsonb,integer)') IS NOT NULL").fetchone()[0]:
        pytest.skip("pg_net is installed in this database")
    with pytest.raises(errors.ObjectNotInPrerequisiteState) as caught:
        conn.execute("SELECT deenroll.set_de_enrollment_alert_webhook('https://u:SECRET-PW@example.com/T0/SECRET-TOKEN')")
    message = caught.value.diag.message_primary
    assert "\n" not in message and "SECRET" not in message
    assert message.startswith("pg_net is not installed in this database")
    assert "Database > Extensions > pg_net" in message and "shared_preload_libraries" in message
    assert conn.execute("SELECT count(*) FROM deenroll.alert_webhook").fetchone()[0] == 0
    row = conn.execute("SELECT * FROM deenroll.de_enrollment_alert_webhook()").fetchone()
    assert row[0] is None and row[3] == message


def test_a_kept_webhook_without_pg_net_is_a_warning_never_an_error(conn: psycopg.Connection) -> None:
    """pg_net removed after the webhook was kept: the send says so and returns false."""
    if conn.execute("SELECT to_regprocedure('net.http_post(text,jsonb,jsonb,jsonb,integer)') IS NOT NULL").fetchone()[0]:
        pytest.skip("pg_net is installed in this database")
    conn.execute("INSERT INTO deenroll.alert_webhook (url) VALUES ('https://u:SECRET-PW@hooks.example.com/T0/SECRET-TOKEN')")
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(f"{d.severity}: {d.message_primary}"))
    sent = conn.execute(
        "SELECT deenroll.send_de_enrollment_alert(deenroll.de_enrollment_run_alert(%s::jsonb))",
        (json.dumps([{"client_id": CLIENT_A, "status": "failed"}]),),
    ).fetchone()[0]
    assert sent is False
    assert notices == ["WARNING: deenroll: run alert not sent to https://hooks.example.com: pg_net is not installed "
                       + notices[0].split("pg_net is not installed ", 1)[1]]
    assert "SECRET" not in notices[0]
    assert conn.execute("SELECT target FROM deenroll.de_enrollment_alert_webhook()").fetchone()[0] == "https://hooks.example.com"


@pytest.mark.parametrize(
    "url, problem",
    [
        ("not a url", "must be an http:// or https:// URL"),
        ("ftp://example.invalid/hook", "must be an http:// or https:// URL"),
        ("javascript:alert(1)", "must be an http:// or https:// URL"),
        ("http:///no-host/SECRET-TOKEN", "has no host name"),
        ("http://[::1/SECRET-TOKEN", "is not a valid URL (bad host or port)"),
        ("http://127.0.0.1:notaport/SECRET-TOKEN", "is not a valid URL (bad host or port)"),
        ("http://127.0.0.1:99999/SECRET-TOKEN", "is not a valid URL (bad host or port)"),
        ("https://user:SECRET-TOKEN@", "has no host name"),
        ("http://127.0.0.1/hook with spaces/SECRET-TOKEN", "contains spaces or control characters (percent-encode them)"),
        ("http://127.0.0.1/\x7fSECRET-TOKEN", "contains spaces or control characters (percent-encode them)"),
        ("http://u:%ffSECRET-TOKEN@h.example/x", "user or password is not valid percent-encoded UTF-8"),
    ],
)
def test_a_bad_webhook_is_one_line_without_its_secret(conn: psycopg.Connection, url: str, problem: str) -> None:
    target, post_url, auth, said = conn.execute(
        "SELECT * FROM deenroll.de_enrollment_webhook_parts(%s)", (url,)
    ).fetchone()
    assert (target, post_url, auth) == (None, None, None)
    assert said.endswith(problem) and "SECRET" not in said and "\n" not in said


def test_a_webhook_is_shown_as_scheme_and_host_and_its_credentials_become_basic_auth(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        """SELECT p.* FROM unnest(%s::text[]) WITH ORDINALITY AS u (url, n),
                  deenroll.de_enrollment_webhook_parts(u.url) AS p ORDER BY u.n""",
        (["HTTPS://Hooks.Example.COM:8443/T0/SECRET-TOKEN?token=QueryTok3n#frag",
          "http://hook%40user:Pa55%3Aw0rd@[::1]:8080/x"],),
    ).fetchall()
    assert rows[0] == ("https://hooks.example.com:8443", "https://Hooks.Example.COM:8443/T0/SECRET-TOKEN?token=QueryTok3n",
                       None, None)
    assert rows[1][:2] == ("http://[::1]:8080", "http://[::1]:8080/x")
    assert rows[1][2] == "Basic " + __import__("base64").b64encode(b"hook@user:Pa55:w0rd").decode()
