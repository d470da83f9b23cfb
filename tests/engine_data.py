"""The crafted multi-client data set every engine and runner test starts from, and the checks
they share: each lead in it is due (completed / opted_out) or deliberately not."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import psycopg

CLIENT_A = "aaaaaaaa-0000-4000-8000-000000000000"
CLIENT_B = "bbbbbbbb-0000-4000-8000-000000000000"
CLIENT_C = "cccccccc-0000-4000-8000-000000000000"  # only a deactivated campaign, with a lead due
CLIENT_D = "dddddddd-0000-4000-8000-000000000000"  # only a deactivated campaign, nothing due


@dataclass
class Dataset:
    expected: dict[str, str]  # lead id -> outcome a run must record
    untouched: list[str]  # leads a run must leave exactly as they are
    campaigns: dict[str, str]  # name -> id
    client_of: dict[str, str] = field(default_factory=dict)  # lead id -> client id

    def expected_for(self, client: str) -> dict[str, str]:
        return {k: v for k, v in self.expected.items() if self.client_of[k] == client}


# (campaign, client, messages, campaign active)
CAMPAIGNS = [
    ("A1", CLIENT_A, [1, 2, 3], True),
    ("A2", CLIENT_A, [], True),
    ("B1", CLIENT_B, ["hi", "bye"], True),
    ("B2", CLIENT_B, ["x", "y"], False),
    ("C1", CLIENT_C, ["only"], False),
    ("D1", CLIENT_D, ["only"], False),
]

# (campaign, position, is_active, opted_out, booked, completed_at set, history names this campaign, expected)
LEADS = [
    ("A1", 3, True, False, False, False, False, "completed"),   # exactly finished
    ("A1", 5, True, False, True, False, False, "completed"),    # past the end, booked
    ("A1", 2, True, False, False, False, False, None),          # mid-sequence
    ("A1", 1, True, True, False, False, False, "opted_out"),    # STOP before the end
    ("A1", 3, True, True, False, False, False, "completed"),    # finished wins over opted out
    ("A1", 3, False, False, False, False, False, None),         # not active
    ("A1", 3, True, False, False, True, False, None),           # already completed
    ("A1", 3, True, False, False, False, True, "completed"),    # re-activated: history already has A1, due again
    ("A1", 0, True, True, True, False, False, "opted_out"),     # opted out, booked
    ("A1", 2, False, True, False, False, False, None),          # opted out, already inactive
    ("A2", 0, True, False, False, False, False, None),          # empty sequence (a draft): finishes nobody
    ("A2", 0, True, True, False, False, False, "opted_out"),    # ... but a STOP is honoured in a draft
    ("B1", 2, True, False, False, False, False, "completed"),
    ("B1", 2, True, False, False, False, False, "completed"),
    ("B1", 4, True, False, False, False, False, "completed"),
    ("B1", 0, True, True, False, False, False, "opted_out"),
    ("B1", 1, True, True, False, False, False, "opted_out"),
    ("B1", 1, True, False, False, False, False, None),
    ("B1", 0, True, False, False, False, False, None),
    ("B2", 5, True, False, False, False, False, "completed"),   # deactivated campaign, still due
    ("C1", 1, True, False, False, False, False, "completed"),
    ("D1", 0, True, False, False, False, False, None),
]


def build_dataset(conn: psycopg.Connection, extra_leads_per_campaign: int = 0) -> Dataset:
    """The crafted data set; extra_leads_per_campaign adds that many mid-sequence (never due) leads."""
    ids = {name: str(uuid.uuid4()) for name, *_ in CAMPAIGNS}
    with conn.cursor() as cur:
        for name, client, messages, active in CAMPAIGNS:
            cur.execute(
                "INSERT INTO campaigns (id, client_id, name, messages, is_active) VALUES (%s, %s, %s, %s, %s)",
                (ids[name], client, f"campaign {name}", json.dumps(messages), active),
            )
        ds = Dataset({}, [], ids)
        client_by_campaign = {name: client for name, client, *_ in CAMPAIGNS}
        for name, pos, active, opted, booked, completed, history, expected in LEADS:
            lead = str(uuid.uuid4())
            hist = [{"campaign_id": ids[name], "outcome": "completed"}] if history else []
            cur.execute(
                """INSERT INTO leads (id, client_id, campaign_link_id, first_name, current_message_position,
                                      is_active, opted_out, booked, completed_at, campaign_history)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() - interval '1 day' END, %s)""",
                (lead, client_by_campaign[name], ids[name], f"lead of {name}", pos, active, opted, booked,
                 completed, json.dumps(hist)),
            )
            ds.client_of[lead] = client_by_campaign[name]
            if expected:
                ds.expected[lead] = expected
            else:
                ds.untouched.append(lead)
        if extra_leads_per_campaign:
            cur.execute(
                """INSERT INTO leads (client_id, campaign_link_id, current_message_position)
                   SELECT c.client_id, c.id, 0
                     FROM campaigns c, generate_series(1, %s)
                    WHERE jsonb_array_length(c.messages) > 0""",
                (extra_leads_per_campaign,),
            )
    if not conn.autocommit:
        conn.commit()
    return ds


def refuse_lead(conn: psycopg.Connection, lead_id: str) -> None:
    """The platform's own trigger refuses to let this lead be de-enrolled (a stand-in for any
    per-lead refusal): the run holds it (refused_by_trigger) and commits the rest. Trigger and
    function are named zz_refuse."""
    conn.execute(
        f"""CREATE FUNCTION zz_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
              BEGIN IF OLD.id = '{lead_id}' AND NOT NEW.is_active THEN
                    RAISE EXCEPTION 'lead % is frozen by the platform', OLD.id; END IF;
                    RETURN NEW; END $$;
            CREATE TRIGGER zz_refuse BEFORE UPDATE ON leads FOR EACH ROW EXECUTE FUNCTION zz_refuse();"""
    )


def recount(conn: psycopg.Connection) -> dict[str, tuple]:
    """The counters (active: active and not opted out; completed; opted out; booked), counted here independently of our SQL."""
    rows = conn.execute(
        """SELECT c.id,
                  count(l.id) FILTER (WHERE l.is_active AND NOT l.opted_out),
                  count(l.id) FILTER (WHERE l.completed_at IS NOT NULL),
                  count(l.id) FILTER (WHERE l.opted_out),
                  count(l.id) FILTER (WHERE l.booked)
             FROM campaigns c LEFT JOIN leads l ON l.campaign_link_id = c.id
            GROUP BY c.id"""
    ).fetchall()
    return {str(r[0]): tuple(r[1:]) for r in rows}


def stored(conn: psycopg.Connection) -> dict[str, tuple]:
    rows = conn.execute(
        "SELECT id, active_leads_count, completed_leads_count, opted_out_count, booked_count FROM campaigns"
    ).fetchall()
    return {str(r[0]): tuple(r[1:]) for r in rows}


def assert_exactly_once(conn: psycopg.Connection) -> None:
    """For every lead: inactive-by-us <=> one log row <=> one history entry; never two of either."""
    rows = conn.execute(
        """SELECT l.id,
                  (SELECT count(*) FROM de_enrollment_lead_log g WHERE g.lead_id = l.id AND g.campaign_id = l.campaign_link_id),
                  (SELECT count(*) FROM jsonb_array_elements(l.campaign_history) e
                    WHERE e ->> 'campaign_id' = l.campaign_link_id::text AND e ? 'run_id')
             FROM leads l"""
    ).fetchall()
    for lead, logged, history in rows:
        assert logged in (0, 1) and logged == history, (lead, logged, history)
    dupes = conn.execute(
        "SELECT count(*) FROM (SELECT lead_id, campaign_id FROM de_enrollment_lead_log GROUP BY 1, 2 HAVING count(*) > 1) d"
    ).fetchone()[0]
    assert dupes == 0


def de_enrolled(conn: psycopg.Connection) -> dict[str, str]:
    """lead id -> outcome, from the lead log."""
    return {str(r[0]): r[1] for r in conn.execute("SELECT lead_id, outcome FROM de_enrollment_lead_log").fetchall()}


def run_all(conn: psycopg.Connection, client: str, batch_size: int = 100) -> str:
    """One complete run of a client through the SQL functions, as the runner does it."""
    run_id = conn.execute("SELECT start_de_enrollment_run(%s, %s, 60000, 'test', 1)", (client, batch_size)).fetchone()[0]
    assert run_id is not None
    while True:
        rows = conn.execute(
            "SELECT * FROM process_de_enrollment_batch(%s, ARRAY(SELECT lead_id FROM get_leads_for_de_enrollment(%s, %s)))",
            (run_id, client, batch_size),
        ).fetchall()
        if len(rows) < batch_size:
            break
    conn.execute("SELECT apply_client_stats_deltas(%s)", (client,))
    conn.execute("SELECT * FROM finish_de_enrollment_run(%s, 'success')", (run_id,))
    return str(run_id)
