"""A run's data and exit status do not depend on its webhook: real runs, real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from webhooks import Trickle, Webhook

CLIENT = "00000000-0000-4000-8000-00000000c0de"


def partial_dataset(conn: psycopg.Connection) -> set[str]:
    """One client whose run is partial (a campaign with an invalid messages value); the ids the run de-enrolls."""
    good, bad = str(uuid.uuid4()), str(uuid.uuid4())
    conn.execute(
        "INSERT INTO campaigns (id, client_id, name, messages) VALUES (%s, %s, 'two steps', '[1, 2]'),"
        " (%s, %s, 'broken one', '\"three steps\"')",
        (good, CLIENT, bad, CLIENT),
    )
    rows = conn.execute(
        """INSERT INTO leads (client_id, campaign_link_id, current_message_position, opted_out)
           VALUES (%(c)s, %(g)s, 2, false), (%(c)s, %(g)s, 2, false), (%(c)s, %(g)s, 0, true),
                  (%(c)s, %(g)s, 0, false), (%(c)s, %(b)s, 7, false)
           RETURNING id, campaign_link_id = %(g)s::uuid AND (current_message_position = 2 OR opted_out)""",
        {"c": CLIENT, "g": good, "b": bad},
    ).fetchall()
    return {str(lead) for lead, due in rows if due}


def outcome(conn: psycopg.Connection) -> tuple[set[str], list[str]]:
    logged = {str(r[0]) for r in conn.execute("SELECT lead_id FROM de_enrollment_lead_log").fetchall()}
    runs = [r[0] for r in conn.execute("SELECT status FROM de_enrollment_runs ORDER BY id").fetchall()]
    return logged, runs


@pytest.mark.parametrize("case", ["none", "trickle", "redirect", "invalid-url", "invalid-timeout"])
def test_the_webhook_never_changes_a_runs_data_or_exit_status(
    case: str, cli, db_url: str, conn: psycopg.Connection, webhook: Webhook, trickle: Trickle
) -> None:
    due = partial_dataset(conn)
    env = {
        "none": {},
        "trickle": {"DE_ENROLLMENT_ALERT_WEBHOOK": trickle.url, "DE_ENROLLMENT_ALERT_TIMEOUT": "0.5"},
        "redirect": {"DE_ENROLLMENT_ALERT_WEBHOOK": webhook.url},
        "invalid-url": {"DE_ENROLLMENT_ALERT_WEBHOOK": "htp:/SECRET-TOKEN"},
        "invalid-timeout": {"DE_ENROLLMENT_ALERT_WEBHOOK": webhook.url, "DE_ENROLLMENT_ALERT_TIMEOUT": "soon"},
    }[case]
    webhook.status = 302
    res = cli("run", "--json", db=db_url, env=env)
    assert res.code == 1, res.stderr
    assert "Traceback" not in res.stderr and "SECRET" not in res.stderr + res.stdout
    doc = json.loads(res.stdout)
    assert [c["status"] for c in doc["clients"]] == ["partial"]
    assert outcome(conn) == (due, ["partial"])
    alert = doc["alert"]
    expected_error = {
        "none": None,
        "trickle": "timed out after 0.5 s",
        "redirect": "HTTP 302 redirect (not followed)",
        "invalid-url": "DE_ENROLLMENT_ALERT_WEBHOOK must be an http:// or https:// URL",
        "invalid-timeout": "DE_ENROLLMENT_ALERT_TIMEOUT must be a number of seconds greater than 0, not 'soon'",
    }[case]
    assert (alert["attempted"], alert["delivered"], alert["error"]) == (case != "none", False, expected_error)
    warnings = [line for line in res.stderr.splitlines() if "alert NOT delivered" in line]
    assert len(warnings) == (0 if case == "none" else 1)
    if case != "none":
        assert warnings[0].endswith(expected_error)
    assert [r["method"] for r in webhook.received] == (["POST"] if case == "redirect" else [])
