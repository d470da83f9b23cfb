"""One rule tells a live run from a dead one (deenroll.de_enrollment_run_death), and everything
that needs it asks it: taking a client over, the runs another session may help, the runs that
health and the daily summary count as failed, and health's stuck leads, which leave out the due
leads a live run of their client is taking (held leads stay stuck: no run takes them)."""

from __future__ import annotations

import psycopg
import pytest

from conftest import add_campaign, add_leads, add_run, new_id
from deenroll.database import Target
from deenroll.migrate import commands
from processes import wait_until

pytestmark = pytest.mark.schema  # on PostgreSQL 18 and on Debian's 15

DUE = 501  # one more than health's error threshold for stuck leads
LEASE_MS = 600_000  # the longest lease: alive for the whole test whatever the machine's speed


def _client_with_due_leads(conn: psycopg.Connection) -> tuple[str, str]:
    client = new_id()
    campaign = add_campaign(conn, client, messages=3, age="1 minute")
    add_leads(conn, campaign, client, DUE, position=3)  # finished: due as completed
    return client, campaign


def _start(conn: psycopg.Connection, client: str, login_pid: int | None = None) -> str:
    return str(conn.execute(
        "SELECT start_de_enrollment_run(%s, 100, 240000, 'test host', 1, %s, %s)", (client, login_pid, LEASE_MS)
    ).fetchone()[0])


def _death(conn: psycopg.Connection, run_id: str) -> str | None:
    return conn.execute("SELECT deenroll.de_enrollment_run_death(%s)", (run_id,)).fetchone()[0]


def _health(conn: psycopg.Connection, client: str) -> tuple:
    return conn.execute(
        "SELECT stuck_leads, failed_runs_24h, status FROM de_enrollment_health WHERE client_id = %s", (client,)
    ).fetchone()


def _open(conn: psycopg.Connection) -> set[str]:
    return {str(r) for (r,) in conn.execute("SELECT run_id FROM deenroll.de_enrollment_open_runs()")}


def _expire(conn: psycopg.Connection, run_id: str) -> None:
    """What time does to a lease nobody renews: expired, its last sign of life still after the server's start."""
    conn.execute(
        """UPDATE deenroll.client_leases
              SET heartbeat_at = greatest(clock_timestamp() - interval '1 second', pg_postmaster_start_time()),
                  expires_at = clock_timestamp() - interval '1 millisecond'
            WHERE run_id = %s""",
        (run_id,),
    )


def test_due_leads_of_a_client_whose_run_is_alive_are_not_stuck_and_of_a_dead_run_are(conn: psycopg.Connection) -> None:
    client, _ = _client_with_due_leads(conn)
    run_id = _start(conn, client)

    assert _death(conn, run_id) is None
    assert run_id in _open(conn)
    assert _health(conn, client) == (0, 0, "ok")  # the live run is taking them
    assert conn.execute("SELECT check_de_enrollment_health()").fetchone()[0].startswith("deenroll health:")
    # the list of stuck leads still shows them: it says what is due, not who is on it
    assert conn.execute("SELECT count(*) FROM de_enrollment_stuck_leads WHERE client_id = %s", (client,)).fetchone() == (DUE,)

    _expire(conn, run_id)
    assert _death(conn, run_id).startswith("its lease expired at ")
    assert run_id not in _open(conn)
    assert _health(conn, client) == (DUE, 1, "error")  # the dead run takes nothing, and it counts as failed
    with pytest.raises(psycopg.errors.RaiseException) as failed:
        conn.execute("SELECT check_de_enrollment_health()")
    assert f"{client}: {DUE} stuck leads (limit 500)" in failed.value.diag.message_primary
    assert conn.execute(
        "SELECT failed_runs, running_runs FROM de_enrollment_daily_summary WHERE client_id = %s", (client,)
    ).fetchone() == (1, 0)

    # the next start takes the client over, in the same words
    _start(conn, client)
    status, details = conn.execute("SELECT status, error_details FROM de_enrollment_runs WHERE id = %s", (run_id,)).fetchone()
    assert status == "failed" and "its lease expired at " in details


