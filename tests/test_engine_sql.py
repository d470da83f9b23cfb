"""The engine's SQL functions, called directly on a real PostgreSQL."""

from __future__ import annotations

import re
import threading
import uuid

import psycopg
import pytest

from engine_data import (
    CLIENT_A,
    CLIENT_B,
    CLIENT_C,
    CLIENT_D,
    assert_exactly_once,
    build_dataset,
    de_enrolled,
    recount,
    run_all,
    stored,
)

# --------------------------------------------------------------------------- claim


def test_claim_returns_exactly_the_due_leads_with_their_reason(conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    for client in (CLIENT_A, CLIENT_B, CLIENT_C, CLIENT_D):
        rows = conn.execute(
            "SELECT lead_id, reason, client_id, total_messages FROM get_leads_for_de_enrollment(%s, 1000)", (client,)
        ).fetchall()
        assert {str(r[0]): r[1] for r in rows} == ds.expected_for(client)
        assert all(str(r[2]) == client for r in rows)
    # opted-out leads are claimed first (a finished one among them is completed), finished ones fill the rest
    opted = {str(r[0]) for r in conn.execute("SELECT id FROM leads WHERE client_id = %s AND is_active AND opted_out", (CLIENT_A,))}
    first = [str(r[0]) for r in conn.execute("SELECT lead_id FROM get_leads_for_de_enrollment(%s, 3)", (CLIENT_A,))]
    assert len(opted) > 3 and len(first) == 3 and set(first) <= opted


def test_claim_refuses_a_batch_size_below_one(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT * FROM get_leads_for_de_enrollment(%s, 0)", (CLIENT_A,))


def test_claims_of_two_sessions_never_overlap_and_never_wait(db_url: str, conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    due = set(ds.expected_for(CLIENT_A))
    with psycopg.connect(db_url) as first, psycopg.connect(db_url) as second:
        second.execute("SET lock_timeout = '1s'")  # waiting would be a failure, not a hang
        a = {str(r[0]) for r in first.execute("SELECT lead_id FROM get_leads_for_de_enrollment(%s, 3)", (CLIENT_A,))}
        b = {str(r[0]) for r in second.execute("SELECT lead_id FROM get_leads_for_de_enrollment(%s, 100)", (CLIENT_A,))}
        assert len(a) == 3 and a.isdisjoint(b) and a | b == due
        first.rollback()  # released: claimable again
        c = {str(r[0]) for r in first.execute("SELECT lead_id FROM get_leads_for_de_enrollment(%s, 100)", (CLIENT_A,))}
        assert c == a


def test_claim_cost_follows_due_leads_not_the_table(conn: psycopg.Connection) -> None:
    """200k leads, 30 due: the claim reads a small, fixed number of pages (its index ranges)."""
    client = str(uuid.uuid4())
    conn.execute(
        """INSERT INTO campaigns (client_id, name, messages)
           SELECT %s, 'big ' || k, '[1, 2, 3, 4, 5]'::jsonb FROM generate_series(1, 10) k""",
        (client,),
    )
    conn.execute(
        """INSERT INTO leads (client_id, campaign_link_id, current_message_position, is_active, opted_out)
           SELECT c.client_id, c.id, g %% 5, g %% 3 <> 0, false
             FROM campaigns c, generate_series(1, 20000) g WHERE c.client_id = %s""",
        (client,),
    )
    conn.execute(
        """UPDATE leads SET current_message_position = 5, is_active = true
            WHERE id IN (SELECT id FROM leads WHERE client_id = %s ORDER BY id LIMIT 20)""",
        (client,),
    )
    conn.execute(
        """UPDATE leads SET opted_out = true, is_active = true, current_message_position = 1
            WHERE id IN (SELECT id FROM leads WHERE client_id = %s AND current_message_position < 5 ORDER BY id DESC LIMIT 10)""",
        (client,),
    )
    conn.execute("VACUUM ANALYZE leads")
    conn.execute("VACUUM ANALYZE campaigns")
    pages = conn.execute("SELECT relpages FROM pg_class WHERE relname = 'leads'").fetchone()[0]
    assert pages > 2000
    conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 100)", (client,))  # plans cached
    conn.execute("ROLLBACK")
    conn.execute("BEGIN")
    plan = conn.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM get_leads_for_de_enrollment(%s, 100)", (client,)
    ).fetchone()[0][0]
    conn.execute("ROLLBACK")
    node = plan["Plan"]
    assert node["Actual Rows"] == 30
    touched = node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)
    assert touched < 300, f"the claim touched {touched} pages of a {pages}-page table"


