"""The operations commands through the real `deenroll` script: exit codes, output, JSON, webhook, changes."""

from __future__ import annotations

import json
from datetime import datetime

import psycopg
import pytest

from deenroll import dataset, paths
from conftest import add_campaign, add_leads, add_run, new_id
from webhooks import Webhook, closed_port_url

# --------------------------------------------------------------------------- helpers


def one_line_error(res) -> None:
    assert res.code == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len([l for l in lines if l.startswith("deenroll: error:")]) == 1, res.stderr
    assert "Traceback" not in res.stderr


def snapshot(conn) -> tuple:
    """Everything these commands could change."""
    return (
        conn.execute("SELECT md5(string_agg(l::text, ',' ORDER BY id)) FROM leads l").fetchone()[0],
        conn.execute("SELECT md5(string_agg(c::text, ',' ORDER BY id)) FROM campaigns c").fetchone()[0],
        conn.execute("SELECT md5(string_agg(r::text, ',' ORDER BY id)) FROM de_enrollment_runs r").fetchone()[0],
        conn.execute("SELECT count(*) FROM de_enrollment_lead_log").fetchone()[0],
        conn.execute("SELECT count(*) FROM pg_class WHERE relname ~ '_backup_|_archive$'").fetchone()[0],
    )


# --------------------------------------------------------------------------- health-check


def test_health_check_exit_codes_and_sop_lines(db_url, conn, cli) -> None:
    res = cli("health-check", db=db_url)
    assert res.code == 0 and "no clients" in res.stdout

    good = new_id()
    add_campaign(conn, good)
    add_run(conn, good, "success", count=4)
    res = cli("health-check", db=db_url)
    assert res.code == 0, res.stderr
    assert f"✅ Client {good} OK" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "✅ All clients processed successfully in last 24h"

    flaky = new_id()
    add_campaign(conn, flaky)
    add_run(conn, flaky, "success", count=3)
    add_run(conn, flaky, "failed", count=3)
    res = cli("health-check", db=db_url)
    assert res.code == 1
    assert f"⚠️ Client {flaky} WARNING: success rate 50.0% in 24 h (minimum 95%)" in res.stdout

    stale = new_id()
    add_campaign(conn, stale)
    add_run(conn, stale, "success", "25 hours")
    res = cli("health-check", db=db_url)
    assert res.code == 2
    lines = res.stdout.strip().splitlines()
    assert lines[0] == f"❌ Client {stale} ERROR: no successful run for 25.0 h (limit 2 h)"  # errors first
    assert lines[-1] == "❌ 3 clients: 1 ok, 1 warning, 1 error"
    assert "alert" not in res.stderr  # no webhook configured


def test_health_check_json_document(db_url, conn, cli) -> None:
    ok, bad = new_id(), new_id()
    add_campaign(conn, ok)
    add_run(conn, ok, "success", de_enrolled=12)
    camp = add_campaign(conn, bad)
    add_leads(conn, camp, bad, 600, position=3)
    res = cli("health-check", "--json", db=db_url)
    assert res.code == 2
    doc = json.loads(res.stdout)
    assert doc["status"] == "error" and doc["exit_code"] == 2
    assert doc["counts"] == {"ok": 1, "warning": 0, "error": 1}
    assert doc["alert"] == {"attempted": False, "delivered": False, "target": None, "http_status": None, "error": None}
    by_id = {c["client_id"]: c for c in doc["clients"]}
    assert by_id[ok]["leads_de_enrolled_24h"] == 12 and by_id[ok]["status_reasons"] == []
    assert by_id[bad]["stuck_leads"] == 600
    assert by_id[bad]["status_reasons"][-1] == "600 stuck leads (limit 500)"
    assert set(by_id[ok]) >= {
        "runs_24h", "successful_runs_24h", "failed_runs_24h", "partial_runs_24h", "success_rate_24h",
        "last_run_at", "last_success_at", "hours_since_success", "avg_duration_ms_24h", "status",
    }


def test_health_check_posts_an_alert_when_a_client_is_in_error(db_url, conn, cli, webhook: Webhook) -> None:
    url, received = webhook.url, webhook.received
    warn = new_id()
    add_campaign(conn, warn)
    add_run(conn, warn, "success")
    add_run(conn, warn, "failed")
    res = cli("health-check", db=db_url, env={"DE_ENROLLMENT_ALERT_WEBHOOK": url})
    assert res.code == 1 and received == []  # warnings do not page anyone

    dead = new_id()
    add_campaign(conn, dead)
    res = cli("health-check", "--json", db=db_url, env={"DE_ENROLLMENT_ALERT_WEBHOOK": url})
    assert res.code == 2
    assert len(received) == 1
    path, ctype, doc = received[0]["path"], received[0]["content_type"], received[0]["body"]
    assert path == "/hooks/T0/SECRET-TOKEN" and ctype == "application/json"
    assert doc["kind"] == "health-check" and doc["source"] == "deenroll"
    assert [c["client_id"] for c in doc["details"]["clients"]] == [dead]
    assert "no successful run ever" in doc["text"]
    assert json.loads(res.stdout)["alert"]["delivered"] is True
    assert "alert delivered" in res.stderr and "SECRET-TOKEN" not in res.stderr


