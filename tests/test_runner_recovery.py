"""The runner's recovery paths, driven by faults the database itself raises: a run that cannot
start, a batch that loses a lock race, a batch that fails, and a failed run whose row cannot
be closed either. Each time the other clients are de-enrolled as usual and the report says
what happened to the one that was hit."""

from __future__ import annotations

import json

import psycopg

from conftest import add_campaign, add_leads, new_id
from engine_data import assert_exactly_once
from processes import fault, spawn, wait_until


def _two_clients(conn: psycopg.Connection) -> tuple[str, str]:
    """Two clients with 7 finished leads each; returns (hit, healthy)."""
    hit, healthy = new_id(), new_id()
    for client in (hit, healthy):
        add_leads(conn, add_campaign(conn, client), client, 7, position=3)
    return hit, healthy


def _report(res) -> dict:
    return json.loads(res.stdout)


def _client(report: dict, client: str) -> dict:
    return next(c for c in report["clients"] if c["client_id"] == client)


def _left_due(conn: psycopg.Connection, client: str) -> int:
    return conn.execute(
        "SELECT count(*) FROM leads WHERE client_id = %s AND is_active", (client,)
    ).fetchone()[0]


def test_a_run_that_cannot_start_fails_alone(cli, db_url: str, conn: psycopg.Connection) -> None:
    hit, healthy = _two_clients(conn)
    fault(conn, "zz_no_runs", "de_enrollment_runs", "BEFORE INSERT", f"NEW.client_id = '{hit}'", "53000")
    res = cli("run", "--json", db=db_url)
    assert res.code == 2, res.stderr
    report = _report(res)
    assert _client(report, hit)["status"] == "failed"
    assert "could not start a run" in _client(report, hit)["error"] and "injected fault" in _client(report, hit)["error"]
    assert _client(report, healthy)["status"] == "success"
    assert _left_due(conn, hit) == 7 and _left_due(conn, healthy) == 0
    # no lease is left behind: once the fault is gone the next run takes the client
    conn.execute("DROP TRIGGER zz_no_runs ON de_enrollment_runs")
    assert cli("run", db=db_url).code == 0
    assert _left_due(conn, hit) == 0


def test_a_batch_that_loses_a_lock_race_is_retried(cli, db_url: str, conn: psycopg.Connection) -> None:
    hit, healthy = _two_clients(conn)
    # A sequence is not rolled back with the failed batch: only the first attempt is refused.
    conn.execute("CREATE SEQUENCE public.zz_attempts")
    fault(conn, "zz_deadlock", "leads", "BEFORE UPDATE",
           f"NEW.client_id = '{hit}' AND nextval('public.zz_attempts') = 1", "40P01")
    res = cli("run", "--json", db=db_url, env={"LOG_LEVEL": "warning"})
    assert res.code == 0, res.stderr
    assert "lost a lock race" in res.stderr and hit in res.stderr
    assert all(c["status"] == "success" for c in _report(res)["clients"])
    assert _left_due(conn, hit) == 0 and _left_due(conn, healthy) == 0
    assert conn.execute("SELECT count(*) FROM de_enrollment_lead_log").fetchone()[0] == 14


def test_a_batch_that_fails_closes_its_run_failed_and_keeps_nothing_half_done(
    cli, db_url: str, conn: psycopg.Connection
) -> None:
    hit, healthy = _two_clients(conn)
    # A resource error is nobody's lead's fault: the whole batch is rolled back, the run fails.
    fault(conn, "zz_full", "leads", "BEFORE UPDATE", f"NEW.client_id = '{hit}'", "53100")
    res = cli("run", "--json", db=db_url)
    assert res.code == 2
    report = _report(res)
    assert _client(report, hit)["status"] == "failed" and "injected fault" in _client(report, hit)["error"]
    assert _client(report, healthy)["status"] == "success"
    row = conn.execute(
        "SELECT status, error_details, leads_de_enrolled FROM de_enrollment_runs WHERE client_id = %s", (hit,)
    ).fetchone()
    assert row[0] == "failed" and "injected fault" in row[1] and row[2] == 0
    assert _left_due(conn, hit) == 7
    assert conn.execute("SELECT count(*) FROM de_enrollment_lead_log WHERE client_id = %s", (hit,)).fetchone()[0] == 0


