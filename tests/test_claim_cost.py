"""The claim looks only where finished leads are: its cost does not grow with the campaigns that
finished long ago, and the marks it relies on (deenroll.due_campaigns) never lose a due lead,
whatever the platform writes meanwhile. Page counts and rows, never wall-clock times."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

CLAIM = "SELECT * FROM get_leads_for_de_enrollment(%s, 100)"
COUNT = "SELECT * FROM count_leads_for_de_enrollment(%s)"
CLIENTS = "SELECT * FROM de_enrollment_clients() WHERE client_id = %s"


def _client_with_finished_campaigns(conn: psycopg.Connection, finished: int) -> tuple[str, list[str]]:
    """A client with 10 live campaigns (5 messages; 2,000 leads in progress each) and `finished`
    deactivated campaigns that each keep one lead stalled mid-sequence and one finished earlier."""
    client = str(uuid.uuid4())
    live = [r[0] for r in conn.execute(
        """INSERT INTO campaigns (client_id, name, messages)
           SELECT %s, 'live ' || k, '[1, 2, 3, 4, 5]'::jsonb FROM generate_series(1, 10) AS k RETURNING id::text""",
        (client,)).fetchall()]
    conn.execute(
        """INSERT INTO leads (client_id, campaign_link_id, current_message_position, is_active, opted_out)
           SELECT c.client_id, c.id, g %% 5, true, false
             FROM campaigns AS c, generate_series(1, 2000) AS g WHERE c.client_id = %s""",
        (client,))
    if finished:
        conn.execute(
            """WITH c AS (
                   INSERT INTO campaigns (client_id, name, messages, is_active)
                   SELECT %s, 'finished ' || k, '[1, 2, 3, 4, 5, 6, 7, 8]'::jsonb, false
                     FROM generate_series(1, %s) AS k RETURNING id, client_id)
               INSERT INTO leads (client_id, campaign_link_id, current_message_position, is_active, completed_at)
               SELECT c.client_id, c.id, p.pos, p.active, p.done
                 FROM c, (VALUES (3, true, NULL::timestamptz), (8, false, now())) AS p (pos, active, done)""",
            (client, finished))
    conn.execute("VACUUM ANALYZE leads")
    conn.execute("VACUUM ANALYZE campaigns")
    return client, live


def _pages(conn: psycopg.Connection, sql: str, client: str) -> tuple[int, int]:
    """(rows, shared pages touched) of one call, its plans cached by an earlier call; rolled back."""
    conn.execute("BEGIN")
    conn.execute(sql, (client,)).fetchall()
    conn.execute("ROLLBACK")
    conn.execute("BEGIN")
    node = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", (client,)).fetchone()[0][0]["Plan"]
    conn.execute("ROLLBACK")
    return int(node["Actual Rows"]), node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)


def _finish(conn: psycopg.Connection, campaign: str, n: int) -> None:
    """The platform sends the last message to n leads of the campaign, one statement each."""
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM leads WHERE campaign_link_id = %s AND is_active ORDER BY id LIMIT %s", (campaign, n)).fetchall()]
    for lead in ids:
        conn.execute("UPDATE leads SET current_message_position = 5 WHERE id = %s", (lead,))


def _marks(conn: psycopg.Connection, client: str | None) -> int:
    if client is None:
        return conn.execute("SELECT count(*) FROM deenroll.due_campaigns WHERE client_id IS NULL").fetchone()[0]
    return conn.execute("SELECT count(*) FROM deenroll.due_campaigns WHERE client_id = %s", (client,)).fetchone()[0]


def _claimed(conn: psycopg.Connection, client: str) -> set[str]:
    """What a claim returns now (in a transaction rolled back: nothing stays locked)."""
    conn.execute("BEGIN")
    ids = {str(r[0]) for r in conn.execute("SELECT lead_id FROM get_leads_for_de_enrollment(%s, 100000)", (client,))}
    conn.execute("ROLLBACK")
    return ids


def _due_by_full_scan(conn: psycopg.Connection, client: str) -> set[str]:
    """The client's due leads by the view that reads every campaign (no marks involved)."""
    return {str(r[0]) for r in conn.execute(
        "SELECT lead_id FROM de_enrollment_due_leads WHERE client_id = %s AND held_reason IS NULL", (client,)).fetchall()}


@pytest.fixture
def two(db_url: str) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    with psycopg.connect(db_url, autocommit=True) as a, psycopg.connect(db_url, autocommit=True) as b:
        yield a, b


