"""Runners at once, runners killed, runners out of time: real processes, real locks."""

from __future__ import annotations

import json
import signal
import subprocess

import psycopg
import pytest

from conftest import deenroll_exe
from engine_data import CLIENT_A, CLIENT_B, CLIENT_C, assert_exactly_once, build_dataset, de_enrolled, recount, stored
from processes import due_now, make_clients, slow_batches, spawn, wait_until

pytestmark = pytest.mark.slow


def test_four_runs_at_once_de_enroll_each_lead_exactly_once(db_url: str, conn: psycopg.Connection) -> None:
    make_clients(conn, clients=8, campaigns=3, leads=120)
    expected = due_now(conn)
    assert len(expected) > 800
    procs = [spawn(db_url, "--json", "--batch-size", "5") for _ in range(4)]
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        docs.append(json.loads(out))
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    # each client was processed by one runner at a time: the others skipped it or found nothing left
    worked = [c for d in docs for c in d["clients"] if c["status"] == "success"]
    assert sum(c["leads_de_enrolled"] for c in worked) == len(expected)
    assert {c["status"] for d in docs for c in d["clients"]} <= {"success", "skipped"}
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status <> 'success'").fetchone()[0] == 0
    assert conn.execute("SELECT sum(leads_de_enrolled) FROM de_enrollment_runs").fetchone()[0] == len(expected)