def test_a_failed_run_whose_row_cannot_be_closed_says_both(cli, db_url: str, conn: psycopg.Connection) -> None:
    hit, healthy = _two_clients(conn)
    fault(conn, "zz_full", "leads", "BEFORE UPDATE", f"NEW.client_id = '{hit}'", "53100")
    fault(conn, "zz_no_close", "de_enrollment_runs", "BEFORE UPDATE",
           f"NEW.client_id = '{hit}' AND NEW.status = 'failed'", "53000")
    res = cli("run", "--json", db=db_url)
    assert res.code == 2
    error = _client(_report(res), hit)["error"]
    assert _client(_report(res), hit)["status"] == "failed"
    assert "injected fault zz_full" in error and "the run row could not be closed either" in error
    assert "injected fault zz_no_close" in error
    assert _client(_report(res), healthy)["status"] == "success"
    # The row stays 'running' until its lease expires; then the next run marks it failed and
    # de-enrolls the client.
    conn.execute("DROP TRIGGER zz_full ON leads")
    conn.execute("DROP TRIGGER zz_no_close ON de_enrollment_runs")
    conn.execute("UPDATE deenroll.client_leases SET expires_at = now() - interval '1 second'")
    again = cli("run", "--json", db=db_url)
    assert again.code == 0, again.stderr
    assert _left_due(conn, hit) == 0
    statuses = [r[0] for r in conn.execute(
        "SELECT status FROM de_enrollment_runs WHERE client_id = %s ORDER BY run_at", (hit,)
    ).fetchall()]
    assert statuses == ["failed", "success"]


def test_a_final_fold_that_fails_is_reported_and_the_deltas_wait(cli, db_url: str, conn: psycopg.Connection) -> None:
    hit, healthy = _two_clients(conn)
    # A client with no active campaign and nothing due is no run's: its campaign's pending
    # deltas (a lead the platform added) are left to the final fold of the whole run.
    idle_client = new_id()
    paused = add_campaign(conn, idle_client, active=False)
    add_leads(conn, paused, idle_client, 2, position=0)
    fault(conn, "zz_no_fold", "campaigns", "BEFORE UPDATE", f"NEW.id = '{paused}'", "53000")
    res = cli("run", "--json", db=db_url)
    assert res.code == 2, res.stderr
    report = _report(res)
    assert "folding the remaining counter deltas failed" in report["fold_error"]
    assert "injected fault zz_no_fold" in report["fold_error"]
    assert all(c["status"] == "success" for c in report["clients"]) and {hit, healthy} <= {
        c["client_id"] for c in report["clients"]
    }
    pending = "SELECT count(*) FROM campaign_stats_delta WHERE campaign_id = %s"
    assert conn.execute(pending, (paused,)).fetchone()[0] > 0
    conn.execute("DROP TRIGGER zz_no_fold ON campaigns")
    assert cli("run", db=db_url).code == 0
    assert conn.execute(pending, (paused,)).fetchone()[0] == 0
    assert conn.execute("SELECT active_leads_count FROM campaigns WHERE id = %s", (paused,)).fetchone()[0] == 2


def test_a_helping_worker_that_fails_fails_the_run_it_helped(db_url: str, conn: psycopg.Connection) -> None:
    client = new_id()
    add_leads(conn, add_campaign(conn, client), client, 20, position=3)
    # The session that opens the run is remembered; a batch of any other session (the helper)
    # fails, and counts it in a sequence (not rolled back with it). The opener's batch waits on
    # an advisory lock the test holds until the helper has failed.
    conn.execute(
        """CREATE TABLE public.zz_opener (pid integer);
           CREATE SEQUENCE public.zz_fired;
           CREATE FUNCTION public.zz_note_opener() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO public.zz_opener VALUES (pg_backend_pid()); RETURN NEW; END $$;
           CREATE TRIGGER zz_note_opener AFTER INSERT ON public.de_enrollment_runs
               FOR EACH ROW EXECUTE FUNCTION public.zz_note_opener();
           CREATE FUNCTION public.zz_only_the_opener() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF pg_backend_pid() <> ALL (ARRAY(SELECT pid FROM public.zz_opener)) THEN
                   PERFORM nextval('public.zz_fired');
                   RAISE EXCEPTION 'injected fault %', TG_NAME USING ERRCODE = '53000';
               END IF;
               PERFORM pg_advisory_xact_lock_shared(4242);
               RETURN NEW;
           END $$;
           CREATE TRIGGER zz_only_the_opener BEFORE UPDATE ON public.leads
               FOR EACH ROW EXECUTE FUNCTION public.zz_only_the_opener()"""
    )
    with psycopg.connect(db_url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(4242)")
        proc = spawn(db_url, "--json", "--workers", "2", "--batch-size", "4")
        try:
            wait_until(lambda: conn.execute("SELECT is_called FROM public.zz_fired").fetchone()[0]
                       or proc.poll() is not None, timeout=120)
        finally:
            gate.execute("SELECT pg_advisory_unlock(4242)")
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    [c] = json.loads(out)["clients"]
    assert c["status"] == "failed"
    assert c["error"].startswith("a helping worker failed:") and "injected fault zz_only_the_opener" in c["error"]
    row = conn.execute("SELECT status, error_details FROM de_enrollment_runs WHERE client_id = %s", (client,)).fetchone()
    assert row[0] == "failed" and "a helping worker failed" in row[1]
    assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0
    assert_exactly_once(conn)