def test_claim_count_and_client_list_do_not_grow_with_finished_campaigns(conn: psycopg.Connection) -> None:
    few, live_few = _client_with_finished_campaigns(conn, 0)
    many, live_many = _client_with_finished_campaigns(conn, 3000)
    # the client index holds every finished campaign's stalled lead: a walk of it would see them
    assert conn.execute(
        "SELECT count(DISTINCT campaign_link_id) FROM leads WHERE client_id = %s AND is_active AND completed_at IS NULL",
        (many,)).fetchone()[0] == 3010
    for client in (few, many):
        conn.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 100000)", (client,))  # first look: marks settle
    pages: dict[str, dict[str, int]] = {}
    for label, client in (("idle few", few), ("idle many", many)):
        rows, claim = _pages(conn, CLAIM, client)
        assert rows == 0
        _, count = _pages(conn, COUNT, client)
        _, clients = _pages(conn, CLIENTS, client)
        pages[label] = {"claim": claim, "count": count, "clients": clients}
    for live, client in ((live_few, few), (live_many, many)):
        for campaign in live[:3]:
            _finish(conn, campaign, 40)  # 120 due, in 3 of the 10 live campaigns
    for label, client in (("due few", few), ("due many", many)):
        rows, claim = _pages(conn, CLAIM, client)
        assert rows == 100
        _, count = _pages(conn, COUNT, client)
        pages[label] = {"claim": claim, "count": count}
    for what in ("claim", "count", "clients"):
        assert pages["idle many"][what] <= pages["idle few"][what] + 10, pages
    for what in ("claim", "count"):
        assert pages["due many"][what] <= pages["due few"][what] + 50, pages  # a walk of 3,000 campaigns: 6,000+
    assert pages["idle many"]["claim"] < 60, pages  # a handful of index probes, not 3,000


def test_claims_clear_the_marks_of_campaigns_they_emptied(conn: psycopg.Connection) -> None:
    """A claim removes the marks of the campaigns it found empty; the ones the last batch took
    leads from (the leads' processing may still hold some) go when the run finishes, unless a
    finished lead is there again by then."""
    client, live = _client_with_finished_campaigns(conn, 50)
    conn.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 100000)", (client,))
    assert _marks(conn, client) == 0 and _marks(conn, None) == 0  # nothing finished: nothing marked
    _finish(conn, live[0], 30)
    _finish(conn, live[1], 30)
    assert _marks(conn, client) == 60  # one per statement that finished a lead
    run = conn.execute("SELECT start_de_enrollment_run(%s, 25, 60000, 'test', 1)", (client,)).fetchone()[0]
    done = 0
    while True:
        rows = conn.execute(
            "SELECT * FROM process_de_enrollment_batch(%s, ARRAY(SELECT lead_id FROM get_leads_for_de_enrollment(%s, 25)))",
            (run, client)).fetchall()
        done += len(rows)
        if len(rows) < 25:
            break
    assert done == 60
    assert _marks(conn, client) == 30  # the last batch's campaign: in its claim, its leads were still due
    emptied = conn.execute("SELECT DISTINCT campaign_id::text FROM deenroll.due_campaigns WHERE client_id = %s",
                           (client,)).fetchall()
    assert len(emptied) == 1
    other = live[1] if emptied[0][0] == live[0] else live[0]
    _finish(conn, other, 2)  # meanwhile the platform finishes two leads of the other campaign
    assert _marks(conn, client) == 32
    conn.execute("SELECT finish_de_enrollment_run(%s, 'success', NULL)", (run,))
    assert _marks(conn, client) == 2  # the emptied campaign's marks went; the one with due leads kept its own
    assert len(conn.execute(CLAIM, (client,)).fetchall()) == 2
    assert _marks(conn, client) == 2  # the claimed leads are still due in the claim's own snapshot
    conn.execute("SELECT finish_de_enrollment_run(%s, 'success', NULL)", (run,))  # the run is closed: unchanged
    assert _marks(conn, client) == 2
    assert _claimed(conn, client) == _due_by_full_scan(conn, client) and len(_due_by_full_scan(conn, client)) == 2


