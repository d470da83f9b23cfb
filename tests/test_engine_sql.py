"""The engine's SQL functions, called directly on a real PostgreSQL: the claim, a batch's
processing and the counters. A run's start, finish and lock are in test_engine_sql_runs.py."""

from __future__ import annotations

import re
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