def test_a_webhook_that_is_down_is_reported_and_changes_no_exit_code(db_url, conn, cli) -> None:
    dead = new_id()
    add_campaign(conn, dead)
    res = cli("health-check", db=db_url, env={"DE_ENROLLMENT_ALERT_WEBHOOK": closed_port_url()})
    assert res.code == 2
    assert "warning: alert NOT delivered" in res.stderr
    assert f"❌ Client {dead} ERROR" in res.stdout


# --------------------------------------------------------------------------- stuck


def test_stuck_lists_and_counts(db_url, conn, cli) -> None:
    client = new_id()
    camp = add_campaign(conn, client, messages=2)
    finished = add_leads(conn, camp, client, 3, position=2)
    add_leads(conn, camp, client, 1, position=0, opted_out=True)
    res = cli("stuck", "--limit", "2", db=db_url)
    assert res.code == 0
    assert res.stdout.splitlines()[0] == "stuck leads: 4 (1 opted_out, 3 sequence_finished)"
    assert "... 2 more (--limit)" in res.stdout
    res = cli("stuck", "--json", "--client-id", client, db=db_url)
    doc = json.loads(res.stdout)
    assert doc["count"] == 4 and doc["by_reason"] == {"opted_out": 1, "sequence_finished": 3}
    assert {l["lead_id"] for l in doc["leads"] if l["reason"] == "sequence_finished"} == set(finished)
    res = cli("stuck", "--json", "--client-id", new_id(), db=db_url)
    assert json.loads(res.stdout)["count"] == 0
    one_line_error(cli("stuck", "--client-id", "not-a-uuid", db=db_url))
    one_line_error(cli("stuck", "--limit", "-1", db=db_url))


def test_stuck_shows_held_leads_with_their_error_and_how_to_release_them(db_url, conn, cli) -> None:
    client = new_id()
    camp = add_campaign(conn, client, messages=2)
    refused, fine = add_leads(conn, camp, client, 2, position=2)
    conn.execute(
        """CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $t$
           BEGIN
               IF NEW.id = %s::uuid AND NOT NEW.is_active THEN RAISE EXCEPTION 'lead kept by the platform'; END IF;
               RETURN NEW;
           END $t$""".replace("%s", f"'{refused}'")
    )
    conn.execute("CREATE TRIGGER refuse_one BEFORE UPDATE ON leads FOR EACH ROW EXECUTE FUNCTION refuse_one()")
    assert cli("run", db=db_url).code == 1  # a held lead asks for attention
    res = cli("stuck", db=db_url)
    assert res.code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "stuck leads: 1 (1 held:refused_by_trigger)"
    assert refused in lines[1] and "held:refused_by_trigger" in lines[1]
    assert lines[2] == "      error: lead kept by the platform"
    assert "de_enrollment_release_held_leads(" in res.stderr and "retried once the lead or its campaign changes" in res.stderr
    assert "the next `deenroll run`" not in res.stderr  # nothing is waiting for a run
    doc = json.loads(cli("stuck", "--json", db=db_url).stdout)
    assert doc["held"] == 1 and doc["leads"][0]["error_message"] == "lead kept by the platform"
    # released by the operator once the cause is gone: the next run de-enrolls it
    conn.execute("DROP TRIGGER refuse_one ON leads")
    assert conn.execute("SELECT de_enrollment_release_held_leads(%s::uuid)", (client,)).fetchone()[0] == 1
    assert cli("run", db=db_url).code == 0
    assert json.loads(cli("stuck", "--json", db=db_url).stdout)["count"] == 0
    assert conn.execute("SELECT count(*) FROM leads WHERE id = ANY (%s::uuid[]) AND is_active", ([refused, fine],)).fetchone()[0] == 0


