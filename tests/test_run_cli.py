"""`deenroll run` end to end: the real console script in a subprocess, on a real PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest

from webhooks import Webhook, closed_port_url
from engine_data import (
    CLIENT_A,
    CLIENT_B,
    CLIENT_C,
    CLIENT_D,
    assert_exactly_once,
    build_dataset,
    refuse_lead,
    de_enrolled,
    recount,
    stored,
)

CLIENT_KEYS = {
    "client_id", "run_id", "status", "leads_evaluated", "leads_de_enrolled", "completed", "opted_out",
    "batches", "duration_ms", "error", "invalid_campaigns", "warnings", "leads_held", "held", "newly_held",
}
TOTAL_KEYS = {
    "clients", "success", "partial", "failed", "skipped", "leads_evaluated", "leads_de_enrolled",
    "completed", "opted_out", "batches", "leads_held",
}


def run_json(cli, db_url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    res = cli("run", "--json", *args, db=db_url, env=env)
    assert res.stdout.strip(), res.stderr
    return res.code, json.loads(res.stdout), res.stderr


def by_client(doc: dict) -> dict[str, dict]:
    return {c["client_id"]: c for c in doc["clients"]}


def run_rows(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM de_enrollment_runs").fetchone()[0]


def add_invalid_campaign(conn: psycopg.Connection, client: str, ds=None) -> str:
    """A campaign whose messages is a string: its waiting lead stays; its opted-out lead leaves (added to ds)."""
    bad = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO campaigns (id, client_id, name, messages) VALUES (%s, %s, 'broken one', '\"three steps\"')",
        (bad, client),
    )
    conn.execute(
        "INSERT INTO leads (client_id, campaign_link_id, current_message_position, opted_out) VALUES (%s, %s, 7, false)",
        (client, bad),
    )
    stop = str(conn.execute(
        "INSERT INTO leads (client_id, campaign_link_id, current_message_position, opted_out) VALUES (%s, %s, 0, true) RETURNING id",
        (client, bad),
    ).fetchone()[0])
    if ds is not None:
        ds.expected[stop] = "opted_out"
        ds.client_of[stop] = client
    return bad


# --------------------------------------------------------------------------- the run


def test_run_de_enrolls_exactly_the_expected_leads_then_nothing(cli, db_url: str, conn: psycopg.Connection) -> None:
    ds = build_dataset(conn, extra_leads_per_campaign=30)
    code, doc, _ = run_json(cli, db_url, "--batch-size", "2")
    assert code == 0 and doc["exit_code"] == 0
    assert de_enrolled(conn) == ds.expected
    assert_exactly_once(conn)

    assert set(doc) == {"dry_run", "batch_size", "max_runtime_ms", "started_at", "duration_ms", "clients", "totals",
                        "deltas_folded", "fold_error", "exit_code", "alert", "database"}
    assert doc["database"]["dbname"] and "password" not in doc["database"]
    assert doc["deltas_folded"] >= 1 and doc["fold_error"] is None  # D1's pending insert delta
    assert (doc["dry_run"], doc["batch_size"], doc["max_runtime_ms"]) == (False, 2, 240000)
    assert set(doc["totals"]) == TOTAL_KEYS
    clients = by_client(doc)
    assert set(clients) == {CLIENT_A, CLIENT_B, CLIENT_C}  # D has nothing active
    for client, c in clients.items():
        assert set(c) == CLIENT_KEYS
        exp = ds.expected_for(client)
        assert c["status"] == "success" and c["error"] is None
        assert c["leads_de_enrolled"] == c["leads_evaluated"] == len(exp)
        assert c["completed"] == sum(1 for v in exp.values() if v == "completed")
        assert c["opted_out"] == sum(1 for v in exp.values() if v == "opted_out")
        row = conn.execute(
            "SELECT status, leads_de_enrolled, batches, batch_size, max_runtime_ms, runner_pid IS NOT NULL "
            "FROM de_enrollment_runs WHERE id = %s",
            (c["run_id"],),
        ).fetchone()
        assert row == ("success", len(exp), c["batches"], 2, 240000, True)
    assert doc["totals"]["leads_de_enrolled"] == len(ds.expected)
    assert doc["alert"]["attempted"] is False
    assert stored(conn) == recount(conn)  # every counter exact, not only those of touched campaigns

    code, doc, _ = run_json(cli, db_url)
    assert code == 0
    assert doc["totals"]["leads_de_enrolled"] == 0
    assert set(by_client(doc)) == {CLIENT_A, CLIENT_B}  # C's deactivated campaign has nothing due any more
    assert all(c["status"] == "success" for c in doc["clients"])
    assert de_enrolled(conn) == ds.expected
    assert_exactly_once(conn)


def test_human_summary_on_stdout_log_lines_on_stderr(cli, db_url: str, conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    res = cli("run", "--client-id", CLIENT_B, "--batch-size", "1", db=db_url, env={"LOG_LEVEL": "debug"})
    assert res.code == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith(CLIENT_B) and "success" in lines[0]
    assert f"de-enrolled {len(ds.expected_for(CLIENT_B))}" in lines[-1] and "exit 0" in lines[-1]
    assert "DEBUG" in res.stderr and "batch" in res.stderr  # one line per batch at debug
    assert "Traceback" not in res.stderr

    res = cli("run", db=db_url, env={"LOG_LEVEL": "error"})
    assert res.code == 0
    assert "INFO" not in res.stderr and "DEBUG" not in res.stderr


def test_counters_exact_after_platform_writes_between_runs(cli, db_url: str, conn: psycopg.Connection) -> None:
    build_dataset(conn, extra_leads_per_campaign=5)
    assert cli("run", db=db_url).code == 0
    # the platform writes leads behind our back: every kind of change
    a1, b1 = (str(conn.execute("SELECT id FROM campaigns WHERE name = %s", (n,)).fetchone()[0]) for n in ("campaign A1", "campaign B1"))
    conn.execute("INSERT INTO leads (client_id, campaign_link_id, current_message_position) SELECT %s, %s, 3 FROM generate_series(1, 4)", (CLIENT_A, a1))
    conn.execute("INSERT INTO leads (client_id, campaign_link_id, booked, opted_out) VALUES (%s, %s, true, true)", (CLIENT_B, b1))
    conn.execute("UPDATE leads SET booked = true WHERE campaign_link_id = %s AND current_message_position = 0", (a1,))
    conn.execute("UPDATE leads SET current_message_position = 2 WHERE campaign_link_id = %s AND is_active AND current_message_position = 1", (b1,))
    conn.execute("DELETE FROM leads WHERE campaign_link_id = %s AND NOT is_active AND completed_at IS NULL", (a1,))
    conn.execute("UPDATE leads SET campaign_link_id = %s, client_id = %s WHERE id IN (SELECT id FROM leads WHERE campaign_link_id = %s AND is_active LIMIT 2)", (a1, CLIENT_A, b1))
    assert stored(conn) != recount(conn)
    code, doc, _ = run_json(cli, db_url)
    assert code == 0
    assert doc["totals"]["leads_de_enrolled"] >= 5  # the 4 finished inserts and the opted-out one at least
    assert stored(conn) == recount(conn)
    assert conn.execute("SELECT count(*) FROM campaign_stats_delta").fetchone()[0] == 0
    assert_exactly_once(conn)


def test_invalid_messages_campaign_gives_partial_and_the_rest_is_done(cli, db_url: str, conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    bad = add_invalid_campaign(conn, CLIENT_A, ds)
    code, doc, _ = run_json(cli, db_url)
    assert code == 1 and doc["exit_code"] == 1
    clients = by_client(doc)
    a = clients[CLIENT_A]
    assert a["status"] == "partial"
    assert bad in a["error"] and "not a JSON array" in a["error"]
    assert a["invalid_campaigns"] == [
        {"campaign_id": bad, "campaign_name": "broken one", "messages_type": "string", "active_leads": 1}
    ]
    assert clients[CLIENT_B]["status"] == clients[CLIENT_C]["status"] == "success"
    assert de_enrolled(conn) == ds.expected  # A's other campaigns proceeded; in the broken one only the STOP left
    status, details = conn.execute("SELECT status, error_details FROM de_enrollment_runs WHERE id = %s", (a["run_id"],)).fetchone()
    assert status == "partial" and bad in details
    assert conn.execute("SELECT count(*) FROM leads WHERE campaign_link_id = %s AND is_active", (bad,)).fetchone()[0] == 1


def test_dry_run_counts_and_changes_nothing(cli, db_url: str, conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    add_invalid_campaign(conn, CLIENT_B, ds)
    tables = ("leads", "campaigns", "campaign_stats_delta", "de_enrollment_runs", "de_enrollment_lead_log")

    def fingerprint() -> list:
        return [conn.execute(f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {t} t").fetchone()[0] for t in tables]

    before = fingerprint()
    code, doc, _ = run_json(cli, db_url, "--dry-run")
    assert fingerprint() == before
    assert doc["dry_run"] is True
    assert code == doc["exit_code"] == 1  # B's invalid campaign would make the real run partial
    for client, c in by_client(doc).items():
        exp = ds.expected_for(client)
        assert c["status"] == "dry_run" and c["run_id"] is None
        assert c["would_de_enroll"] == len(exp)
        assert c["completed"] == sum(1 for v in exp.values() if v == "completed")
        assert c["opted_out"] == sum(1 for v in exp.values() if v == "opted_out")
        assert sum(x["completed"] + x["opted_out"] for x in c["campaigns"]) == len(exp)
    assert len(by_client(doc)[CLIENT_B]["invalid_campaigns"]) == 1
    res = cli("run", "--dry-run", "--client-id", CLIENT_C, db=db_url)
    assert res.code == 0 and "would de-enroll 1" in res.stdout and "nothing was changed" in res.stdout
    assert fingerprint() == before


def test_budget_exhaustion_gives_partial_and_the_next_run_finishes(cli, db_url: str, conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    code, doc, _ = run_json(cli, db_url, "--max-runtime", "1", "--batch-size", "1")
    assert code == 1
    for c in doc["clients"]:
        assert c["status"] == "partial"
        assert "runtime budget of 1 ms ran out" in c["error"]
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status <> 'partial'").fetchone()[0] == 0
    assert_exactly_once(conn)
    code, doc, _ = run_json(cli, db_url, "--batch-size", "1")
    assert code == 0
    assert de_enrolled(conn) == ds.expected
    assert stored(conn) == recount(conn)


def test_a_lead_the_platform_refuses_is_held_and_the_rest_commits(cli, db_url: str, conn: psycopg.Connection, webhook: Webhook) -> None:
    ds = build_dataset(conn)
    victim = next(iter(ds.expected_for(CLIENT_B)))
    refuse_lead(conn, victim)
    code, doc, stderr = run_json(cli, db_url, "--batch-size", "2", env={"DE_ENROLLMENT_ALERT_WEBHOOK": webhook.url})
    assert code == 1 and doc["exit_code"] == 1  # attention, not failure
    clients = by_client(doc)
    b = clients[CLIENT_B]
    assert b["status"] == "success" and b["held"] == {"refused_by_trigger": 1} and b["newly_held"] == 1
    assert b["leads_held"] == doc["totals"]["leads_held"] == 1
    assert clients[CLIENT_A]["status"] == clients[CLIENT_C]["status"] == "success"
    assert clients[CLIENT_A]["held"] == {}
    expected = {k: v for k, v in ds.expected.items() if k != victim}
    assert de_enrolled(conn) == expected  # B's other leads, in the same batches, committed
    row = conn.execute("SELECT status, leads_held, error_details FROM de_enrollment_runs WHERE id = %s", (b["run_id"],)).fetchone()
    assert row[0] == "success" and row[1] == 1 and "held 1" in row[2]
    stuck = conn.execute("SELECT lead_id::text, reason, error_message FROM de_enrollment_stuck_leads").fetchall()
    assert [(r[0], r[1]) for r in stuck] == [(victim, "held:refused_by_trigger")] and "frozen" in stuck[0][2]
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    # one alert, naming the client with the held lead
    assert doc["alert"]["attempted"] and doc["alert"]["delivered"]
    assert [c["client_id"] for c in webhook.received[0]["body"]["details"]["clients"]] == [CLIENT_B]
    assert "Traceback" not in stderr

    # the next run does not try it again (nothing changed): same report, no new attempt
    code, doc, _ = run_json(cli, db_url, "--dry-run")
    assert code == 1 and by_client(doc)[CLIENT_B]["held"] == {"refused_by_trigger": 1}
    assert by_client(doc)[CLIENT_B]["would_de_enroll"] == 0
    code, doc, _ = run_json(cli, db_url)
    assert code == 1 and by_client(doc)[CLIENT_B]["newly_held"] == 0 and by_client(doc)[CLIENT_B]["held"]
    assert conn.execute("SELECT attempts FROM deenroll.held_leads WHERE lead_id = %s", (victim,)).fetchone()[0] == 1

    # the platform lifts its refusal; an operator releases the lead; the next run de-enrolls it
    conn.execute("DROP TRIGGER zz_refuse ON leads")
    assert conn.execute("SELECT de_enrollment_release_held_leads(%s)", (CLIENT_B,)).fetchone()[0] == 1
    code, doc, _ = run_json(cli, db_url)
    assert code == 0 and by_client(doc)[CLIENT_B]["leads_de_enrolled"] == 1
    assert de_enrolled(conn) == ds.expected
    assert conn.execute("SELECT count(*) FROM deenroll.held_leads").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM de_enrollment_stuck_leads").fetchone()[0] == 0


def test_a_partial_client_with_a_held_lead_names_it_once(cli, db_url: str, conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    add_invalid_campaign(conn, CLIENT_B, ds)  # partial
    refuse_lead(conn, next(iter(ds.expected_for(CLIENT_B))))
    res = cli("run", db=db_url, env={"LOG_LEVEL": "warning"})
    assert res.code == 1, res.stderr
    (line,) = [x for x in res.stdout.splitlines() if x.startswith(CLIENT_B)]
    assert line.startswith(f"{CLIENT_B}  partial: ") and "not a JSON array" in line
    assert line.count("held 1 (refused_by_trigger 1)") == 1, line
    (logged,) = [x for x in res.stderr.splitlines() if f"client {CLIENT_B}: partial" in x]
    assert logged.count("held 1 (refused_by_trigger 1)") == 1, logged


def test_alert_on_partial_and_a_webhook_that_is_down(cli, db_url: str, conn: psycopg.Connection, webhook: Webhook) -> None:
    build_dataset(conn)
    add_invalid_campaign(conn, CLIENT_C)
    code, doc, _ = run_json(cli, db_url, env={"DE_ENROLLMENT_ALERT_WEBHOOK": webhook.url})
    assert code == 1 and doc["alert"]["delivered"] is True
    assert [c["status"] for c in webhook.received[0]["body"]["details"]["clients"]] == ["partial"]
    # webhook down: reported on stderr and in the JSON, the run's outcome unchanged
    code, doc, stderr = run_json(cli, db_url, env={"DE_ENROLLMENT_ALERT_WEBHOOK": closed_port_url()})
    assert code == 1
    assert doc["alert"]["attempted"] is True and doc["alert"]["delivered"] is False and doc["alert"]["error"]
    assert "alert NOT delivered" in stderr
    # a clean run sends nothing
    conn.execute("UPDATE campaigns SET messages = '[1]' WHERE name = 'broken one'")
    received = len(webhook.received)
    code, doc, _ = run_json(cli, db_url, env={"DE_ENROLLMENT_ALERT_WEBHOOK": webhook.url})
    assert code == 0 and doc["alert"]["attempted"] is False and len(webhook.received) == received


def test_client_id_limits_the_run_to_that_client(cli, db_url: str, conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    code, doc, _ = run_json(cli, db_url, "--client-id", CLIENT_A.upper())
    assert code == 0 and list(by_client(doc)) == [CLIENT_A]
    assert de_enrolled(conn) == ds.expected_for(CLIENT_A)
    # a client whose campaigns are all deactivated still runs when asked for by name
    code, doc, _ = run_json(cli, db_url, "--client-id", CLIENT_D)
    assert code == 0 and doc["clients"][0]["status"] == "success" and doc["clients"][0]["leads_de_enrolled"] == 0


def test_batch_size_and_budget_come_from_the_environment(cli, db_url: str, conn: psycopg.Connection) -> None:
    build_dataset(conn)
    code, doc, _ = run_json(cli, db_url, env={"DE_ENROLLMENT_BATCH_SIZE": "3", "DE_ENROLLMENT_MAX_RUNTIME": "60000"})
    assert code == 0 and (doc["batch_size"], doc["max_runtime_ms"]) == (3, 60000)
    res = cli("run", "--help")
    assert "DE_ENROLLMENT_BATCH_SIZE" in res.stdout and "DE_ENROLLMENT_MAX_RUNTIME" in res.stdout


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--client-id", "not-a-uuid"], {}, "is not a UUID"),
        (["--client-id", str(uuid.UUID(int=7))], {}, "has no campaigns"),
        (["--batch-size", "0"], {}, "--batch-size must be a positive integer"),
        (["--batch-size", "-5"], {}, "--batch-size must be a positive integer"),
        (["--max-runtime", "-1"], {}, "--max-runtime must be at least 1"),
        (["--max-runtime", "0"], {}, "--max-runtime must be at least 1"),
        ([], {"DE_ENROLLMENT_BATCH_SIZE": "0"}, "--batch-size must be a positive integer"),
        (["--batch-size", "ten"], {}, "not a valid integer"),
        (["--lease", "999"], {}, "--lease must be between 1000 and 600000 milliseconds"),
        (["--lease", "600001"], {}, "--lease must be between 1000 and 600000 milliseconds"),
        ([], {"DE_ENROLLMENT_LEASE": "0"}, "--lease must be between 1000 and 600000 milliseconds"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(cli, db_url: str, conn: psycopg.Connection, args, env, message) -> None:
    build_dataset(conn)
    res = cli("run", *args, db=db_url, env=env)
    assert res.code == 2
    first = res.stderr.strip().splitlines()[0]
    assert first.startswith("deenroll: error:") and message in first
    assert "Traceback" not in res.stderr
    assert res.stdout == ""
    assert run_rows(conn) == 0 and de_enrolled(conn) == {}


def test_unreachable_database_is_one_line(cli) -> None:
    res = cli("run", db="postgresql://deenroll@127.0.0.1:1/nowhere", env={"DEENROLL_CONNECT_TIMEOUT": "3"})
    assert res.code == 2
    assert res.stderr.strip().count("\n") == 0 and "cannot connect to the database" in res.stderr


def test_missing_prerequisites_say_run_migrate(cli, empty_db_url: str) -> None:
    res = cli("run", db=empty_db_url)
    assert res.code == 2
    line = res.stderr.strip()
    assert line.count("\n") == 0 and "deenroll migrate" in line and "missing" in line


def test_a_dropped_function_or_view_of_this_version_is_named(cli, empty_db_url: str) -> None:
    assert cli("migrate", db=empty_db_url).code == 0
    with psycopg.connect(empty_db_url, autocommit=True) as c:
        c.execute("DROP VIEW public.de_enrollment_health")
        c.execute("DROP FUNCTION public.de_enrollment_heartbeat(uuid)")
    res = cli("run", db=empty_db_url)
    assert res.code == 2
    line = res.stderr.strip()
    assert line.count("\n") == 0 and "run `deenroll migrate` first" in line
    assert "function public.de_enrollment_heartbeat" in line and "view public.de_enrollment_health" in line
    assert cli("migrate", db=empty_db_url).code == 0
    assert cli("run", db=empty_db_url).code == 0


def test_an_idle_run_costs_the_same_on_a_ten_times_bigger_table(cli, db_url: str, conn: psycopg.Connection) -> None:
    """Nothing due: the pages a whole run reads do not grow with the number of leads."""
    client = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO campaigns (client_id, name, messages) SELECT %s, 'c' || k, '[1, 2, 3]' FROM generate_series(1, 10) k",
        (client,),
    )
    for table in ("leads", "campaigns", "campaign_stats_delta", "de_enrollment_runs", "de_enrollment_lead_log"):
        conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")  # only the run reads pages

    def add_leads(per_campaign: int) -> None:
        conn.execute(
            """INSERT INTO leads (client_id, campaign_link_id, current_message_position, is_active)
               SELECT c.client_id, c.id, g %% 3, g %% 2 = 0 FROM campaigns c, generate_series(1, %s) g""",
            (per_campaign,),
        )
        assert cli("run", db=db_url).code == 0  # folds the insert deltas
        conn.execute("VACUUM ANALYZE")

    def pages_read_by_an_idle_run() -> int:
        def blocks() -> int:
            # A backend adds its counters to the shared statistics as it exits, before it leaves
            # pg_stat_activity: once no other session is in this database, every read is counted.
            deadline = time.monotonic() + 30
            while conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()[0]:
                assert time.monotonic() < deadline, "the run's sessions did not end"
                time.sleep(0.01)
            conn.execute("SELECT pg_stat_force_next_flush()")  # this session's own reads are flushed first
            conn.execute("SELECT pg_stat_clear_snapshot()")
            return conn.execute(
                "SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()[0]

        before = blocks()
        res = cli("run", "--json", db=db_url)
        assert res.code == 0 and json.loads(res.stdout)["totals"]["leads_de_enrolled"] == 0
        return blocks() - before

    add_leads(2000)
    small = pages_read_by_an_idle_run()
    add_leads(18000)
    assert conn.execute("SELECT relpages FROM pg_class WHERE relname = 'leads'").fetchone()[0] > 2000
    big = pages_read_by_an_idle_run()
    assert big < small + 500, (small, big)  # one pass over leads alone would add 2000 pages
