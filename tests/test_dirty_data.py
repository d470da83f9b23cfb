"""Dirty platform data never stops de-enrollment: one test per kind of dirt seen on live platforms."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from engine_data import assert_exactly_once, recount, run_all, stored

CLIENT = "eeeeeeee-0000-4000-8000-000000000000"
OTHER = "ffffffff-0000-4000-8000-000000000000"


def campaign(conn: psycopg.Connection, client: str | None, messages: object = (1, 2), active: bool = True) -> str:
    cid = str(uuid.uuid4())
    conn.execute("ALTER TABLE campaigns ALTER COLUMN client_id DROP NOT NULL")
    conn.execute(
        "INSERT INTO campaigns (id, client_id, name, messages, is_active) VALUES (%s, %s, %s, %s::jsonb, %s)",
        (cid, client, f"c {cid[:8]}", json.dumps(list(messages) if isinstance(messages, tuple) else messages), active),
    )
    return cid


def lead(conn: psycopg.Connection, camp: str, client: str = CLIENT, position: int | None = 2, opted: bool = False,
         history: object = (), active: bool = True) -> str:
    lid = str(uuid.uuid4())
    conn.execute("ALTER TABLE leads ALTER COLUMN current_message_position DROP NOT NULL")
    conn.execute(
        """INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, opted_out, is_active, campaign_history)
           VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)""",
        (lid, client, camp, position, opted, active, json.dumps(list(history) if isinstance(history, tuple) else history)),
    )
    return lid


def state(conn: psycopg.Connection, lid: str) -> tuple:
    return conn.execute("SELECT is_active, completed_at IS NOT NULL, campaign_history FROM leads WHERE id = %s", (lid,)).fetchone()


def clean_leads(conn: psycopg.Connection, camp: str, n: int = 5) -> list[str]:
    return [lead(conn, camp) for _ in range(n)]


def test_reactivated_lead_with_reset_history_is_de_enrolled_again_once(conn) -> None:
    camp = campaign(conn, CLIENT)
    clean = clean_leads(conn, camp)
    back = lead(conn, camp)
    run_all(conn, CLIENT)
    # the platform re-activates it in the same campaign and resets its history
    conn.execute("UPDATE leads SET is_active = true, completed_at = NULL, campaign_history = '[]' WHERE id = %s", (back,))
    assert conn.execute("SELECT count(*) FROM de_enrollment_stuck_leads WHERE lead_id = %s AND re_activated", (back,)).fetchone()[0] == 1
    assert conn.execute("SELECT sum(completed) FROM count_leads_for_de_enrollment(%s)", (CLIENT,)).fetchone()[0] == 1
    second = run_all(conn, CLIENT)
    assert state(conn, back)[0] is False and all(state(conn, x)[0] is False for x in clean)
    rows = conn.execute("SELECT run_id::text, action FROM de_enrollment_lead_log WHERE lead_id = %s", (back,)).fetchall()
    assert rows == [(second, "re_de_enrolled")]  # updated, not duplicated: the SOP's check stays empty
    assert conn.execute("SELECT count(*) FROM (SELECT lead_id FROM de_enrollment_lead_log GROUP BY lead_id HAVING count(*) > 1) d").fetchone()[0] == 0
    assert_exactly_once(conn)
    # re-activated without a reset: our entry for the campaign is replaced, the platform's kept
    conn.execute(
        """UPDATE leads SET is_active = true, completed_at = NULL,
                  campaign_history = campaign_history || '[{"note": "platform"}]' WHERE id = %s""", (back,))
    third = run_all(conn, CLIENT)
    history = state(conn, back)[2]
    assert [e.get("run_id") for e in history] == [None, third]
    assert conn.execute("SELECT count(*) FROM de_enrollment_duplicates").fetchone()[0] == 0


@pytest.mark.parametrize("entry", [{"campaign_id": None, "outcome": "x"}, "a string", 7, [1, 2], {"no": "campaign"}])
def test_odd_history_written_by_the_platform_is_kept_and_the_lead_de_enrolled(conn, entry) -> None:
    camp = campaign(conn, CLIENT)
    clean = clean_leads(conn, camp)
    odd = lead(conn, camp, history=[entry, entry, {"campaign_id": camp}, {"campaign_id": camp}])
    run_all(conn, CLIENT)
    active, _, history = state(conn, odd)
    assert active is False and all(state(conn, x)[0] is False for x in clean)
    assert history[:4] == [entry, entry, {"campaign_id": camp}, {"campaign_id": camp}]
    assert history[4]["campaign_id"] == camp and history[4]["run_id"]
    assert conn.execute("SELECT count(*) FROM deenroll.held_leads").fetchone()[0] == 0


def test_campaign_without_client_stops_nothing_and_its_leads_go_under_their_own_client(cli, db_url, conn) -> None:
    orphan = campaign(conn, None)
    mine = campaign(conn, CLIENT)
    done = lead(conn, orphan)
    clean = clean_leads(conn, mine)
    res = cli("run", "--json", db=db_url)
    doc = json.loads(res.stdout)
    assert res.code == 0, res.stdout
    assert [c["client_id"] for c in doc["clients"]] == [CLIENT]
    assert all(state(conn, x)[0] is False for x in clean + [done])
    assert conn.execute("SELECT client_id::text FROM de_enrollment_lead_log WHERE lead_id = %s", (done,)).fetchone()[0] == CLIENT


def test_opted_out_lead_without_position_is_de_enrolled(conn) -> None:
    camp = campaign(conn, CLIENT)
    stop = lead(conn, camp, position=None, opted=True)
    waiting = lead(conn, camp, position=None)
    run_all(conn, CLIENT)
    assert state(conn, stop)[:2] == (False, False)
    assert state(conn, waiting)[0] is True
    assert conn.execute("SELECT outcome FROM de_enrollment_lead_log WHERE lead_id = %s", (stop,)).fetchone()[0] == "opted_out"


def test_draft_campaign_finishes_nobody_but_its_stops_leave(conn) -> None:
    draft = campaign(conn, CLIENT, messages=[])
    waiting = lead(conn, draft, position=0)
    stop = lead(conn, draft, position=0, opted=True)
    run_all(conn, CLIENT)
    assert state(conn, waiting)[0] is True
    assert state(conn, stop)[:2] == (False, False)
    assert conn.execute("SELECT count(*) FROM de_enrollment_stuck_leads").fetchone()[0] == 0


def test_lead_in_another_clients_campaign_is_logged_under_its_own_client(conn) -> None:
    theirs = campaign(conn, OTHER)
    guest = lead(conn, theirs, client=CLIENT)
    stuck = conn.execute("SELECT client_id::text, campaign_client_id::text FROM de_enrollment_stuck_leads").fetchall()
    assert stuck == [(CLIENT, OTHER)]
    clients = {str(r[0]) for r in conn.execute("SELECT client_id FROM de_enrollment_clients()")}
    assert CLIENT in clients
    run_all(conn, OTHER)
    assert state(conn, guest)[0] is True  # not the campaign's client's business
    run_all(conn, CLIENT)
    assert state(conn, guest)[0] is False
    assert conn.execute("SELECT client_id::text FROM de_enrollment_lead_log WHERE lead_id = %s", (guest,)).fetchone()[0] == CLIENT
    conn.execute("SELECT apply_campaign_stats_deltas()")
    assert stored(conn) == recount(conn)


def test_unparsable_timestamps_in_history_never_break_the_reports(conn) -> None:
    camp = campaign(conn, CLIENT)
    run = str(uuid.uuid4())
    bad = [{"campaign_id": camp, "run_id": run, "de_enrolled_at": t} for t in
           ("2024-13-45", "yesterday", "2023-02-29T10:00:00Z", "2024-01-01T25:00:00")]
    lid = lead(conn, camp, history=[])
    conn.execute("ALTER TABLE leads DROP CONSTRAINT leads_campaign_history_one_entry_per_campaign")
    conn.execute("UPDATE leads SET campaign_history = %s::jsonb WHERE id = %s", (json.dumps(bad), lid))
    rows = conn.execute("SELECT kind, occurrences, first_at FROM de_enrollment_duplicates").fetchall()
    assert rows == [("campaign_history", 4, None)]
    for view in ("de_enrollment_stuck_leads", "de_enrollment_due_leads", "de_enrollment_health"):
        conn.execute(f"SELECT * FROM {view}").fetchall()
    assert conn.execute("SELECT deenroll.json_timestamptz('2024-02-29T10:00:00+05:30') IS NOT NULL").fetchone()[0]


def test_stuck_dry_run_and_run_agree_on_a_reactivated_lead(cli, db_url, conn) -> None:
    camp = campaign(conn, CLIENT)
    back = lead(conn, camp)
    run_all(conn, CLIENT)
    conn.execute("UPDATE leads SET is_active = true, completed_at = NULL, campaign_history = '[]' WHERE id = %s", (back,))
    stuck = json.loads(cli("stuck", "--json", db=db_url).stdout)
    dry = json.loads(cli("run", "--dry-run", "--json", db=db_url).stdout)
    assert stuck["count"] == 1 and dry["totals"]["completed"] == 1
    done = json.loads(cli("run", "--json", db=db_url).stdout)
    assert done["totals"]["leads_de_enrolled"] == 1


def test_a_duplicate_lead_log_row_is_refused_by_the_database(conn) -> None:
    camp = campaign(conn, CLIENT)
    lid = lead(conn, camp)
    run_all(conn, CLIENT)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            """INSERT INTO de_enrollment_lead_log (run_id, lead_id, client_id, campaign_id, outcome)
               SELECT run_id, lead_id, client_id, campaign_id, 'opted_out' FROM de_enrollment_lead_log WHERE lead_id = %s""",
            (lid,),
        )


def test_a_second_history_entry_of_ours_for_one_campaign_is_refused_by_the_database(conn) -> None:
    camp = campaign(conn, CLIENT)
    lid = lead(conn, camp)
    run_all(conn, CLIENT)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE leads SET campaign_history = campaign_history || campaign_history WHERE id = %s", (lid,))
    # the platform's own repeats pass
    conn.execute(
        """UPDATE leads SET campaign_history = campaign_history || jsonb_build_array(jsonb_build_object('campaign_id', %s::text),
                                                                                     jsonb_build_object('campaign_id', %s::text))
            WHERE id = %s""", (camp, camp, lid))


def test_one_run_settles_every_lead_even_when_many_of_a_batch_are_refused(cli, db_url, conn) -> None:
    camp = campaign(conn, CLIENT)
    leads = clean_leads(conn, camp, 60)
    refused = leads[::2]  # every other lead: the most splits a batch can need
    conn.execute("UPDATE leads SET first_name = 'refuse' WHERE id = ANY (%s::uuid[])", (refused,))
    conn.execute(
        """CREATE FUNCTION keep_refused() RETURNS trigger LANGUAGE plpgsql AS $t$
           BEGIN
               IF NEW.first_name = 'refuse' AND NOT NEW.is_active THEN RAISE EXCEPTION 'kept by the platform'; END IF;
               RETURN NEW;
           END $t$"""
    )
    conn.execute("CREATE TRIGGER keep_refused BEFORE UPDATE ON leads FOR EACH ROW EXECUTE FUNCTION keep_refused()")
    dry = json.loads(cli("run", "--dry-run", "--json", db=db_url).stdout)["totals"]
    done = json.loads(cli("run", "--json", db=db_url).stdout)
    assert dry["completed"] == 60
    left = conn.execute(
        "SELECT count(*) FROM leads WHERE is_active AND first_name IS DISTINCT FROM 'refuse'"
    ).fetchone()[0]
    assert left == 0
    assert done["totals"]["leads_de_enrolled"] == 30 and done["totals"]["leads_held"] == 30
