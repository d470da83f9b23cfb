"""A run's lease on its client, function by function: taken, renewed, taken over when its run is dead
(session ended, server restarted, lease expired), given back."""

from __future__ import annotations

import psycopg
import pytest

from engine_data import CLIENT_A, build_dataset
from processes import wait_until

# One batch of a run in one statement (run id, client id, batch size): what the run's procedure
# runs for each batch (run_de_enrollment_batches), driven by hand here.
BATCH_SQL = """SELECT b.lead_id, b.outcome
  FROM public.de_enrollment_heartbeat(%s::uuid) AS h (run_id)
 CROSS JOIN LATERAL public.process_de_enrollment_batch(h.run_id,
       ARRAY(SELECT g.lead_id FROM public.get_leads_for_de_enrollment(%s::uuid, %s::integer) AS g)) AS b"""


def lease(conn: psycopg.Connection) -> tuple | None:
    return conn.execute(
        "SELECT run_id::text, runner_host, runner_pid, ttl, expires_at > clock_timestamp() FROM deenroll.client_leases "
        "WHERE client_id = %s",
        (CLIENT_A,),
    ).fetchone()


def expire(conn: psycopg.Connection) -> None:
    """What the passing of time does to a lease nobody renews, on a server that has not restarted
    since: its last sign of life stays after the server's start, and (on a server younger than a
    tenth of the lease, whose heartbeat would not renew yet) the server is first let age that much."""
    conn.execute(
        """SELECT pg_sleep(greatest(0, extract(epoch FROM pg_postmaster_start_time() + max(ttl) / 10 - clock_timestamp())
                                       + 0.01))
             FROM deenroll.client_leases"""
    )
    conn.execute(
        """UPDATE deenroll.client_leases
              SET heartbeat_at = greatest(heartbeat_at - ttl * 2, pg_postmaster_start_time()),
                  expires_at = clock_timestamp() - interval '1 millisecond'"""
    )


def test_an_expired_lease_is_taken_over_and_its_run_refused(db_url: str, conn: psycopg.Connection) -> None:
    build_dataset(conn)
    warnings: list[str] = []
    with psycopg.connect(db_url, autocommit=True) as dead, psycopg.connect(db_url, autocommit=True) as rival:
        rival.add_notice_handler(lambda d: warnings.append(d.message_primary or ""))
        first = str(dead.execute("SELECT start_de_enrollment_run(%s, 10, 3000, 'box1', 11)", (CLIENT_A,)).fetchone()[0])
        run_id, host, pid, ttl, live = lease(conn)
        assert (run_id, host, pid, ttl.total_seconds(), live) == (first, "box1", 11, 30.0, True)  # the default
        assert rival.execute("SELECT start_de_enrollment_run(%s, 10, 3000)", (CLIENT_A,)).fetchone()[0] is None

        expire(conn)
        second = str(rival.execute(
            "SELECT start_de_enrollment_run(%s, 10, 60000, 'box2', 22, NULL, 2000)", (CLIENT_A,)).fetchone()[0])
        run_id, host, pid, ttl, live = lease(conn)
        assert (run_id, host, pid, ttl.total_seconds(), live) == (second, "box2", 22, 2.0, True)
        status, details = conn.execute("SELECT status, error_details FROM de_enrollment_runs WHERE id = %s", (first,)).fetchone()
        assert status == "failed" and "box1" in details and "pid 11" in details and "stopped before finishing" in details
        assert "its lease expired" in details
        assert any(first in w for w in warnings)

        # the stalled runner comes back: its batches are refused, its finish leaves the new lease alone
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="no longer holds its client's lease"):
            dead.execute(BATCH_SQL, (first, CLIENT_A, 10))
        assert dead.execute("SELECT status FROM finish_de_enrollment_run(%s, 'success')", (first,)).fetchone()[0] == "failed"
        assert lease(conn)[0] == second
        assert rival.execute(BATCH_SQL, (second, CLIENT_A, 10)).fetchall()
        rival.execute("SELECT finish_de_enrollment_run(%s, 'success')", (second,))
        assert lease(conn) is None