def test_a_run_whose_session_ended_is_dead_at_once(db_url: str, conn: psycopg.Connection) -> None:
    client, _ = _client_with_due_leads(conn)
    with psycopg.connect(db_url, autocommit=True) as runner:
        pid = runner.info.backend_pid
        run_id = _start(runner, client, login_pid=pid)
        assert _death(conn, run_id) is None
        assert _health(conn, client)[0] == 0
    # the session's end is asynchronous: until the server no longer lists it
    wait_until(lambda: conn.execute("SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s)", (pid,)).fetchone()[0])
    assert _death(conn, run_id) == f"its database session (backend pid {pid}) ended"
    assert run_id not in _open(conn)
    assert _health(conn, client)[:2] == (DUE, 1)


def test_held_leads_stay_stuck_while_a_run_is_alive(conn: psycopg.Connection) -> None:
    client, campaign = _client_with_due_leads(conn)
    conn.execute(
        """INSERT INTO deenroll.held_leads (lead_id, client_id, campaign_id, reason, fingerprint)
           SELECT l.id, l.client_id, c.id, 'check_violation', public.de_enrollment_lead_fingerprint(l.xmin, c.id, c.messages)
             FROM leads AS l JOIN campaigns AS c ON c.id = l.campaign_link_id
            WHERE l.client_id = %s
            LIMIT 2""",
        (client,),
    )
    _start(conn, client)
    assert _health(conn, client)[0] == 2


def test_a_running_run_without_a_lease_dies_after_twice_its_budget(conn: psycopg.Connection) -> None:
    """Rows written before leases existed, or by hand: the age rule the views always had."""
    client = new_id()
    add_run(conn, client, "running", "5 minutes", duration_ms=None, max_runtime_ms=1000)
    add_run(conn, client, "running", "1 minute", duration_ms=None)  # within 2 x 240 s
    add_run(conn, client, "success", "2 minutes")
    deaths = conn.execute(
        "SELECT run_at < now() - interval '2 minutes', deenroll.de_enrollment_run_death(id) FROM de_enrollment_runs "
        "WHERE client_id = %s AND status = 'running' ORDER BY run_at",
        (client,),
    ).fetchall()
    assert deaths[0][0] and deaths[0][1].startswith("it holds no lease and started at ")
    assert deaths[1] == (False, None)
    finished = conn.execute(
        "SELECT deenroll.de_enrollment_run_death(id) FROM de_enrollment_runs WHERE client_id = %s AND status = 'success'",
        (client,),
    ).fetchone()
    assert finished == (None,)


def test_the_analyst_reads_due_leads_through_the_functions_inlined_into_the_views(conn: psycopg.Connection) -> None:
    """A view runs the functions it calls, and what their bound bodies call, with its reader's rights."""
    client, _ = _client_with_due_leads(conn)
    opted = add_campaign(conn, client, age="1 minute", raw_messages="[]")  # a draft: only a STOP makes its leads due
    add_leads(conn, opted, client, 2, position=0, opted_out=True)
    _start(conn, client)
    conn.execute("SET ROLE deenroll_analyst")
    try:
        due = conn.execute(
            "SELECT outcome, total_messages, count(*) FROM de_enrollment_due_leads WHERE client_id = %s "
            "GROUP BY 1, 2 ORDER BY 1",
            (client,),
        ).fetchall()
        health = _health(conn, client)
    finally:
        conn.execute("RESET ROLE")
    assert due == [("completed", 3, DUE), ("opted_out", 0, 2)]
    assert health == (0, 0, "ok")


def test_the_rule_holds_on_a_database_rolled_back_before_the_leases(db_url: str, conn: psycopg.Connection) -> None:
    """Health keeps working at every level this release can be rolled back to: before the lease
    tables, a running run is judged by its age alone."""
    commands.rollback(Target(db_url, "test"), "0024_isolate_dirty_platform_data")
    assert conn.execute("SELECT to_regclass('deenroll.client_leases')").fetchone() == (None,)
    client = new_id()
    add_run(conn, client, "running", "5 minutes", duration_ms=None, max_runtime_ms=1000)
    add_run(conn, client, "running", "1 minute", duration_ms=None)
    assert conn.execute(
        "SELECT deenroll.de_enrollment_run_death(id) IS NOT NULL FROM de_enrollment_runs WHERE client_id = %s ORDER BY run_at",
        (client,),
    ).fetchall() == [(True,), (False,)]
    assert conn.execute("SELECT failed_runs_24h FROM de_enrollment_health WHERE client_id = %s", (client,)).fetchone() == (1,)
    assert conn.execute("SELECT check_de_enrollment_health()").fetchone()[0].startswith("deenroll health:")
