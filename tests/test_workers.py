"""`run --workers N`: several connections at once, different clients and batches of one big client."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter

import psycopg
import pytest

from conftest import deenroll_exe, run_cli
from engine_data import assert_exactly_once, de_enrolled, recount, stored
from processes import due_now, make_clients, slow_batches, spawn, wait_until

pytestmark = pytest.mark.slow

# A worker in its client's run, or helping another's: the statements of the run's procedures.
IN_A_RUN = ("%deenroll.run_de_enrollment%",)  # a call of the run's loop (it helps from inside)


def dataset(conn: psycopg.Connection) -> tuple[list[str], str]:
    """Five small clients and one big one (about ten times their due leads)."""
    small = make_clients(conn, clients=5, campaigns=2, leads=30)
    [big] = make_clients(conn, clients=1, campaigns=6, leads=100)
    return small, big


def due_by_client(conn: psycopg.Connection) -> Counter:
    due = due_now(conn)
    owners = dict(conn.execute("SELECT id::text, client_id::text FROM leads").fetchall())
    return Counter(owners[lead] for lead in due)


def run_rows(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = {}
    for client, *rest in conn.execute(
        "SELECT client_id::text, id::text, status, leads_de_enrolled, leads_completed, leads_opted_out, batches "
        "FROM de_enrollment_runs ORDER BY run_at"
    ):
        rows.setdefault(client, []).append(tuple(rest))
    return rows


def run(db_url: str, *args: str) -> tuple[int, dict, str]:
    res = subprocess.run(
        [deenroll_exe(), "--database-url", db_url, "run", "--json", *args], capture_output=True, text=True, timeout=300
    )
    assert "Traceback" not in res.stderr
    return res.returncode, json.loads(res.stdout), res.stderr


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_de_enroll_every_due_lead_once_with_one_run_row_per_client(
    db_url: str, conn: psycopg.Connection, workers: int
) -> None:
    small, big = dataset(conn)
    expected = due_now(conn)
    per_client = due_by_client(conn)
    assert per_client[big] > 5 * max(per_client[c] for c in small)
    code, doc, err = run(db_url, "--workers", str(workers), "--batch-size", "10")
    assert code == 0, err
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    rows = run_rows(conn)
    assert set(rows) == set(small) | {big}
    by_client = {c["client_id"]: c for c in doc["clients"]}
    for client, [(run_id, status, done, completed, opted_out, batches)] in rows.items():
        assert status == "success" and done == per_client[client]
        c = by_client[client]
        assert (c["run_id"], c["status"], c["leads_de_enrolled"], c["completed"], c["opted_out"], c["batches"]) == (
            run_id, status, done, completed, opted_out, batches
        )
    db_totals = conn.execute(
        "SELECT sum(leads_de_enrolled), sum(leads_completed), sum(leads_opted_out), sum(batches) FROM de_enrollment_runs"
    ).fetchone()
    t = doc["totals"]
    assert (t["leads_de_enrolled"], t["completed"], t["opted_out"], t["batches"]) == tuple(db_totals)
    assert (t["clients"], t["success"], doc["exit_code"]) == (6, 6, 0)
    assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0
    # nothing left: a second run de-enrolls nothing
    code, doc, _ = run(db_url, "--workers", str(workers))
    assert code == 0 and doc["totals"]["leads_de_enrolled"] == 0 and doc["totals"]["success"] == 6


def test_idle_workers_help_a_big_client_under_its_one_run(db_url: str, conn: psycopg.Connection) -> None:
    """One client, three workers: batches of the same run in flight on several connections at once."""
    [big] = make_clients(conn, clients=1, campaigns=4, leads=60)
    expected = due_now(conn)
    slow_batches(conn, 0.2)
    proc = spawn(db_url, "--json", "--workers", "3", "--batch-size", "4", "--client-id", big)

    def batches_in_flight() -> int:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'deenroll run' AND state = 'active' "
            "AND datname = current_database() "
            "AND query LIKE ANY (%s)",
            (list(IN_A_RUN),),
        ).fetchone()[0]

    wait_until(lambda: batches_in_flight() >= 2 or proc.poll() is not None, timeout=120)
    assert proc.poll() is None, "the run ended before two of its batches ran at once"
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    [c] = json.loads(out)["clients"]
    [(run_id, status, done, _, _, batches)] = run_rows(conn)[big]
    assert (c["run_id"], c["status"], c["leads_de_enrolled"], c["batches"]) == (run_id, "success", done, batches)
    assert done == len(expected) and de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0


def test_workers_honour_the_budget(db_url: str, conn: psycopg.Connection) -> None:
    """Batches longer than the budget: every worker stops after its batch in flight, the runs end partial."""
    small, big = dataset(conn)
    expected = due_now(conn)
    slow_batches(conn, 2.5)
    code, doc, err = run(db_url, "--workers", "2", "--batch-size", "5", "--max-runtime", "2000")
    assert code == 1, err
    assert all(c["status"] == "partial" and "runtime budget of 2000 ms ran out" in c["error"] for c in doc["clients"])
    # two workers, each stopped after the batch it had in flight when the budget ran out
    assert 1 <= doc["totals"]["batches"] <= 2
    assert doc["totals"]["leads_de_enrolled"] == len(de_enrolled(conn)) < len(expected)
    rows = run_rows(conn)
    assert all(r[0][1] == "partial" for r in rows.values())
    assert sum(r[0][2] for r in rows.values()) == doc["totals"]["leads_de_enrolled"]
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0
    conn.execute("DROP TRIGGER zz_slow ON leads")
    code, doc, err = run(db_url, "--workers", "2")
    assert code == 0, err
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)


def test_a_failing_helper_fails_its_client_only(db_url: str, conn: psycopg.Connection) -> None:
    """The big client's fourth batch is refused, whichever worker runs it: that client fails (exit 2), the others succeed."""
    small, big = dataset(conn)
    expected = due_now(conn)
    conn.execute(
        f"""CREATE FUNCTION zz_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$;
            CREATE TRIGGER zz_refuse BEFORE UPDATE ON de_enrollment_runs FOR EACH ROW
              WHEN (NEW.client_id = '{big}' AND NEW.batches >= 4) EXECUTE FUNCTION zz_refuse();"""
    )
    code, doc, err = run(db_url, "--workers", "3", "--batch-size", "5")
    assert code == 2, err
    by_client = {c["client_id"]: c for c in doc["clients"]}
    assert by_client[big]["status"] == "failed" and "refused by a test trigger" in by_client[big]["error"]
    assert all(by_client[c]["status"] == "success" for c in small)
    rows = run_rows(conn)
    assert rows[big][0][1] == "failed"
    assert rows[big][0][2] == by_client[big]["leads_de_enrolled"] > 0
    assert due_by_client(conn)[big] > 0  # the rest is left for the next run
    assert_exactly_once(conn)
    assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0
    conn.execute("DROP TRIGGER zz_refuse ON de_enrollment_runs")
    code, doc, err = run(db_url, "--workers", "3")
    assert code == 0, err
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)


