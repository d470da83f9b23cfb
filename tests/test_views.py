"""The health and analyst views on real rows: thresholds, reasons, drift, duplicates, grants."""

from __future__ import annotations

import psycopg
import pytest

from deenroll import sqlfiles
from deenroll.database import Target
from deenroll.migrate import commands

from conftest import add_campaign, add_leads, add_run, new_id

VIEWS = sorted(d.name for d in sqlfiles.definitions() if d.kind == "view")  # every view file of ours


def health_rows(conn) -> dict[str, dict]:
    cur = conn.execute("SELECT * FROM de_enrollment_health")
    names = [d.name for d in cur.description]
    return {str(r[0]): dict(zip(names, r)) for r in cur.fetchall()}


def test_health_status_follows_the_sop_thresholds(conn) -> None:
    c = {name: new_id() for name in (
        "ok", "low_rate", "many_failed", "stale", "never_old", "never_new", "stuck_warn", "stuck_err",
        "dead_run", "inactive_only", "slow", "runs_only")}
    for name, client in c.items():
        if name == "runs_only":
            continue
        age = "10 minutes" if name == "never_new" else "3 days"
        add_campaign(conn, client, age=age, active=name != "inactive_only")
    add_run(conn, c["ok"], "success", count=4)
    add_run(conn, c["low_rate"], "success", count=3)
    add_run(conn, c["low_rate"], "failed", "30 minutes")
    add_run(conn, c["many_failed"], "success", count=120)
    add_run(conn, c["many_failed"], "failed", count=6)
    add_run(conn, c["stale"], "success", "3 hours")
    camp = add_campaign(conn, c["stuck_warn"], messages=3)
    add_leads(conn, camp, c["stuck_warn"], 150, position=3)
    add_run(conn, c["stuck_warn"], "success")
    camp = add_campaign(conn, c["stuck_err"], messages=3)
    add_leads(conn, camp, c["stuck_err"], 300, position=5)
    add_leads(conn, camp, c["stuck_err"], 201, position=1, opted_out=True)
    add_run(conn, c["stuck_err"], "success")
    add_run(conn, c["dead_run"], "success", "20 minutes")
    add_run(conn, c["dead_run"], "running", "5 minutes", duration_ms=None, max_runtime_ms=1000)  # died
    add_run(conn, c["dead_run"], "running", "1 minute", duration_ms=None)  # within 2 x 240 s
    add_run(conn, c["slow"], "success", duration_ms=300_000, count=2)
    add_run(conn, c["runs_only"], "failed")

    h = health_rows(conn)
    assert set(h) == set(c.values())
    status = {name: h[client]["status"] for name, client in c.items()}
    assert status == {
        "ok": "ok", "low_rate": "warning", "many_failed": "warning", "stale": "error", "never_old": "error",
        "never_new": "ok", "stuck_warn": "warning", "stuck_err": "error", "dead_run": "warning",
        "inactive_only": "ok", "slow": "warning", "runs_only": "warning",
    }
    assert h[c["ok"]]["status_reasons"] == [] and h[c["ok"]]["success_rate_24h"] == 100
    assert h[c["low_rate"]]["success_rate_24h"] == 75 and h[c["low_rate"]]["failed_runs_24h"] == 1
    assert h[c["low_rate"]]["status_reasons"] == ["success rate 75.0% in 24 h (minimum 95%)"]
    assert h[c["many_failed"]]["status_reasons"] == ["6 failed runs in 24 h (limit 5)"]  # 95.2 % is fine
    assert 2.9 < h[c["stale"]]["hours_since_success"] < 3.1
    assert h[c["stale"]]["status_reasons"][0].startswith("no successful run for 3.0 h")
    assert h[c["never_old"]]["last_success_at"] is None and h[c["never_old"]]["hours_since_success"] > 70
    assert "no successful run ever" in h[c["never_old"]]["status_reasons"][0]
    assert h[c["stuck_warn"]]["stuck_leads"] == 150
    assert h[c["stuck_warn"]]["status_reasons"] == ["150 stuck leads (limit 100)"]
    assert h[c["stuck_err"]]["status_reasons"] == ["501 stuck leads (limit 500)"]
    dead = h[c["dead_run"]]
    assert (dead["runs_24h"], dead["failed_runs_24h"], dead["successful_runs_24h"]) == (3, 1, 1)
    assert dead["success_rate_24h"] == 50  # the live run is not finished, the dead one failed
    assert h[c["slow"]]["avg_duration_ms_24h"] == 300_000
    assert h[c["slow"]]["status_reasons"] == ["average run 300.0 s in 24 h (limit 240 s)"]
    # no campaign: the 2-hour rule does not apply, the failure does
    assert h[c["runs_only"]]["status_reasons"] == ["success rate 0.0% in 24 h (minimum 95%)"]

    # The SOP's morning query lists exactly the failing and the stale clients.
    listed = {
        str(r[0])
        for r in conn.execute(
            """SELECT client_id, failed_runs_24h, hours_since_success FROM de_enrollment_health
                WHERE failed_runs_24h > 0 OR hours_since_success > 2"""
        )
    }
    expected = {c[n] for n in ("low_rate", "many_failed", "stale", "never_old", "dead_run", "runs_only")}
    # inactive_only has no active campaign but was seen 3 days ago: listed by hours, status ok
    expected.add(c["inactive_only"])
    assert listed == expected