# --------------------------------------------------------------------------- process


def test_a_run_de_enrolls_exactly_the_due_leads_with_history_log_and_counters(conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    before = {str(r[0]): r[1:] for r in conn.execute("SELECT id, is_active, completed_at, campaign_history, updated_at FROM leads")}
    runs = {client: run_all(conn, client, batch_size=2) for client in (CLIENT_A, CLIENT_B, CLIENT_C)}

    assert de_enrolled(conn) == ds.expected
    leads = {
        str(r[0]): r[1:]
        for r in conn.execute(
            "SELECT id, is_active, completed_at, campaign_history, updated_at, campaign_link_id, current_message_position FROM leads"
        )
    }
    names = {v: f"campaign {k}" for k, v in ds.campaigns.items()}
    totals = {k: len(v) for k, v in {"A1": [1, 2, 3], "A2": [], "B1": [1, 2], "B2": [1, 2], "C1": [1]}.items()}
    for lead, outcome in ds.expected.items():
        active, completed_at, history, updated_at, campaign, position = leads[lead]
        assert active is False
        assert (completed_at is not None) == (outcome == "completed")
        assert updated_at > before[lead][3]
        entry = history[-1]
        assert len(history) == len(before[lead][2]) + 1
        assert entry["campaign_id"] == str(campaign)
        assert entry["campaign_name"] == names[str(campaign)]
        assert entry["outcome"] == outcome
        assert entry["messages_received"] == position
        assert entry["total_messages"] == totals[names[str(campaign)].split()[1]]
        assert entry["run_id"] == runs[ds.client_of[lead]]
        assert entry["de_enrolled_at"] is not None
        assert (entry["completed_at"] is not None) == (outcome == "completed")
    for lead in ds.untouched:
        assert leads[lead][:4] == before[lead], lead
    assert_exactly_once(conn)

    log = conn.execute(
        "SELECT DISTINCT action, client_id::text = ANY (%s), messages_received IS NOT NULL, total_messages IS NOT NULL "
        "FROM de_enrollment_lead_log",
        ([CLIENT_A, CLIENT_B, CLIENT_C],),
    ).fetchall()
    assert log == [("de_enrolled", True, True, True)]

    run_rows = conn.execute(
        "SELECT client_id::text, status, leads_evaluated, leads_de_enrolled, leads_completed, leads_opted_out, batches, "
        "duration_ms IS NOT NULL, finished_at IS NOT NULL FROM de_enrollment_runs"
    ).fetchall()
    for client, status, evaluated, done, completed, opted, batches, has_duration, has_finish in run_rows:
        exp = ds.expected_for(client)
        assert status == "success" and has_duration and has_finish
        assert done == evaluated == len(exp)
        assert completed == sum(1 for v in exp.values() if v == "completed")
        assert opted == sum(1 for v in exp.values() if v == "opted_out")
        assert batches == -(-len(exp) // 2)  # non-empty batches of 2; the final empty claim is no batch

    # counters exact for every campaign the runs touched (their deltas were folded in the batch)
    touched = {str(r[0]) for r in conn.execute("SELECT DISTINCT campaign_id FROM de_enrollment_lead_log")}
    real, kept = recount(conn), stored(conn)
    assert {c: kept[c] for c in touched} == {c: real[c] for c in touched}
    assert conn.execute(
        "SELECT count(*) FROM campaign_stats_delta WHERE campaign_id = ANY (%s::uuid[])", (list(touched),)
    ).fetchone()[0] == 0

    # nothing left: a second pass claims nothing
    for client in (CLIENT_A, CLIENT_B, CLIENT_C, CLIENT_D):
        assert conn.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 100)", (client,)).fetchone()[0] == 0


def test_process_rechecks_eligibility_and_skips_what_is_not_due(conn: psycopg.Connection) -> None:
    ds = build_dataset(conn)
    run_id = conn.execute("SELECT start_de_enrollment_run(%s, 100, 60000)", (CLIENT_A,)).fetchone()[0]
    a_untouched = [lead for lead in ds.untouched if ds.client_of[lead] == CLIENT_A]
    b_due = list(ds.expected_for(CLIENT_B))
    one_due = next(iter(ds.expected_for(CLIENT_A)))
    # not due, of another client, unknown, repeated: only one_due is processed
    ids = a_untouched + b_due + [str(uuid.uuid4()), one_due, one_due]
    rows = conn.execute("SELECT lead_id::text, outcome FROM process_de_enrollment_batch(%s, %s::uuid[])", (run_id, ids)).fetchall()
    assert rows == [(one_due, ds.expected[one_due])]
    # the same lead again: already done, skipped
    assert conn.execute("SELECT count(*) FROM process_de_enrollment_batch(%s, %s::uuid[])", (run_id, [one_due])).fetchone()[0] == 0
    evaluated, done, batches = conn.execute(
        "SELECT leads_evaluated, leads_de_enrolled, batches FROM de_enrollment_runs WHERE id = %s", (run_id,)
    ).fetchone()
    assert (evaluated, done, batches) == (len(ids) + 1, 1, 2)
    # an empty batch is not a batch
    assert conn.execute("SELECT count(*) FROM process_de_enrollment_batch(%s, '{}')", (run_id,)).fetchone()[0] == 0
    assert conn.execute("SELECT batches FROM de_enrollment_runs WHERE id = %s", (run_id,)).fetchone()[0] == 2
    assert_exactly_once(conn)


def test_process_skips_a_lead_that_is_no_longer_due(conn: psycopg.Connection) -> None:
    """A lead moved back mid-sequence by the platform after it was selected: processing skips it."""
    ds = build_dataset(conn)
    lead = next(k for k, v in ds.expected_for(CLIENT_B).items() if v == "completed")
    run_id = conn.execute("SELECT start_de_enrollment_run(%s, 100, 60000)", (CLIENT_B,)).fetchone()[0]
    conn.execute("UPDATE leads SET current_message_position = 0 WHERE id = %s", (lead,))
    rows = conn.execute("SELECT lead_id::text FROM process_de_enrollment_batch(%s, %s::uuid[])", (run_id, [lead])).fetchall()
    assert rows == []
    assert conn.execute("SELECT is_active FROM leads WHERE id = %s", (lead,)).fetchone()[0] is True


def test_process_refuses_a_run_that_is_not_running(conn: psycopg.Connection) -> None:
    build_dataset(conn)
    run_id = conn.execute("SELECT start_de_enrollment_run(%s, 100, 60000)", (CLIENT_A,)).fetchone()[0]
    conn.execute("SELECT finish_de_enrollment_run(%s, 'success')", (run_id,))
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        conn.execute(
            "SELECT * FROM process_de_enrollment_batch(%s, ARRAY(SELECT lead_id FROM get_leads_for_de_enrollment(%s)))",
            (run_id, CLIENT_A),
        )
    with pytest.raises(psycopg.errors.NoDataFound):
        conn.execute("SELECT * FROM process_de_enrollment_batch(%s, '{}')", (str(uuid.uuid4()),))
    assert de_enrolled(conn) == {}


# --------------------------------------------------------------------------- counters


def test_apply_deltas_folds_every_committed_change_once(conn: psycopg.Connection) -> None:
    build_dataset(conn)
    assert stored(conn) != recount(conn)  # the inserts are still pending deltas
    pending = conn.execute("SELECT count(*) FROM campaign_stats_delta").fetchone()[0]
    assert conn.execute("SELECT apply_campaign_stats_deltas()").fetchone()[0] == pending
    assert stored(conn) == recount(conn)
    assert conn.execute("SELECT apply_campaign_stats_deltas()").fetchone()[0] == 0
    # plain SQL writes of every kind, then a fold of one campaign only
    a1 = conn.execute("SELECT id FROM campaigns WHERE name = 'campaign A1'").fetchone()[0]
    conn.execute("UPDATE leads SET opted_out = NOT opted_out, booked = true WHERE campaign_link_id = %s AND current_message_position < 2", (a1,))
    conn.execute("DELETE FROM leads WHERE campaign_link_id = %s AND current_message_position = 5", (a1,))
    conn.execute("INSERT INTO leads (client_id, campaign_link_id, completed_at) VALUES (%s, %s, now())", (CLIENT_A, a1))
    conn.execute("UPDATE leads SET campaign_link_id = %s WHERE campaign_link_id IN (SELECT id FROM campaigns WHERE name = 'campaign B1')", (a1,))
    assert conn.execute("SELECT apply_campaign_stats_deltas(%s::uuid[])", ([a1],)).fetchone()[0] > 0
    assert stored(conn)[str(a1)] == recount(conn)[str(a1)]


def test_apply_deltas_leaves_uncommitted_deltas_for_later(db_url: str, conn: psycopg.Connection) -> None:
    build_dataset(conn)
    conn.execute("SELECT apply_campaign_stats_deltas()")
    b1 = str(conn.execute("SELECT id FROM campaigns WHERE name = 'campaign B1'").fetchone()[0])
    with psycopg.connect(db_url) as platform:
        platform.execute(
            "INSERT INTO leads (client_id, campaign_link_id) SELECT %s, %s FROM generate_series(1, 5)", (CLIENT_B, b1)
        )
        conn.execute("SET lock_timeout = '2s'")  # folding must not wait for the platform's transaction
        assert conn.execute("SELECT apply_campaign_stats_deltas()").fetchone()[0] == 0
        assert stored(conn) == recount(conn)  # the 5 leads are not visible yet, nor counted
        platform.commit()
    assert stored(conn)[b1] != recount(conn)[b1]
    assert conn.execute("SELECT apply_campaign_stats_deltas()").fetchone()[0] == 1
    assert stored(conn) == recount(conn)


def test_recalculate_reports_what_it_repaired_and_is_exact(db_url: str, conn: psycopg.Connection) -> None:
    build_dataset(conn)
    conn.execute("SELECT apply_campaign_stats_deltas()")
    a1 = str(conn.execute("SELECT id FROM campaigns WHERE name = 'campaign A1'").fetchone()[0])
    right = stored(conn)[a1]
    conn.execute("UPDATE campaigns SET active_leads_count = 999, booked_count = -4 WHERE id = %s", (a1,))
    with psycopg.connect(db_url) as platform:
        # a platform transaction in flight while we recount: its change must end up counted once
        platform.execute("INSERT INTO leads (client_id, campaign_link_id, booked) VALUES (%s, %s, true)", (CLIENT_A, a1))
        rows = conn.execute("SELECT * FROM recalculate_campaign_stats(%s)", (CLIENT_A,)).fetchall()
        platform.commit()
    assert len(rows) == 1
    campaign, client, name, old_a, new_a, old_c, new_c, old_o, new_o, old_b, new_b = rows[0]
    assert (str(campaign), str(client), name) == (a1, CLIENT_A, "campaign A1")
    assert (old_a, new_a, old_b, new_b) == (999, right[0], -4, right[3])
    assert (old_c, old_o) == (new_c, new_o) == (right[1], right[2])
    conn.execute("SELECT apply_campaign_stats_deltas()")
    assert stored(conn) == recount(conn)
    assert conn.execute("SELECT count(*) FROM recalculate_campaign_stats()").fetchone()[0] == 0


def test_recalculate_without_client_recounts_every_campaign(conn: psycopg.Connection) -> None:
    build_dataset(conn)
    changed = {str(r[0]) for r in conn.execute("SELECT campaign_id FROM recalculate_campaign_stats()")}
    real = recount(conn)
    assert changed == {c for c, v in real.items() if v != (0, 0, 0, 0)}
    assert stored(conn) == real
    assert conn.execute("SELECT count(*) FROM campaign_stats_delta").fetchone()[0] == 0


def test_counter_rule_is_one_function_the_planner_inlines(conn: psycopg.Connection) -> None:
    """Active and not opted out (NULL opted_out: not opted out); the recount and the drift view
    evaluate it per lead without a function call."""
    rows = conn.execute(
        """SELECT de_enrollment_counts_as_active(a, o)
             FROM (VALUES (1, true, false), (2, true, true), (3, true, NULL), (4, false, false),
                          (5, false, true), (6, NULL, false)) AS t (n, a, o)
            ORDER BY n"""
    ).fetchall()
    assert [r[0] for r in rows] == [True, False, True, False, False, None]
    for sql in (
        "SELECT * FROM campaign_stats_drift",
        "SELECT count(*) FILTER (WHERE de_enrollment_counts_as_active(is_active, opted_out)) FROM leads",
    ):
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {sql}").fetchall())
        assert "de_enrollment_counts_as_active" not in plan, plan
        assert re.search(r"is_active AND \(NOT COALESCE\((leads\.)?opted_out, false\)\)", plan), plan


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