def test_the_heartbeat_renews_the_lease_and_sets_only_its_transaction(db_url: str, conn: psycopg.Connection) -> None:
    build_dataset(conn)
    with psycopg.connect(db_url) as runner:
        run_id = runner.execute("SELECT start_de_enrollment_run(%s, 10, 8000)", (CLIENT_A,)).fetchone()[0]
        runner.commit()
        before = runner.execute("SHOW lock_timeout").fetchone()[0], runner.execute("SHOW synchronous_commit").fetchone()[0]
        runner.commit()
        expire(conn)
        assert not lease(conn)[4]
        runner.execute("SELECT de_enrollment_heartbeat(%s)", (run_id,))
        assert runner.execute("SHOW lock_timeout").fetchone()[0] == "5s"  # bounded apart from the lease
        assert runner.execute("SHOW synchronous_commit").fetchone()[0] == "off"
        runner.commit()
        assert lease(conn)[4]  # renewed: its run still holds it, nobody had taken it
        # nothing of it outlives the transaction
        assert (runner.execute("SHOW lock_timeout").fetchone()[0], runner.execute("SHOW synchronous_commit").fetchone()[0]) == before
        runner.rollback()
        runner.execute("SELECT finish_de_enrollment_run(%s, 'success')", (run_id,))
        runner.commit()
    assert lease(conn) is None


def test_a_start_never_waits_for_a_lease_row_a_batch_holds(db_url: str, conn: psycopg.Connection) -> None:
    """A batch renewing an expired lease holds its row until it commits: a rival skips the client at once."""
    build_dataset(conn)
    with psycopg.connect(db_url) as runner, psycopg.connect(db_url, autocommit=True) as rival:
        run_id = runner.execute("SELECT start_de_enrollment_run(%s, 10, 8000)", (CLIENT_A,)).fetchone()[0]
        runner.commit()
        expire(conn)
        runner.execute("SELECT de_enrollment_heartbeat(%s)", (run_id,))  # the renewal, not committed yet
        rival.execute("SET statement_timeout = '3s'")  # a wait would end in an error, not a NULL
        assert rival.execute("SELECT start_de_enrollment_run(%s, 10, 8000)", (CLIENT_A,)).fetchone()[0] is None
        runner.commit()
        assert rival.execute("SELECT start_de_enrollment_run(%s, 10, 8000)", (CLIENT_A,)).fetchone()[0] is None
        assert conn.execute("SELECT status FROM de_enrollment_runs WHERE id = %s", (run_id,)).fetchone()[0] == "running"
        runner.execute("SELECT finish_de_enrollment_run(%s, 'success')", (run_id,))
        runner.commit()
    assert lease(conn) is None


def session_row(conn: psycopg.Connection, run_id: str) -> tuple | None:
    return conn.execute(
        "SELECT backend_pid, backend_start IS NOT NULL FROM deenroll.lease_sessions WHERE run_id = %s", (run_id,)
    ).fetchone()


def start_direct(runner: psycopg.Connection, lease_ms: int = 600000) -> str:
    """A run started as the runner does on a direct connection: its login pid is this session's."""
    return str(runner.execute(
        "SELECT start_de_enrollment_run(%s, 10, 600000, 'box1', 11, %s, %s)",
        (CLIENT_A, runner.info.backend_pid, lease_ms),
    ).fetchone()[0])


def failed_details(conn: psycopg.Connection, run_id: str) -> str:
    status, details = conn.execute(
        "SELECT status, error_details FROM de_enrollment_runs WHERE id = %s", (run_id,)).fetchone()
    assert status == "failed", (status, details)
    return details


def test_a_run_whose_session_ended_is_taken_over_at_once(db_url: str, conn: psycopg.Connection) -> None:
    build_dataset(conn)
    notices: list[str] = []
    with psycopg.connect(db_url, autocommit=True) as rival:
        rival.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        dead = psycopg.connect(db_url, autocommit=True)
        pid = dead.info.backend_pid
        first = start_direct(dead)  # a ten-minute lease: only the session's end can free it early
        assert session_row(conn, first) == (pid, True)

        # while its session lives, the client is skipped, and the notice says who has it
        assert rival.execute("SELECT start_de_enrollment_run(%s, 10, 3000)", (CLIENT_A,)).fetchone()[0] is None
        assert any(first in n and "box1" in n and "pid 11" in n for n in notices), notices

        dead.close()
        wait_until(lambda: conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] == 0)
        second = str(rival.execute("SELECT start_de_enrollment_run(%s, 10, 3000)", (CLIENT_A,)).fetchone()[0])
        assert lease(conn)[0] == second
        assert f"its database session (backend pid {pid}) ended" in failed_details(conn, first)
        assert session_row(conn, first) is None  # gone with its lease
        rival.execute("SELECT finish_de_enrollment_run(%s, 'success')", (second,))
    assert lease(conn) is None


