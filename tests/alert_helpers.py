"""What the alert tests share: a data set whose run needs attention (a failed client, a partial
one, a held lead), a run of the procedure as pg_cron makes one, the command's document for the
same results, and a login that is only a member of deenroll_runner."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import conninfo

from deenroll import alerts, database
from deenroll.runner.options import RunOptions
from deenroll.runner.report import ClientResult, RunReport, alert_payload, fill
from engine_data import CLIENT_A, CLIENT_B, CLIENT_C, build_dataset, refuse_lead

HOST = "alert-test-host"


def troubled_dataset(conn: psycopg.Connection) -> None:
    """The crafted data set, where client A's run fails (the platform refuses any change to its
    campaigns, so its counters cannot be folded), client C's ends partial (a campaign whose
    messages is not an array) and one lead of client B is held (the platform refuses it)."""
    ds = build_dataset(conn)
    refuse_lead(conn, next(iter(ds.expected_for(CLIENT_B))))
    conn.execute(
        f"""CREATE FUNCTION zz_frozen_campaigns() RETURNS trigger LANGUAGE plpgsql AS $$
              BEGIN RAISE EXCEPTION 'the campaigns of this client are read-only'; END $$;
            CREATE TRIGGER zz_frozen_campaigns BEFORE UPDATE ON campaigns FOR EACH ROW
              WHEN (OLD.client_id = '{CLIENT_A}') EXECUTE FUNCTION zz_frozen_campaigns();"""
    )
    bad = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO campaigns (id, client_id, name, messages) VALUES (%s, %s, 'broken one', '\"three steps\"')",
        (bad, CLIENT_C),
    )
    conn.execute(
        "INSERT INTO leads (client_id, campaign_link_id, current_message_position, opted_out) VALUES (%s, %s, 7, false)",
        (CLIENT_C, bad),
    )


def call_run(url: str) -> dict[str, Any]:
    """One CALL of the run's procedure, as pg_cron makes it; its summary."""
    with psycopg.connect(url, autocommit=True) as conn:
        (summary,) = conn.execute("CALL deenroll.run_de_enrollment()").fetchone()
    return summary


def command_document(url: str, summary: dict[str, Any], host: str = HOST) -> dict[str, Any] | None:
    """The document `deenroll run` on `host` posts for these results: its clients filled from
    the procedure's summary as the runner fills them, then its own payload."""
    report = RunReport(RunOptions(None, 100, 240000), datetime.now(timezone.utc))
    for client in summary["clients"]:
        result = ClientResult(client["client_id"])
        fill(result, client)
        report.clients.append(result)
    report.fold_error = summary.get("fold_error")
    return alerts.run_document(database.Target(url, "test"), alert_payload(report), host)


def without_time(document: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The document without sent_at (and the other top-level keys named)."""
    return {k: v for k, v in document.items() if k not in ("sent_at", *keys)}


@contextmanager
def runner_login(admin_url: str) -> Iterator[str]:
    """A URL of a login whose only right is membership of deenroll_runner."""
    name = f"deenroll_t_alert_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE deenroll_runner")
    try:
        yield conninfo.make_conninfo(admin_url, user=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            conn.execute(f"DROP OWNED BY {name}")
            conn.execute(f"DROP ROLE {name}")