def test_stuck_reports_leads_in_a_campaign_of_another_client_or_of_none(db_url, conn, cli) -> None:
    mine, theirs = new_id(), new_id()
    conn.execute("ALTER TABLE campaigns ALTER COLUMN client_id DROP NOT NULL")
    own = add_campaign(conn, mine, messages=3)
    foreign = add_campaign(conn, theirs, messages=3)
    orphan = add_campaign(conn, theirs, messages=3)
    conn.execute("UPDATE campaigns SET client_id = NULL WHERE id = %s", (orphan,))
    add_leads(conn, own, mine, 4, position=1)  # ordinary links: not reported
    add_leads(conn, foreign, theirs, 2, position=1)
    guests = add_leads(conn, foreign, mine, 2, position=1)  # not due: only the link is news
    strays = add_leads(conn, orphan, mine, 1, position=0, opted_out=True)
    add_leads(conn, foreign, mine, 3, position=3, active=False, completed=True)  # done: not reported
    conn.execute("UPDATE leads SET completed_at = now() WHERE id = %s", (guests[1],))
    conn.execute("UPDATE leads SET opted_out = true WHERE id = %s", (guests[1],))  # active, completed, STOP
    res = cli("stuck", db=db_url)
    assert res.code == 0, res.stderr
    line = next(l for l in res.stdout.splitlines() if l.startswith("leads in a campaign of another client"))
    assert line == "leads in a campaign of another client or of none: 3 (2 campaign_of_another_client, 1 campaign_without_client)"
    assert f"{strays[0]}  client {mine}  campaign" in res.stdout and "of no client" in res.stdout
    assert f"of client {theirs}" in res.stdout
    assert "de-enrolled under their own client" in res.stderr
    doc = json.loads(cli("stuck", "--json", "--client-id", mine, db=db_url).stdout)
    assert doc["campaign_links"]["count"] == 3
    assert {l["lead_id"] for l in doc["campaign_links"]["leads"]} == set(guests + strays)
    assert {l["link"] for l in doc["campaign_links"]["leads"] if l["lead_id"] in guests} == {"campaign_of_another_client"}
    assert json.loads(cli("stuck", "--json", "--client-id", theirs, db=db_url).stdout)["campaign_links"]["count"] == 0
    # the view agrees with a plain join over every lead (what it saves is the scan)
    plain = conn.execute(
        """SELECT l.id::text FROM leads l JOIN campaigns c ON c.id = l.campaign_link_id
            WHERE l.is_active AND (l.completed_at IS NULL OR l.opted_out)
              AND c.client_id IS DISTINCT FROM l.client_id"""
    ).fetchall()
    assert {r[0] for r in plain} == set(guests + strays)
    doc = json.loads(cli("stuck", "--json", "--limit", "1", db=db_url).stdout)
    assert doc["campaign_links"]["count"] == 3 and len(doc["campaign_links"]["leads"]) == 1


# --------------------------------------------------------------------------- stats


def test_stats_drift_exit_code_and_recalculate_repairs(db_url, conn, cli) -> None:
    a, b = new_id(), new_id()
    camp_a, camp_b = add_campaign(conn, a), add_campaign(conn, b)
    add_leads(conn, camp_a, a, 4, position=1)
    add_leads(conn, camp_b, b, 2, position=1)
    conn.execute("SELECT apply_campaign_stats_deltas()")
    assert cli("stats", "drift", db=db_url).code == 0
    conn.execute("UPDATE campaigns SET active_leads_count = active_leads_count + 7")  # both drift

    res = cli("stats", "drift", db=db_url)
    assert res.code == 1
    assert f"campaign {camp_a}" in res.stdout and "active 11 stored / 4 actual" in res.stdout
    doc = json.loads(cli("stats", "drift", "--json", db=db_url).stdout)
    assert doc["count"] == 2 and {c["max_difference"] for c in doc["campaigns"]} == {7}

    before = snapshot(conn)
    one_line_error(cli("stats", "recalculate", "--client-id", "12345", db=db_url))
    one_line_error(cli("stats", "recalculate", "--client-id", new_id(), db=db_url))  # no campaigns
    assert snapshot(conn) == before

    res = cli("stats", "recalculate", "--client-id", a, db=db_url)
    assert res.code == 0
    assert f"campaign {camp_a}" in res.stdout and "active_leads_count 11 -> 4" in res.stdout
    assert str(camp_b) not in res.stdout
    assert "1 campaign(s) corrected" in res.stdout
    res = cli("stats", "drift", "--json", db=db_url)
    assert res.code == 1 and [c["campaign_id"] for c in json.loads(res.stdout)["campaigns"]] == [camp_b]
    res = cli("stats", "recalculate", "--json", db=db_url)
    assert [c["campaign_id"] for c in json.loads(res.stdout)["changed"]] == [camp_b]
    assert cli("stats", "drift", db=db_url).code == 0


