"""The engine's SQL functions, called directly on a real PostgreSQL: a run's start, lock and
finish, the client list, concurrent batches and the claim's cost in one big campaign."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from engine_data import (
    CLIENT_A,
    CLIENT_B,
    CLIENT_C,
    assert_exactly_once,
    build_dataset,
    recount,
    run_all,
    stored,
)

# --------------------------------------------------------------------------- runs


def test_start_takes_the_client_lock_and_marks_dead_runs_failed(db_url: str, conn: psycopg.Connection) -> None:
    build_dataset(conn)
    dead = conn.execute(
        "INSERT INTO de_enrollment_runs (client_id, runner_host, runner_pid, batches) VALUES (%s, 'box7', 4242, 3) RETURNING id",
        (CLIENT_A,),
    ).fetchone()[0]
    other_client = conn.execute(
        "INSERT INTO de_enrollment_runs (client_id) VALUES (%s) RETURNING id", (CLIENT_B,)
    ).fetchone()[0]
    warnings: list[str] = []
    with psycopg.connect(db_url, autocommit=True) as runner, psycopg.connect(db_url, autocommit=True) as rival:
        runner.add_notice_handler(lambda d: warnings.append(d.message_primary or ""))
        run_id = runner.execute("SELECT start_de_enrollment_run(%s, 50, 1000, 'me', 7)", (CLIENT_A,)).fetchone()[0]
        assert run_id is not None
        assert rival.execute("SELECT start_de_enrollment_run(%s, 50, 1000)", (CLIENT_A,)).fetchone()[0] is None
        assert rival.execute("SELECT start_de_enrollment_run(%s, 50, 1000)", (CLIENT_C,)).fetchone()[0] is not None
        status, details, finished = conn.execute(
            "SELECT status, error_details, finished_at IS NOT NULL FROM de_enrollment_runs WHERE id = %s", (dead,)
        ).fetchone()
        assert status == "failed" and finished
        assert "box7" in details and "4242" in details and "stopped before finishing" in details
        assert any(str(dead) in w for w in warnings)
        # another client's running row is not this runner's business
        assert conn.execute("SELECT status FROM de_enrollment_runs WHERE id = %s", (other_client,)).fetchone()[0] == "running"
        row = conn.execute(
            "SELECT status, batch_size, max_runtime_ms, runner_host, runner_pid FROM de_enrollment_runs WHERE id = %s", (run_id,)
        ).fetchone()
        assert row == ("running", 50, 1000, "me", 7)
        # finishing releases the lock: the rival may start now
        runner.execute("SELECT finish_de_enrollment_run(%s, 'success')", (run_id,))
        assert rival.execute("SELECT start_de_enrollment_run(%s, 50, 1000)", (CLIENT_A,)).fetchone()[0] is not None


def test_start_refuses_bad_arguments(conn: psycopg.Connection) -> None:
    for args in ((CLIENT_A, 0, 1000), (CLIENT_A, 10, 0), (None, 10, 10)):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SELECT start_de_enrollment_run(%s::uuid, %s, %s)", args)
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs").fetchone()[0] == 0


def test_finish_records_status_duration_and_details(conn: psycopg.Connection) -> None:
    build_dataset(conn)
    run_id = conn.execute("SELECT start_de_enrollment_run(%s, 10, 1000)", (CLIENT_B,)).fetchone()[0]
    row = conn.execute(
        "SELECT status, error_details, duration_ms >= 0, finished_at >= run_at FROM finish_de_enrollment_run(%s, 'partial', 'budget')",
        (run_id,),
    ).fetchone()
    assert row == ("partial", "budget", True, True)
    # a finished run stays as it is
    assert conn.execute("SELECT status FROM finish_de_enrollment_run(%s, 'failed', 'late')", (run_id,)).fetchone()[0] == "partial"
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT finish_de_enrollment_run(%s, 'running')", (run_id,))
    # the lock is free again
    assert conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ).fetchone()[0] == 0


def test_clients_invalid_campaigns_and_dry_run_count(conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    conn.execute(
        "INSERT INTO campaigns (id, client_id, name, messages) VALUES (%s, %s, 'broken', '{\"steps\": 3}')",
        (bad := str(uuid.uuid4()), CLIENT_A),
    )
    conn.execute(
        "INSERT INTO leads (client_id, campaign_link_id, current_message_position, opted_out) VALUES (%s, %s, 9, false)",
        (CLIENT_A, bad),
    )
    # a STOP in a campaign whose sequence is malformed is honoured all the same
    stop = str(conn.execute(
        "INSERT INTO leads (client_id, campaign_link_id, current_message_position, opted_out) VALUES (%s, %s, 0, true) RETURNING id",
        (CLIENT_A, bad),
    ).fetchone()[0])
    ds.expected[stop] = "opted_out"
    ds.client_of[stop] = CLIENT_A
    clients = [str(r[0]) for r in conn.execute("SELECT client_id FROM de_enrollment_clients()")]
    assert sorted(clients) == sorted([CLIENT_A, CLIENT_B, CLIENT_C])
    invalid = conn.execute("SELECT client_id::text, campaign_id::text, messages_type, active_leads FROM de_enrollment_invalid_campaigns()").fetchall()
    assert invalid == [(CLIENT_A, bad, "object", 1)]  # the opted-out lead is not waiting on a length: it leaves
    assert conn.execute("SELECT count(*) FROM de_enrollment_invalid_campaigns(%s)", (CLIENT_B,)).fetchone()[0] == 0
    counts = conn.execute("SELECT client_id::text, sum(completed), sum(opted_out) FROM count_leads_for_de_enrollment() GROUP BY 1").fetchall()
    expected = {}
    for lead, outcome in ds.expected.items():
        c = expected.setdefault(ds.client_of[lead], [0, 0])
        c[0 if outcome == "completed" else 1] += 1
    assert {r[0]: [int(r[1]), int(r[2])] for r in counts} == expected
    # the claim leaves the invalid campaign's leads alone
    claimed = {str(r[0]) for r in conn.execute("SELECT lead_id FROM get_leads_for_de_enrollment(%s, 1000)", (CLIENT_A,))}
    assert claimed == set(ds.expected_for(CLIENT_A))
    # clients run least recently first
    run_all(conn, CLIENT_A)
    assert [str(r[0]) for r in conn.execute("SELECT client_id FROM de_enrollment_clients()")][-1] == CLIENT_A


def test_concurrent_batches_in_threads_process_each_lead_once(db_url: str, conn: psycopg.Connection) -> None:
    """Four sessions on the same client at once (the runner lock bypassed): SKIP LOCKED keeps them apart."""
    client = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO campaigns (client_id, name, messages) SELECT %s, 'k' || k, '[1, 2]' FROM generate_series(1, 4) k",
        (client,),
    )
    conn.execute(
        """INSERT INTO leads (client_id, campaign_link_id, current_message_position, opted_out)
           SELECT c.client_id, c.id, g %% 3, g %% 7 = 0 FROM campaigns c, generate_series(1, 150) g WHERE c.client_id = %s""",
        (client,),
    )
    expected = conn.execute("SELECT sum(completed + opted_out) FROM count_leads_for_de_enrollment(%s)", (client,)).fetchone()[0]
    assert expected > 100
    runs = [conn.execute("INSERT INTO de_enrollment_runs (client_id) VALUES (%s) RETURNING id", (client,)).fetchone()[0] for _ in range(4)]
    done: list[list[str]] = [[] for _ in runs]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(runs))

    def work(i: int) -> None:
        try:
            with psycopg.connect(db_url) as c:
                barrier.wait()
                while True:
                    rows = c.execute(
                        "SELECT lead_id::text FROM process_de_enrollment_batch(%s, ARRAY(SELECT lead_id FROM get_leads_for_de_enrollment(%s, 7)))",
                        (runs[i], client),
                    ).fetchall()
                    c.commit()
                    done[i] += [r[0] for r in rows]
                    if not rows:
                        break
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(runs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    every = [lead for d in done for lead in d]
    assert len(every) == len(set(every)) == expected
    assert_exactly_once(conn)
    conn.execute("SELECT apply_campaign_stats_deltas()")
    assert stored(conn) == recount(conn)
    totals = conn.execute("SELECT sum(leads_de_enrolled) FROM de_enrollment_runs WHERE client_id = %s", (client,)).fetchone()[0]
    assert totals == expected


def test_start_and_finish_commit_synchronously_in_an_asynchronous_session(db_url: str) -> None:
    """The runner's session commits batches asynchronously; a run's start and end are made durable."""
    with psycopg.connect(db_url) as c:
        build_dataset(c)
        c.execute("SET synchronous_commit = off")
        c.commit()
        run_id = c.execute("SELECT start_de_enrollment_run(%s, 10, 1000)", (CLIENT_A,)).fetchone()[0]
        assert c.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        c.commit()
        assert c.execute("SHOW synchronous_commit").fetchone()[0] == "off"
        c.execute("SELECT * FROM process_de_enrollment_batch(%s, ARRAY(SELECT lead_id FROM get_leads_for_de_enrollment(%s)))", (run_id, CLIENT_A))
        assert c.execute("SHOW synchronous_commit").fetchone()[0] == "off"
        c.commit()
        c.execute("SELECT finish_de_enrollment_run(%s, 'success')", (run_id,))
        assert c.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        c.commit()
        assert c.execute("SHOW synchronous_commit").fetchone()[0] == "off"


def test_claim_in_one_big_campaign_never_scans_the_table(conn: psycopg.Connection) -> None:
    """One campaign holding most of the table, its few due leads stored last: the claim still goes by the index.

    (Planning cannot know the sequence length, so without the function's settings the
    planner takes a third of the campaign for due and reads the table from the start.)
    """
    client = str(uuid.uuid4())
    campaign = conn.execute(
        "INSERT INTO campaigns (client_id, name, messages) VALUES (%s, 'big', '[1, 2, 3]') RETURNING id", (client,)
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO leads (client_id, campaign_link_id, current_message_position) SELECT %s, %s, 1 FROM generate_series(1, 150000)",
        (client, campaign),
    )
    conn.execute(
        "INSERT INTO leads (client_id, campaign_link_id, current_message_position) SELECT %s, %s, 3 FROM generate_series(1, 150)",
        (client, campaign),
    )
    conn.execute("VACUUM ANALYZE leads")
    pages = conn.execute("SELECT relpages FROM pg_class WHERE relname = 'leads'").fetchone()[0]
    assert pages > 1000

    def pages_touched(sql: str) -> tuple[int, int]:
        conn.execute("BEGIN")
        conn.execute(sql, (client,))  # plans cached
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        node = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", (client,)).fetchone()[0][0]["Plan"]
        conn.execute("ROLLBACK")
        return node["Actual Rows"], node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)

    rows, touched = pages_touched("SELECT * FROM get_leads_for_de_enrollment(%s, 100)")
    assert rows == 100 and touched < 500, touched  # a few buffer visits per lead claimed (index, heap, held check)
    rows, touched = pages_touched("SELECT * FROM count_leads_for_de_enrollment(%s)")
    assert rows == 1 and touched < 400, touched
    rows, touched = pages_touched("SELECT * FROM de_enrollment_invalid_campaigns(%s)")
    assert rows == 0 and touched < 400, touched
    conn.execute("UPDATE campaigns SET is_active = false WHERE id = %s", (campaign,))
    conn.execute("UPDATE leads SET current_message_position = 1 WHERE campaign_link_id = %s AND current_message_position = 3", (campaign,))
    conn.execute("VACUUM ANALYZE leads")
    rows, touched = pages_touched("SELECT * FROM de_enrollment_clients() WHERE client_id = %s")
    assert rows == 0 and touched < 400, touched  # nothing due in the deactivated campaign, found out by the index