def test_a_runner_killed_mid_run_leaves_no_half_processed_lead(db_url: str, conn: psycopg.Connection) -> None:
    [client] = make_clients(conn, clients=1, campaigns=2, leads=150)  # 30 batches or more: the kill lands mid-run
    expected = due_now(conn)
    before = {r[0]: r[1:] for r in conn.execute("SELECT id::text, is_active, completed_at, campaign_history, updated_at FROM leads")}
    slow_batches(conn, 0.3)
    # a lease of 10 minutes: only the end of its server session can tell the next run it died
    proc = spawn(db_url, "--batch-size", "4", "--lease", "600000")

    def one_batch_committed() -> bool:
        row = conn.execute("SELECT batches FROM de_enrollment_runs WHERE status = 'running'").fetchone()
        return bool(row and row[0] >= 1)

    wait_until(one_batch_committed)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # the server notices the dead client after its statement ends and rolls back its batch
    wait_until(
        lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'deenroll run' AND datname = current_database()").fetchone()[0] == 0
    )

    dead_id, status, batches, done = conn.execute(
        "SELECT id, status, batches, leads_de_enrolled FROM de_enrollment_runs"
    ).fetchone()
    assert status == "running" and batches >= 1
    assert 0 < done < len(expected)
    logged = de_enrolled(conn)
    assert len(logged) == done  # committed batches only; the batch in flight rolled back
    for lead, *now in conn.execute("SELECT id::text, is_active, completed_at, campaign_history, updated_at FROM leads"):
        active, completed_at, history, _ = now
        if lead in logged:  # fully de-enrolled
            assert not active and len(history) == 1 and history[0]["outcome"] == logged[lead]
            assert (completed_at is not None) == (logged[lead] == "completed")
        else:  # untouched, to the last column
            assert tuple(now) == before[lead]
    assert {k for k, in conn.execute("SELECT id::text FROM leads WHERE NOT is_active AND campaign_history <> '[]'")} == set(logged)
    assert_exactly_once(conn)

    conn.execute("DROP TRIGGER zz_slow ON leads")
    # the dead run's lease is still live, but its server session is gone: the next run takes
    # the client over at once, without waiting for the lease to expire
    assert conn.execute("SELECT count(*) FROM deenroll.client_leases WHERE expires_at > clock_timestamp() + interval '5 s'").fetchone()[0] == 1
    res = subprocess.run(
        [deenroll_exe(), "--database-url", db_url, "run", "--json"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    [c] = doc["clients"]
    assert c["client_id"] == client and c["status"] == "success"
    assert any(str(dead_id) in w for w in c["warnings"])
    status, details = conn.execute("SELECT status, error_details FROM de_enrollment_runs WHERE id = %s", (dead_id,)).fetchone()
    assert status == "failed" and f"pid {proc.pid}" in details and "stopped before finishing" in details
    assert "its database session (backend pid" in details and "ended" in details
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0


def test_a_client_another_runner_holds_is_skipped_not_waited_for(db_url: str, conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    with psycopg.connect(db_url, autocommit=True) as other:
        other_run = other.execute("SELECT start_de_enrollment_run(%s, 100, 60000, 'elsewhere', 1)", (CLIENT_A,)).fetchone()[0]
        res = subprocess.run(
            [deenroll_exe(), "--database-url", db_url, "run", "--json", "--max-runtime", "20000"],
            capture_output=True, text=True, timeout=60,
        )
        assert res.returncode == 0, res.stderr
        clients = {c["client_id"]: c for c in json.loads(res.stdout)["clients"]}
        assert clients[CLIENT_A]["status"] == "skipped" and clients[CLIENT_A]["run_id"] is None
        assert f"is being processed by run {other_run}" in clients[CLIENT_A]["error"]
        assert "runner elsewhere pid 1" in clients[CLIENT_A]["error"]
        assert json.loads(res.stdout)["totals"]["skipped"] == 1
        assert clients[CLIENT_B]["status"] == clients[CLIENT_C]["status"] == "success"
        # its leads are de-enrolled under the holder's run: with no client of its own left, the run
        # helps the runs in progress, whoever opened them (like two pg_cron jobs)
        assert set(ds.expected_for(CLIENT_A)) <= set(de_enrolled(conn))
        assert {r for (r,) in conn.execute(
            "SELECT DISTINCT run_id::text FROM de_enrollment_lead_log WHERE client_id = %s", (CLIENT_A,))} == {str(other_run)}
        # the holder is alive: its run is not taken for dead
        assert conn.execute("SELECT status FROM de_enrollment_runs WHERE id = %s", (other_run,)).fetchone()[0] == "running"
        assert conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE client_id = %s", (CLIENT_A,)).fetchone()[0] == 1
        other.execute("SELECT finish_de_enrollment_run(%s, 'success')", (other_run,))
    res = subprocess.run([deenroll_exe(), "--database-url", db_url, "run", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert de_enrolled(conn) == ds.expected


def test_the_budget_runs_out_between_batches(db_url: str, conn: psycopg.Connection) -> None:
    """A batch longer than the whole budget: the batch in flight commits, the run stops after it.

    The budget also covers what comes before the first batch (connecting, checks, opening the
    run), so it is generous (2 s) for a slow machine; the batch outlasts it whatever the speed."""
    [client] = make_clients(conn, clients=1, campaigns=1, leads=60)
    expected = due_now(conn)
    assert len(expected) >= 24
    slow_batches(conn, 2.5)
    res = subprocess.run(
        [deenroll_exe(), "--database-url", db_url, "run", "--json", "--batch-size", "4", "--max-runtime", "2000"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 1, res.stderr
    [c] = json.loads(res.stdout)["clients"]
    assert c["status"] == "partial" and "runtime budget of 2000 ms ran out after 1 batch;" in c["error"]
    assert c["batches"] == 1 and c["leads_de_enrolled"] == 4
    assert len(de_enrolled(conn)) == 4
    assert conn.execute("SELECT status FROM de_enrollment_runs WHERE id = %s", (c["run_id"],)).fetchone()[0] == "partial"
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)  # counters exact after a partial run too
    conn.execute("DROP TRIGGER zz_slow ON leads")
    res = subprocess.run([deenroll_exe(), "--database-url", db_url, "run", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert de_enrolled(conn) == expected


@pytest.mark.parametrize(
    ("sig", "sigint", "code", "said"),
    [
        (signal.SIGTERM, "SIG_DFL", 143, "SIGTERM"),
        (signal.SIGTERM, "SIG_IGN", 143, "SIGTERM"),  # started in the background: SIGTERM still stops it
        (signal.SIGINT, "SIG_DFL", 130, "SIGINT"),
    ],
)
def test_a_stopped_run_is_recorded_failed(db_url: str, conn: psycopg.Connection, sig, sigint, code, said) -> None:
    """A scheduler's timeout (SIGTERM) or Ctrl-C: the batch in flight rolls back, the run row says what happened."""
    make_clients(conn, clients=1, campaigns=1, leads=200)  # 40 batches or more: the signal lands mid-run
    expected = due_now(conn)
    slow_batches(conn, 0.3)
    proc = spawn(db_url, "--batch-size", "4", "--json", sigint=sigint)
    wait_until(lambda: (conn.execute("SELECT max(batches) FROM de_enrollment_runs").fetchone()[0] or 0) >= 1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    why = f"{'terminated' if sig == signal.SIGTERM else 'interrupted'} ({said}); the client in progress was recorded failed"
    assert err.splitlines()[-1] == f"deenroll: error: {why}"
    doc = json.loads(out)
    assert (doc["error"], doc["exit_code"]) == (why, code)
    status, details, done = conn.execute("SELECT status, error_details, leads_de_enrolled FROM de_enrollment_runs").fetchone()
    assert status == "failed" and said in details
    assert 0 < done < len(expected) and len(de_enrolled(conn)) == done
    assert_exactly_once(conn)


def test_a_run_started_with_sigint_ignored_keeps_ignoring_it(db_url: str, conn: psycopg.Connection) -> None:
    """Started as a background job (`cmd &`, nohup): SIGINT stays ignored and the run finishes its work."""
    make_clients(conn, clients=1, campaigns=1, leads=120)
    expected = due_now(conn)
    assert len(expected) >= 40  # ten batches or more: the signal arrives mid-run
    slow_batches(conn, 0.3)
    proc = spawn(db_url, "--batch-size", "4", "--json", sigint="SIG_IGN")

    def batches() -> int:
        return conn.execute("SELECT coalesce(max(batches), 0) FROM de_enrollment_runs").fetchone()[0]

    wait_until(lambda: batches() >= 1)
    proc.send_signal(signal.SIGINT)
    at_signal = batches()
    wait_until(lambda: batches() > at_signal or proc.poll() is not None)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "interrupted" not in err
    [c] = json.loads(out)["clients"]
    assert c["status"] == "success" and c["leads_de_enrolled"] == len(expected)
    assert c["batches"] > at_signal  # it went on working after the signal
    assert conn.execute("SELECT status FROM de_enrollment_runs").fetchone()[0] == "success"
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