def test_a_recorded_pid_another_session_now_has_is_not_the_run(db_url: str, conn: psycopg.Connection) -> None:
    """The server may give an ended session's pid to a new one: the session's start tells them apart."""
    build_dataset(conn)
    with psycopg.connect(db_url, autocommit=True) as runner, psycopg.connect(db_url, autocommit=True) as rival:
        first = start_direct(runner)
        assert rival.execute("SELECT start_de_enrollment_run(%s, 10, 3000)", (CLIENT_A,)).fetchone()[0] is None
        # the recorded session started an hour before the live session with its pid: they differ
        conn.execute("UPDATE deenroll.lease_sessions SET backend_start = backend_start - interval '1 hour'")
        second = rival.execute("SELECT start_de_enrollment_run(%s, 10, 3000)", (CLIENT_A,)).fetchone()[0]
        assert second is not None
        assert f"its database session (backend pid {runner.info.backend_pid}) ended" in failed_details(conn, first)
        rival.execute("SELECT finish_de_enrollment_run(%s, 'success')", (second,))


def test_a_login_pid_that_is_not_this_session_records_nothing(db_url: str, conn: psycopg.Connection) -> None:
    """Behind a pooler the login pid is the pooler's session's: the lease then ends by its expiry alone."""
    build_dataset(conn)
    with psycopg.connect(db_url, autocommit=True) as runner, psycopg.connect(db_url, autocommit=True) as rival:
        run_id = str(runner.execute(
            "SELECT start_de_enrollment_run(%s, 10, 60000, 'box1', 11, %s, 600000)",
            (CLIENT_A, rival.info.backend_pid),
        ).fetchone()[0])
        assert session_row(conn, run_id) is None
        rival.close()  # the session the login pid named ends: the run goes on holding its client
        with psycopg.connect(db_url, autocommit=True) as third:
            assert third.execute("SELECT start_de_enrollment_run(%s, 10, 3000)", (CLIENT_A,)).fetchone()[0] is None
        runner.execute("SELECT finish_de_enrollment_run(%s, 'success')", (run_id,))
    assert conn.execute("SELECT count(*) FROM deenroll.lease_sessions").fetchone()[0] == 0


def test_a_run_older_than_the_server_start_is_taken_over_at_once(db_url: str, conn: psycopg.Connection) -> None:
    """Its last sign of life came before the server's last start: its session died with the server."""
    build_dataset(conn)
    with psycopg.connect(db_url, autocommit=True) as runner, psycopg.connect(db_url, autocommit=True) as rival:
        # a pooled run (nothing recorded) with a lease that has not expired
        first = str(runner.execute(
            "SELECT start_de_enrollment_run(%s, 10, 60000, 'box1', 11, NULL, 600000)", (CLIENT_A,)).fetchone()[0])
        assert rival.execute("SELECT start_de_enrollment_run(%s, 10, 3000)", (CLIENT_A,)).fetchone()[0] is None
        conn.execute("UPDATE deenroll.client_leases SET heartbeat_at = pg_postmaster_start_time() - interval '1 second'")
        assert lease(conn)[4]  # not expired
        second = rival.execute("SELECT start_de_enrollment_run(%s, 10, 3000)", (CLIENT_A,)).fetchone()[0]
        assert second is not None
        assert "the database server restarted at" in failed_details(conn, first)
        rival.execute("SELECT finish_de_enrollment_run(%s, 'success')", (second,))


@pytest.mark.parametrize("bad", [999, 600001, 0, -1])
def test_a_lease_lasts_one_second_to_ten_minutes(conn: psycopg.Connection, bad: int) -> None:
    build_dataset(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="lease must be between 1000 and 600000 milliseconds"):
        conn.execute("SELECT start_de_enrollment_run(%s, 10, 3000, NULL, NULL, NULL, %s)", (CLIENT_A, bad))
    assert lease(conn) is None