# --------------------------------------------------------------------------- backup


def _lead_state(conn) -> list[tuple]:
    return conn.execute(
        "SELECT id, is_active, completed_at, campaign_history FROM leads ORDER BY id"
    ).fetchall()


def _load(db_url: str, leads: int = 3000) -> dataset.DatasetInfo:
    with psycopg.connect(db_url) as c:
        info = dataset.build_dataset(c, 3, 6, leads, 0.2, seed="ops", tag="ops")
        c.commit()
    return info


def test_backup_create_list_restore_round_trip(db_url, conn, cli) -> None:
    info = _load(db_url)
    before = _lead_state(conn)
    counters = conn.execute("SELECT id, active_leads_count, completed_leads_count FROM campaigns ORDER BY id").fetchall()

    res = cli("backup", "create", "--date", "20241104", db=db_url)
    assert res.code == 0, res.stderr
    assert res.stdout.splitlines() == [
        "leads_backup_20241104: 3000 rows (= leads, verified)",
        "campaigns_backup_20241104: 6 rows (= campaigns, verified)",
    ]
    state = snapshot(conn)
    one_line_error(cli("backup", "create", "--date", "20241104", db=db_url))  # exists
    one_line_error(cli("backup", "create", "--date", "2024-11-04", db=db_url))
    one_line_error(cli("backup", "create", "--date", "20241332", db=db_url))
    one_line_error(cli("backup", "restore", "--date", "20241105", db=db_url))  # missing
    assert snapshot(conn) == state

    res = cli("backup", "list", "--json", db=db_url)
    (entry,) = json.loads(res.stdout)["backups"]
    assert entry["date"] == "20241104" and entry["complete"]
    assert entry["leads"]["rows"] == 3000 and entry["campaigns"]["rows"] == 6

    run = cli("run", db=db_url)
    assert run.code == 0, run.stdout + run.stderr
    assert _lead_state(conn) != before
    # the platform keeps working: a new lead arrives after the backup
    camp = conn.execute("SELECT id, client_id FROM campaigns ORDER BY id LIMIT 1").fetchone()
    add_leads(conn, camp[0], camp[1], 1, position=0)

    res = cli("backup", "restore", "--date", "20241104", db=db_url)
    assert res.code == 0, res.stderr
    de_enrolled = info.eligible
    assert f"leads <- leads_backup_20241104: {de_enrolled} rows changed, 3000 of 3000 backup rows matched" in res.stdout
    assert "columns: is_active, completed_at, campaign_history; verified" in res.stdout
    assert [r for r in _lead_state(conn) if r[0] in {b[0] for b in before}] == before
    # counters: exact for the leads as they are now (the backup's would miss the new lead)
    assert conn.execute("SELECT count(*) FROM campaign_stats_drift").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM campaign_stats_delta").fetchone()[0] == 0
    after = conn.execute("SELECT id, active_leads_count, completed_leads_count FROM campaigns ORDER BY id").fetchall()
    assert sum(a[1] for a in after) == sum(c[1] for c in counters) + 1


def test_backup_restore_after_rolling_back_every_migration(db_url, conn, cli) -> None:
    _load(db_url, 600)
    assert cli("backup", "create", "--date", "20241104", db=db_url).code == 0
    active_before = conn.execute("SELECT id, is_active FROM leads ORDER BY id").fetchall()
    assert cli("run", db=db_url).code == 0
    res = cli("rollback", "--to", "0018_baseline", db=db_url)
    assert res.code == 0, res.stderr
    res = cli("backup", "restore", "--date", "20241104", db=db_url)
    assert res.code == 0, res.stderr
    # only leads.is_active survives the rollback; restoring it undoes the de-enrollments
    assert "columns: is_active; verified" in res.stdout
    assert "campaigns <- campaigns_backup_20241104: 0 rows changed" in res.stdout and "no common column" in res.stdout
    assert "counters recounted" not in res.stdout
    assert conn.execute("SELECT id, is_active FROM leads ORDER BY id").fetchall() == active_before


# --------------------------------------------------------------------------- maintenance


