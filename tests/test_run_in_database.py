"""The run's procedure, driven both ways it is driven: `deenroll run` (a CALL per client on each
connection) and one `CALL deenroll.run_de_enrollment()` from a login that is only a member of
deenroll_runner, as pg_cron runs it. The same scenarios for both: correctness on the crafted
dirty data set, the budget, a session killed or cancelled mid-run, two at once."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable

import psycopg
import pytest
from psycopg import conninfo

from engine_data import assert_exactly_once, build_dataset, de_enrolled, recount, stored
from processes import CALL_SCRIPT, due_now, make_clients, slow_batches, spawn, wait_until

pytestmark = pytest.mark.slow

Driver = Callable[..., subprocess.Popen]


@pytest.fixture(params=["deenroll run", "CALL"])
def drive(request, db_url: str, runner_login: str) -> Driver:
    """Starts one run in its own process: `deenroll run` or the procedure's CALL."""

    def start(batch_size: int = 100, max_runtime_ms: int = 240000) -> subprocess.Popen:
        if request.param == "deenroll run":
            return spawn(db_url, "--json", "--batch-size", str(batch_size), "--max-runtime", str(max_runtime_ms))
        return subprocess.Popen(
            [sys.executable, "-c", CALL_SCRIPT, runner_login, str(batch_size), str(max_runtime_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    start.kind = request.param  # type: ignore[attr-defined]
    return start


def _finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, dict, str]:
    out, err = proc.communicate(timeout=timeout)
    doc = json.loads(out) if out.strip() else {}
    return proc.returncode, doc, err


def _nothing_left_open(conn: psycopg.Connection) -> None:
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status = 'running'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0


def test_the_crafted_data_set_is_de_enrolled_exactly_once(drive: Driver, conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    before = {r[0]: r[1:] for r in conn.execute(
        "SELECT id::text, is_active, completed_at, campaign_history FROM leads WHERE id::text = ANY (%s)", (ds.untouched,))}
    code, doc, err = _finish(drive(batch_size=3))
    assert code in (0, 1), err  # 1: the data set holds leads the database refuses (held)
    assert de_enrolled(conn) == ds.expected
    after = {r[0]: r[1:] for r in conn.execute(
        "SELECT id::text, is_active, completed_at, campaign_history FROM leads WHERE id::text = ANY (%s)", (ds.untouched,))}
    assert after == before
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    _nothing_left_open(conn)
    statuses = {c["client_id"]: c["status"] for c in doc["clients"]}
    rows = dict(conn.execute("SELECT client_id::text, status FROM de_enrollment_runs").fetchall())
    assert statuses == rows and set(rows.values()) <= {"success", "partial"}


def test_the_budget_ends_the_run_between_batches(drive: Driver, conn: psycopg.Connection) -> None:
    make_clients(conn, clients=2, campaigns=2, leads=60)
    expected = due_now(conn)
    slow_batches(conn, 0.5)
    code, doc, err = _finish(drive(batch_size=4, max_runtime_ms=1500))
    assert code in (0, 1), err
    statuses = conn.execute("SELECT status, error_details FROM de_enrollment_runs").fetchall()
    assert statuses and all(s == "partial" and "runtime budget of 1500 ms ran out" in d for s, d in statuses)
    assert 0 < len(de_enrolled(conn)) < len(expected)
    _nothing_left_open(conn)
    conn.execute("DROP TRIGGER zz_slow ON leads")
    code, _, err = _finish(drive())
    assert code == 0, err
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)


@pytest.mark.parametrize("stop", ["pg_terminate_backend", "pg_cancel_backend"])
def test_a_session_stopped_mid_run_leaves_its_client_to_the_next_run_at_once(
    drive: Driver, conn: psycopg.Connection, stop: str
) -> None:
    make_clients(conn, clients=1, campaigns=2, leads=100)
    expected = due_now(conn)
    slow_batches(conn, 0.3)
    proc = drive(batch_size=4)

    def backend() -> int | None:
        row = conn.execute(
            """SELECT r.batches, a.pid FROM de_enrollment_runs r
                 JOIN pg_stat_activity a ON a.datname = current_database() AND a.state = 'active' AND a.pid <> pg_backend_pid()
                  AND a.query LIKE '%%CALL deenroll.run_de_enrollment%%'
                WHERE r.status = 'running'"""
        ).fetchone()
        return row[1] if row and row[0] >= 1 else None

    wait_until(lambda: backend() is not None or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, proc.communicate()
    first = conn.execute("SELECT id FROM de_enrollment_runs").fetchone()[0]
    conn.execute(f"SELECT {stop}(%s)", (backend(),))
    code, doc, err = _finish(proc)
    conn.execute("DROP TRIGGER zz_slow ON leads")
    if drive.kind == "deenroll run":  # type: ignore[attr-defined]
        if stop == "pg_terminate_backend":
            # it reconnects and goes on with that client in the same run, saying so once
            assert code == 0, err
            assert err.count("reconnected, going on with it") == 1, err
            [c] = doc["clients"]
            assert c["status"] == "success" and any(str(first) in w for w in c["warnings"]), c
        else:
            # a cancel is a stop: the client fails, recorded, and the next run finishes it
            assert code == 2, err
            code, _, err = _finish(drive())
            assert code == 0, err
    else:
        assert code != 0 and "Traceback" in err  # the CALL itself failed
        code, doc, err = _finish(drive())
        assert code == 0, err
        [c] = doc["clients"]
        assert c["status"] == "success"
    dead_status, details = conn.execute(
        "SELECT status, error_details FROM de_enrollment_runs WHERE id = %s", (first,)
    ).fetchone()
    assert dead_status == "failed", details
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    _nothing_left_open(conn)


def test_two_runs_at_once_share_the_clients(drive: Driver, conn: psycopg.Connection) -> None:
    make_clients(conn, clients=6, campaigns=2, leads=80)
    expected = due_now(conn)
    slow_batches(conn, 0.05)
    procs = [drive(batch_size=5), drive(batch_size=5)]
    docs = []
    for p in procs:
        code, doc, err = _finish(p)
        assert code == 0, err
        docs.append(doc)
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    _nothing_left_open(conn)
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status <> 'success'").fetchone()[0] == 0
    assert conn.execute("SELECT sum(leads_de_enrolled) FROM de_enrollment_runs").fetchone()[0] == len(expected)


def _call(url: str, sql: str = "CALL deenroll.run_de_enrollment()") -> dict:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(sql).fetchone()[0]


def test_a_run_queued_right_after_another_passes_over_idle_clients(runner_login: str, conn: psycopg.Connection) -> None:
    """pg_cron starts a queued run as soon as the slow one ends: clients with nothing due that were
    run a moment ago get no new run row; a client with a lead due again is run at once."""
    clients = make_clients(conn, clients=4, campaigns=1, leads=20)
    first = _call(runner_login)
    assert sorted(c["client_id"] for c in first["clients"]) == sorted(clients)
    assert _call(runner_login)["clients"] == []
    lead = conn.execute(
        "SELECT id, client_id::text FROM leads WHERE client_id = %s AND is_active LIMIT 1", (clients[2],)
    ).fetchone()
    conn.execute("UPDATE leads SET current_message_position = 3 WHERE id = %s", (lead[0],))
    again = _call(runner_login)
    assert [(c["client_id"], c["leads_de_enrolled"]) for c in again["clients"]] == [(clients[2], 1)]
    # once the idle clients' last run is older than five minutes, they are run again (their health)
    conn.execute("UPDATE de_enrollment_runs SET run_at = run_at - interval '6 minutes'")
    assert sorted(c["client_id"] for c in _call(runner_login)["clients"]) == sorted(clients)
    assert_exactly_once(conn)


def test_a_statement_timeout_of_the_role_never_cuts_the_run(runner_login: str, conn: psycopg.Connection) -> None:
    """statement_timeout covers the whole CALL: the run ends ahead of it, recorded partial."""
    make_clients(conn, clients=2, campaigns=2, leads=60)
    expected = due_now(conn)
    slow_batches(conn, 0.4)
    user = conninfo.conninfo_to_dict(runner_login)["user"]
    conn.execute(f"ALTER ROLE {user} SET statement_timeout = '4s'")
    summary = _call(runner_login, "CALL deenroll.run_de_enrollment(p_batch_size => 4)")
    rows = conn.execute("SELECT status, error_details FROM de_enrollment_runs").fetchall()
    assert rows and all(s in ("partial", "success") for s, _ in rows)
    assert any(s == "partial" and "ahead of the statement_timeout (4000 ms)" in d for s, d in rows), rows
    assert 0 < len(de_enrolled(conn)) < len(expected)
    assert len(summary["clients"]) + summary["not_reached"] == 2
    _nothing_left_open(conn)
    conn.execute("DROP TRIGGER zz_slow ON leads")
    conn.execute(f"ALTER ROLE {user} RESET statement_timeout")
    _call(runner_login)
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)


def test_bad_options_change_nothing(runner_login: str, conn: psycopg.Connection) -> None:
    make_clients(conn, clients=1, campaigns=1, leads=10)
    for sql, said in (
        ("CALL deenroll.run_de_enrollment(p_batch_size => 0)", "batch size must be a positive integer"),
        ("CALL deenroll.run_de_enrollment(p_max_runtime_ms => -5)", "max runtime must be at least 1 millisecond"),
        ("CALL deenroll.run_de_enrollment(p_lease_ms => 10)", "lease must be between 1000 and 600000 milliseconds"),
        (f"CALL deenroll.run_de_enrollment(p_client_id => '{uuid.uuid4()}')", "has no campaigns and no leads"),
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=said):
            _call(runner_login, sql)
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs").fetchone()[0] == 0


def test_a_login_outside_deenroll_runner_may_not_call_it(db_url: str, conn: psycopg.Connection) -> None:
    name = f"deenroll_t_stranger_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {name} LOGIN")
    try:
        params = conninfo.conninfo_to_dict(db_url)
        params["user"] = name
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _call(conninfo.make_conninfo(**params))
    finally:
        conn.execute(f"DROP ROLE {name}")


def test_the_procedures_defaults_are_the_ones_run_help_shows(conn: psycopg.Connection) -> None:
    from deenroll.runner import options as runner

    args = conn.execute(
        "SELECT pg_get_function_arguments('deenroll.run_de_enrollment'::regproc)"
    ).fetchone()[0]
    for name, value in (("p_batch_size", runner.BATCH_SIZE), ("p_max_runtime_ms", runner.MAX_RUNTIME_MS)):
        assert f"{name} integer DEFAULT {value}" in args, args
    # the lease's default is the options function's
    assert "p_lease_ms integer DEFAULT NULL" in args, args
    assert conn.execute("SELECT deenroll.de_enrollment_run_options(1, 1, NULL)").fetchone()[0] == runner.LEASE_MS