def test_error_beats_warning_and_reasons_list_both(conn) -> None:
    client = new_id()
    camp = add_campaign(conn, client)
    add_leads(conn, camp, client, 120, position=3)
    add_run(conn, client, "failed", "1 hour", count=6)
    add_run(conn, client, "success", "5 hours")
    row = health_rows(conn)[client]
    assert row["status"] == "error"
    reasons = row["status_reasons"]
    assert reasons[0].startswith("no successful run for 5.0 h")
    assert "6 failed runs in 24 h (limit 5)" in reasons and "120 stuck leads (limit 100)" in reasons


def test_stuck_leads_reasons(conn) -> None:
    client = new_id()
    camp = add_campaign(conn, client, messages=3)
    finished = add_leads(conn, camp, client, 2, position=3)
    beyond = add_leads(conn, camp, client, 1, position=7)
    stopped = add_leads(conn, camp, client, 1, position=1, opted_out=True)
    both = add_leads(conn, camp, client, 1, position=3, opted_out=True)
    odd_stop = add_leads(conn, camp, client, 1, position=3, opted_out=True, completed=True)
    add_leads(conn, camp, client, 1, position=3, active=False)  # already de-enrolled
    add_leads(conn, camp, client, 1, position=3, completed=True)  # completed, not stuck
    add_leads(conn, camp, client, 1, position=2)  # in progress
    bad = add_campaign(conn, client, raw_messages='{"not": "an array"}')
    add_leads(conn, bad, client, 1, position=9)  # no length: never "finished"
    bad_stop = add_leads(conn, bad, client, 1, position=0, opted_out=True)
    conn.execute("INSERT INTO leads (client_id, is_active, opted_out, current_message_position) VALUES (%s, true, true, 9)",
                 (client,))  # no campaign at all

    rows = conn.execute(
        "SELECT lead_id::text, reason, messages_received, total_messages FROM de_enrollment_stuck_leads"
    ).fetchall()
    got = {r[0]: r[1] for r in rows}
    assert len(rows) == len(got)  # nobody twice
    assert got == {
        **{i: "sequence_finished" for i in finished + beyond + both},
        **{i: "opted_out" for i in stopped + odd_stop + bad_stop},
    }
    totals = {r[0]: r[3] for r in rows}
    assert totals[bad_stop[0]] is None and totals[stopped[0]] == 3