def _history(conn) -> dict[str, str]:
    client = new_id()
    runs = {}
    for name, age in (("old", "100 days"), ("mid", "50 days"), ("new", "1 day")):
        runs[name] = conn.execute(
            "INSERT INTO de_enrollment_runs (client_id, status, run_at) VALUES (%s, 'success', now() - %s::interval) RETURNING id::text",
            (client, age),
        ).fetchone()[0]
    log = """INSERT INTO de_enrollment_lead_log (run_id, lead_id, client_id, campaign_id, outcome, processed_at)
             VALUES (%s, gen_random_uuid(), %s, gen_random_uuid(), 'completed', now() - %s::interval)"""
    conn.execute(log, (runs["old"], client, "100 days"))
    conn.execute(log, (runs["old"], client, "20 days"))  # younger log of an old run: goes with its run
    conn.execute(log, (runs["mid"], client, "50 days"))
    conn.execute(log, (runs["mid"], client, "10 days"))
    conn.execute(log, (runs["new"], client, "1 day"))
    return runs


def test_maintenance_cleanup_archives_and_deletes_by_window(db_url, conn, cli) -> None:
    runs = _history(conn)
    before = snapshot(conn)
    res = cli("maintenance", "cleanup", "--dry-run", "--json", db=db_url)
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["runs_archived"], doc["lead_logs_deleted"], doc["lead_logs_of_archived_runs"]) == (1, 2, 1)
    assert doc["dry_run"] is True and doc["vacuumed"] == []
    assert snapshot(conn) == before

    res = cli("maintenance", "cleanup", db=db_url)
    assert res.code == 0, res.stderr
    assert "did archive 1 run(s)" in res.stdout and "(created)" in res.stdout
    assert "VACUUM ANALYZE de_enrollment_runs, de_enrollment_lead_log" in res.stdout
    assert {r[0] for r in conn.execute("SELECT id::text FROM de_enrollment_runs")} == {runs["mid"], runs["new"]}
    archived = conn.execute("SELECT id::text, status, archived_at IS NOT NULL FROM de_enrollment_runs_archive").fetchall()
    assert archived == [(runs["old"], "success", True)]
    ages = sorted(r[0].days for r in conn.execute("SELECT now() - processed_at FROM de_enrollment_lead_log"))
    assert ages == [1, 10]

    # Again with tighter windows, into the existing archive.
    res = cli("maintenance", "cleanup", "--runs-days", "40", "--logs-days", "5", "--json", db=db_url)
    doc = json.loads(res.stdout)
    assert (doc["runs_archived"], doc["lead_logs_deleted"], doc["archive_created"]) == (1, 1, False)
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs_archive").fetchone()[0] == 2


@pytest.mark.parametrize(
    "args",
    [
        ("--runs-days", "-1"),
        ("--logs-days", "0"),
        ("--runs-days", "7"),  # shorter than the 30 days of lead logs
        ("--runs-days", "ninety"),
    ],
)
def test_maintenance_cleanup_bad_input_changes_nothing(db_url, conn, cli, args) -> None:
    _history(conn)
    before = snapshot(conn)
    res = cli("maintenance", "cleanup", *args, db=db_url)
    assert res.code == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("deenroll: error:")
    assert snapshot(conn) == before


def test_maintenance_cleanup_defaults_are_the_functions_own(db_url, conn, cli) -> None:
    """The retention a user does not give is not sent: the installed function's defaults decide, and
    --help shows the defaults its file declares."""
    declared = conn.execute(
        "SELECT pg_get_function_arguments('public.archive_de_enrollment_history(integer, integer, boolean)'::regprocedure)"
    ).fetchone()[0]
    assert "p_runs_days integer DEFAULT 90" in declared and "p_logs_days integer DEFAULT 30" in declared
    shown = " ".join(cli("maintenance", "cleanup", "--help").stdout.split())
    assert "[default: 90]" in shown and "[default: 30]" in shown

    # A database whose function keeps other defaults: the cleanup follows them, not the CLI.
    text = (paths.sql_dir("functions") / "archive_de_enrollment_history.sql").read_text()
    conn.execute(text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
                 .replace("p_runs_days integer DEFAULT 90", "p_runs_days integer DEFAULT 91")
                 .replace("p_logs_days integer DEFAULT 30", "p_logs_days integer DEFAULT 31"))
    now = conn.execute("SELECT now()").fetchone()[0]
    doc = json.loads(cli("maintenance", "cleanup", "--dry-run", "--json", db=db_url).stdout)
    days = {k: round((now - datetime.fromisoformat(doc[k])).total_seconds() / 86400) for k in ("runs_cutoff", "logs_cutoff")}
    assert days == {"runs_cutoff": 91, "logs_cutoff": 31}
    doc = json.loads(cli("maintenance", "cleanup", "--dry-run", "--logs-days", "7", "--json", db=db_url).stdout)
    assert round((now - datetime.fromisoformat(doc["logs_cutoff"])).total_seconds() / 86400) == 7
    assert round((now - datetime.fromisoformat(doc["runs_cutoff"])).total_seconds() / 86400) == 91