def test_a_sequence_edit_makes_leads_due_for_every_client(conn: psycopg.Connection) -> None:
    client, live = _client_with_finished_campaigns(conn, 5)
    other = str(uuid.uuid4())
    conn.execute(  # a lead of another client in this client's campaign, at position 3 of 5
        "INSERT INTO leads (client_id, campaign_link_id, current_message_position, is_active) VALUES (%s, %s, 3, true)",
        (other, live[0]))
    conn.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 100000)", (client,))
    assert _claimed(conn, client) == set() and _claimed(conn, other) == set()
    conn.execute("UPDATE campaigns SET messages = '[1, 2, 3]'::jsonb WHERE id = %s", (live[0],))  # shortened
    assert _marks(conn, None) == 1
    due = _due_by_full_scan(conn, client)
    assert len(due) == 800  # positions 3 and 4 of the 2,000 leads
    assert _claimed(conn, other) == _due_by_full_scan(conn, other) and len(_due_by_full_scan(conn, other)) == 1
    counted = conn.execute("SELECT sum(completed) FROM count_leads_for_de_enrollment(%s)", (client,)).fetchone()[0]
    assert counted == 800
    # settled by the claims into one mark per client, and the edit mark is gone
    conn.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 1)", (client,))
    conn.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 1)", (client,))
    assert _marks(conn, None) == 0
    assert _marks(conn, client) >= 1 and _marks(conn, other) >= 1
    assert _claimed(conn, client) == due and _claimed(conn, other) == _due_by_full_scan(conn, other)
    # a change of something else on the campaign marks nothing
    conn.execute("UPDATE campaigns SET name = 'renamed', is_active = false WHERE id = %s", (live[0],))
    assert _marks(conn, None) == 0


def test_an_edit_racing_a_lead_write_loses_nothing(two: tuple[psycopg.Connection, psycopg.Connection]) -> None:
    """The platform moves a lead on while someone shortens its sequence, both uncommitted at once:
    each judges by what it sees, neither sees the other. The edit's mark is not settled until the
    lead's transaction has ended, so the next claims still find the lead."""
    runner, platform = two
    client, live = _client_with_finished_campaigns(runner, 0)
    runner.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 100000)", (client,))
    lead = runner.execute(
        "SELECT id::text FROM leads WHERE campaign_link_id = %s AND current_message_position = 1 LIMIT 1",
        (live[0],)).fetchone()[0]
    platform.execute("BEGIN")
    platform.execute("UPDATE leads SET current_message_position = 2 WHERE id = %s", (lead,))  # 2 of 5: not due
    runner.execute("UPDATE campaigns SET messages = '[1, 2]'::jsonb WHERE id = %s", (live[0],))  # now 2 of 2: due
    for _ in range(3):  # claims while the platform's transaction is open: the edit stays unsettled
        assert lead not in _claimed(runner, client)
        runner.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 100000)", (client,))  # committed claims
    assert _marks(runner, None) == 1
    platform.execute("COMMIT")
    assert lead in _claimed(runner, client)
    runner.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 1)", (client,))  # settles
    assert _marks(runner, None) == 0
    assert lead in _claimed(runner, client)
    assert _claimed(runner, client) <= _due_by_full_scan(runner, client)


def test_a_mark_added_while_the_claim_clears_the_campaign_stays(two: tuple[psycopg.Connection, psycopg.Connection]) -> None:
    """A claim finds a marked campaign empty and removes its marks, while the platform (not
    committed yet) finishes a lead there: the platform's own mark survives, the lead is found."""
    runner, platform = two
    client, live = _client_with_finished_campaigns(runner, 0)
    _finish(runner, live[0], 1)
    runner.execute("UPDATE leads SET current_message_position = 1 WHERE campaign_link_id = %s AND current_message_position = 5",
                   (live[0],))  # no longer due: a stale mark is left behind
    assert _marks(runner, client) == 1
    lead = runner.execute(
        "SELECT id::text FROM leads WHERE campaign_link_id = %s AND current_message_position = 4 LIMIT 1",
        (live[0],)).fetchone()[0]
    platform.execute("BEGIN")
    platform.execute("UPDATE leads SET current_message_position = 5 WHERE id = %s", (lead,))  # finished, uncommitted
    assert runner.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 100)", (client,)).fetchone()[0] == 0
    assert _marks(runner, client) == 0  # the stale mark went; the platform's is not visible yet
    platform.execute("COMMIT")
    assert _marks(runner, client) == 1
    assert _claimed(runner, client) == {lead} == _due_by_full_scan(runner, client)


def test_a_claim_never_waits_for_another_one_on_the_marks(two: tuple[psycopg.Connection, psycopg.Connection]) -> None:
    """Two runners settling and clearing marks at once: the second skips what the first has locked."""
    first, second = two
    client, live = _client_with_finished_campaigns(first, 3)
    first.execute("UPDATE campaigns SET messages = '[1, 2, 3, 4]'::jsonb WHERE id = %s", (live[1],))
    second.execute("SET lock_timeout = '2s'")
    first.execute("BEGIN")
    a = {str(r[0]) for r in first.execute("SELECT lead_id FROM get_leads_for_de_enrollment(%s, 50)", (client,))}
    second.execute("BEGIN")
    b = {str(r[0]) for r in second.execute("SELECT lead_id FROM get_leads_for_de_enrollment(%s, 1000)", (client,))}
    assert len(a) == 50 and a.isdisjoint(b) and a | b == _due_by_full_scan(first, client)
    first.execute("ROLLBACK")
    second.execute("ROLLBACK")
