"""A run's lease on its client, function by function: taken, renewed, taken over when expired, given back."""

from __future__ import annotations

import psycopg
import pytest

from deenroll.runner import BATCH_SQL
from engine_data import CLIENT_A, build_dataset


def lease(conn: psycopg.Connection) -> tuple | None:
    return conn.execute(
        "SELECT run_id::text, runner_host, runner_pid, ttl, expires_at > clock_timestamp() FROM deenroll.client_leases "
        "WHERE client_id = %s",
        (CLIENT_A,),
    ).fetchone()


def expire(conn: psycopg.Connection) -> None:
    """What the passing of time does to a lease nobody renews."""
    conn.execute(
        "UPDATE deenroll.client_leases SET heartbeat_at = heartbeat_at - ttl * 2, expires_at = expires_at - ttl * 2"
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