def test_sigterm_stops_every_worker_and_records_their_clients_failed(db_url: str, conn: psycopg.Connection) -> None:
    dataset(conn)
    slow_batches(conn, 0.3)
    proc = spawn(db_url, "--json", "--workers", "3", "--batch-size", "4")
    wait_until(lambda: conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE batches >= 1").fetchone()[0] >= 2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "deenroll: error: terminated (SIGTERM); the client in progress was recorded failed"
    rows = [r for rs in run_rows(conn).values() for r in rs]
    assert rows and all(r[1] in ("success", "failed") for r in rows), err
    failed = [r for r in rows if r[1] == "failed"]
    assert failed
    details = conn.execute("SELECT error_details FROM de_enrollment_runs WHERE status = 'failed'").fetchall()
    assert all("SIGTERM" in d for (d,) in details)
    assert_exactly_once(conn)
    assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0


def test_dry_run_with_workers_counts_the_same(db_url: str, conn: psycopg.Connection) -> None:
    dataset(conn)
    code1, one, _ = run(db_url, "--dry-run")
    code3, three, _ = run(db_url, "--dry-run", "--workers", "3")
    assert code1 == code3 == 0
    assert [c["client_id"] for c in one["clients"]] == [c["client_id"] for c in three["clients"]]
    assert [c["would_de_enroll"] for c in one["clients"]] == [c["would_de_enroll"] for c in three["clients"]]
    assert one["totals"]["completed"] + one["totals"]["opted_out"] == len(due_now(conn))
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs").fetchone()[0] == 0


@pytest.mark.parametrize(("value", "env"), [("0", False), ("65", False), ("-1", False), ("x", True)])
def test_bad_workers_are_refused_and_change_nothing(db_url: str, conn: psycopg.Connection, value: str, env: bool) -> None:
    make_clients(conn, clients=1, campaigns=1, leads=10)
    args = ("run",) if env else ("run", "--workers", value)
    result = run_cli(*args, db=db_url, env={"DE_ENROLLMENT_WORKERS": value} if env else None)
    assert result.code == 2
    assert "Traceback" not in result.stderr
    assert "workers" in result.stderr.lower() or "WORKERS" in result.stderr
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs").fetchone()[0] == 0