def test_stats_drift_lists_stored_and_actual_and_tells_lag_from_drift(conn) -> None:
    client = new_id()
    camp = add_campaign(conn, client)
    add_leads(conn, camp, client, 5, position=1)
    add_leads(conn, camp, client, 2, position=1, opted_out=True)
    # The triggers recorded deltas that nobody folded yet: a lag.
    (row,) = conn.execute(
        """SELECT stored_active, actual_active, stored_opted_out, actual_opted_out, pending_deltas, pending_explains,
                  max_difference FROM campaign_stats_drift WHERE campaign_id = %s""",
        (camp,),
    ).fetchall()
    assert row == (0, 5, 0, 2, 2, True, 5)  # one delta row per INSERT statement
    conn.execute("SELECT apply_campaign_stats_deltas()")
    assert conn.execute("SELECT count(*) FROM campaign_stats_drift").fetchone()[0] == 0
    # A counter written by hand: real drift.
    conn.execute("UPDATE campaigns SET booked_count = 4, completed_leads_count = 1 WHERE id = %s", (camp,))
    (row,) = conn.execute(
        """SELECT stored_booked, actual_booked, stored_completed, actual_completed, pending_explains, max_difference
             FROM campaign_stats_drift"""
    ).fetchall()
    assert row == (4, 0, 1, 0, False, 4)
    conn.execute("SELECT * FROM recalculate_campaign_stats(NULL)")
    assert conn.execute("SELECT count(*) FROM campaign_stats_drift").fetchone()[0] == 0


def test_duplicates_view_finds_both_kinds_and_nothing_else(conn) -> None:
    client = new_id()
    camp, other = add_campaign(conn, client), add_campaign(conn, client)
    lead, fine = add_leads(conn, camp, client, 2, position=3, active=False)
    run = conn.execute("INSERT INTO de_enrollment_runs (client_id, status) VALUES (%s, 'success') RETURNING id",
                       (client,)).fetchone()[0]
    log = """INSERT INTO de_enrollment_lead_log (run_id, lead_id, client_id, campaign_id, outcome)
             VALUES (%s, %s, %s, %s, %s)"""
    # A lead de-enrolled from two different campaigns, and error rows: not duplicates.
    conn.execute(log, (run, fine, client, camp, "completed"))
    conn.execute(log, (run, fine, client, other, "completed"))
    conn.execute(log, (run, fine, client, camp, "error"))
    conn.execute(log, (run, fine, client, camp, "error"))
    assert conn.execute("SELECT count(*) FROM de_enrollment_duplicates").fetchone()[0] == 0
    # Bypass the guards (as rows older than them, or a hand edit, would).
    conn.execute("DROP INDEX de_enrollment_lead_log_once_per_campaign_idx")
    conn.execute("ALTER TABLE leads DROP CONSTRAINT leads_campaign_history_one_entry_per_campaign")
    conn.execute(log, (run, lead, client, camp, "completed"))
    conn.execute(log, (run, lead, client, camp, "opted_out"))
    entry = f'{{"campaign_id": "{camp}", "run_id": "{run}", "de_enrolled_at": "2024-11-04T10:00:00Z"}}'
    conn.execute("UPDATE leads SET campaign_history = %s::jsonb WHERE id = %s", (f"[{entry}, {entry}]", lead))
    rows = conn.execute(
        "SELECT kind, lead_id::text, campaign_id::text, occurrences, run_ids FROM de_enrollment_duplicates ORDER BY kind"
    ).fetchall()
    assert [(k, l, c, n) for k, l, c, n, _ in rows] == [
        ("campaign_history", lead, camp, 2),
        ("lead_log", lead, camp, 2),
    ]
    assert all([str(x) for x in r[4]] == [str(run)] * 2 for r in rows)


def test_daily_summary_groups_by_day_and_client(conn) -> None:
    a, b = new_id(), new_id()
    conn.execute("SET TimeZone = 'UTC'")
    runs = [  # client, status, run_at, duration_ms, max_runtime_ms, leads_de_enrolled
        (a, "success", "2024-11-04 10:00Z", 1000, None, 10),
        (a, "success", "2024-11-04 10:15Z", 1000, None, 10),
        (a, "failed", "2024-11-04 10:30Z", 4000, None, 0),
        (a, "running", "2024-11-04 10:45Z", None, 1000, 0),  # never finished: died, counts as failed
        (a, "success", "2024-11-05 00:15Z", 1000, None, 7),
        (b, "partial", "2024-11-04 23:59Z", 240000, None, 100),
    ]
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO de_enrollment_runs (client_id, status, run_at, duration_ms, max_runtime_ms, leads_de_enrolled)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            runs,
        )
    rows = conn.execute(
        """SELECT day::text, client_id::text, runs, successful_runs, failed_runs, partial_runs, running_runs,
                  success_rate, leads_de_enrolled, avg_duration_ms, max_duration_ms
             FROM de_enrollment_daily_summary ORDER BY day, client_id"""
    ).fetchall()
    by_key = {(r[0], r[1]): r[2:] for r in rows}
    assert by_key == {
        ("2024-11-04", a): (4, 2, 2, 0, 0, 50, 20, 2000, 4000),
        ("2024-11-04", b): (1, 0, 0, 1, 0, 0, 100, 240000, 240000),
        ("2024-11-05", a): (1, 1, 0, 0, 0, 100, 7, 1000, 1000),
    }


def test_every_view_and_column_is_documented(conn) -> None:
    for view in VIEWS:
        assert conn.execute("SELECT obj_description(%s::regclass, 'pg_class')", (view,)).fetchone()[0], view
        missing = conn.execute(
            """SELECT a.attname FROM pg_attribute a
                WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
                  AND col_description(a.attrelid, a.attnum) IS NULL""",
            (view,),
        ).fetchall()
        assert missing == [], (view, missing)


def test_analyst_role_reads_the_views_and_nothing_else(conn) -> None:
    conn.execute("SET ROLE deenroll_analyst")
    try:
        for view in VIEWS:
            conn.execute(f"SELECT * FROM {view} LIMIT 1").fetchall()
        conn.execute(
            "SELECT client_id, failed_runs_24h, hours_since_success FROM de_enrollment_health "
            "WHERE failed_runs_24h > 0 OR hours_since_success > 2"
        ).fetchall()
        for table in ("leads", "campaigns", "de_enrollment_runs", "de_enrollment_lead_log", "campaign_stats_delta"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1")
    finally:
        conn.execute("RESET ROLE")
    for view in VIEWS:
        assert conn.execute(
            "SELECT has_table_privilege('deenroll_analyst', %s, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')",
            (view,),
        ).fetchone() == (False,)
    assert conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'deenroll_analyst'").fetchone() == (False,)


def _analyst_grants(conn) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            """SELECT DISTINCT c.relname FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
                WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = 'deenroll_analyst') ORDER BY 1"""
        )
    ]


def test_recreated_view_keeps_its_grant_and_rollback_revokes_all(db_url: str, conn) -> None:
    target = Target(db_url, "test")
    assert _analyst_grants(conn) == sorted(VIEWS)
    # migrate re-creates a dropped (or changed) view: its file grants again.
    conn.execute("DROP VIEW de_enrollment_health")
    commands.migrate(target)
    assert _analyst_grants(conn) == sorted(VIEWS)

    commands.rollback(target, "0021_add_de_enrollment_monitoring")
    assert _analyst_grants(conn) == []
    assert conn.execute("SELECT to_regproc('grant_analyst_select')").fetchone()[0] is None
    # Other databases of this server (the test template) still use the role: it stays.
    assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'deenroll_analyst'").fetchone()[0] == 1
    # Views re-created while 0022 is not applied get no grant, although the role exists.
    conn.execute("DROP VIEW campaign_stats_drift")
    commands.migrate(target, to="0021_add_de_enrollment_monitoring")
    assert _analyst_grants(conn) == []

    commands.migrate(target)
    assert _analyst_grants(conn) == sorted(VIEWS)


def test_views_take_the_largest_budget_without_overflow(conn) -> None:
    """A run still running with the largest budget the runner accepts (2^31 - 1 ms) is read, not an error."""
    client = new_id()
    add_campaign(conn, client)
    conn.execute(
        "INSERT INTO de_enrollment_runs (client_id, status, max_runtime_ms, run_at) VALUES (%s, 'running', 2147483647, now())",
        (client,),
    )
    health = conn.execute("SELECT runs_24h, failed_runs_24h FROM de_enrollment_health WHERE client_id = %s", (client,)).fetchone()
    daily = conn.execute("SELECT running_runs FROM de_enrollment_daily_summary WHERE client_id = %s", (client,)).fetchone()
    assert health == (1, 0) and daily == (1,)  # within its budget: still running, not failed
