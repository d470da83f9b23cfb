"""Property-based: generated platform data with every kind of dirt, the platform writing while a run
runs; after the runs, the guarantees hold.

Each example is a fresh database (a clone of the migrated template) whose platform tables allow
what live schemas allow (campaigns without a client, NULL positions, NULL opted_out and
is_active, messages that are not a sequence or SQL NULL), plus a platform trigger that refuses to
let some leads go. The runs are the real runner (deenroll.runner.run); the expectations are
computed here, in Python, from the rows, independently of the SQL rule under test.

The platform's side (strategies of dirty data, a Scenario, loading it, the writes during a run)
is in dirty_properties_helpers.py; the scenario, the rule, the checks and the property are here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deenroll.runner import calls as runner_calls, options as runner_options, report as runner_report
from deenroll.database import Target

from dirty_properties_helpers import (
    REFUSE,
    Scenario,
    assert_no_client_failed,
    lead_id,
    lead_st,
    load,
    messages_st,
    op_st,
    reactivate,
    run_while_the_platform_writes,
)

# --------------------------------------------------------------------------- the scenario


@st.composite
def scenario_st(draw: st.DrawFn) -> Scenario:
    campaigns = draw(
        st.lists(st.tuples(st.sampled_from([0, 1, 2, None]), messages_st, st.booleans()), min_size=1, max_size=4)
    )
    n = len(campaigns)
    leads = draw(st.lists(lead_st(n), min_size=6, max_size=30))
    m = len(leads)
    # mostly leads the first run de-enrolls: those are the ones a re-activation brings back
    sequences = {i: None if msg is None else json.loads(msg) for i, (_, msg, _) in enumerate(campaigns)}
    due = [i for i, spec in enumerate(leads) if expected_outcome(spec, sequences)]
    lead = st.one_of(st.sampled_from(due), st.integers(0, m - 1)) if due else st.integers(0, m - 1)
    reactivate = draw(st.lists(st.tuples(lead, st.booleans()), max_size=4))
    ops = draw(st.lists(op_st(n, m), min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=12))
    return Scenario(campaigns, leads, reactivate, ops, draw(st.sampled_from([1, 2, 5, 100])))


# --------------------------------------------------------------------------- the rule, written here


def ours(entry: Any) -> bool:
    return isinstance(entry, dict) and entry.get("run_id") is not None


def expected_outcome(lead: dict[str, Any], messages: dict[str, Any]) -> str | None:
    """'completed', 'opted_out' or None, from the rules in words (not from the SQL)."""
    if lead["is_active"] is not True or lead["campaign"] not in messages:
        return None
    sequence = messages[lead["campaign"]]
    finished = (
        isinstance(sequence, list) and len(sequence) > 0
        and lead["position"] is not None and lead["position"] >= len(sequence)
    )
    if finished and not lead["completed"]:
        return "completed"
    if lead["opted_out"] is True:
        return "opted_out"
    return None


def read_leads(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        """SELECT id::text, client_id::text, campaign_link_id::text, first_name, current_message_position,
                  is_active, opted_out, completed_at IS NOT NULL, booked, campaign_history
             FROM public.leads"""
    ).fetchall()
    keys = ("client", "campaign", "first_name", "position", "is_active", "opted_out", "completed", "booked", "history")
    return {r[0]: dict(zip(keys, r[1:])) for r in rows}


def read_campaigns(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        """SELECT id::text, messages, active_leads_count, completed_leads_count, opted_out_count, booked_count
             FROM public.campaigns"""
    ).fetchall()
    return {r[0]: {"messages": r[1], "counters": tuple(r[2:])} for r in rows}


def due_now(conn: psycopg.Connection) -> dict[str, str]:
    campaigns = read_campaigns(conn)
    messages = {cid: c["messages"] for cid, c in campaigns.items()}
    leads = read_leads(conn)
    return {lid: out for lid, l in leads.items() if (out := expected_outcome(l, messages))}


# --------------------------------------------------------------------------- checks


def assert_stuck_dry_run_and_run_agree(conn: psycopg.Connection, url: str, batch_size: int) -> runner_report.RunReport:
    """What `stuck` lists, what the dry run counts and what the run then does are the same, per client."""
    stuck_due: Counter[str] = Counter()
    stuck_held: Counter[str] = Counter()
    for client, reason, n in conn.execute(
        "SELECT client_id::text, reason, count(*) FROM public.de_enrollment_stuck_leads GROUP BY 1, 2"
    ):
        (stuck_held if reason.startswith("held:") else stuck_due)[client] += n
    assert sum(stuck_due.values()) + sum(stuck_held.values()) == len(due_now(conn))

    target = Target(url, "test")
    dry = runner_calls.run(target, runner_options.RunOptions(None, batch_size, 60000, dry_run=True))
    assert_no_client_failed(dry)
    real = runner_calls.run(target, runner_options.RunOptions(None, batch_size, 60000))
    assert_no_client_failed(real)

    def positive(counts: dict[str, int]) -> dict[str, int]:
        return {k: v for k, v in counts.items() if v}

    assert positive({c.client_id: c.completed + c.opted_out for c in dry.clients}) == positive(stuck_due)
    assert positive({c.client_id: c.leads_held for c in dry.clients}) == positive(stuck_held)
    # a lead the dry run counts is either de-enrolled by the run or, refused by the platform, held by it
    assert positive({c.client_id: c.leads_de_enrolled + c.newly_held for c in real.clients}) == positive(stuck_due)
    return real


def assert_guarantees(conn: psycopg.Connection, platform_history: dict[str, list[Any]]) -> None:
    leads = read_leads(conn)
    campaigns = read_campaigns(conn)
    due = due_now(conn)
    held = dict(conn.execute("SELECT lead_id::text, reason FROM public.de_enrollment_held_leads()").fetchall())
    stuck = dict(conn.execute("SELECT lead_id::text, reason FROM public.de_enrollment_stuck_leads").fetchall())

    # Nothing due is left unless held with a reason, and only the platform's refusal holds a lead.
    assert set(due) <= set(held), {lid: leads[lid] for lid in set(due) - set(held)}
    assert all(held.values())
    assert all(leads[lid]["first_name"] == REFUSE for lid in held), held
    assert stuck == {lid: "held:" + held[lid] for lid in due}
    # No active opted-out lead in a campaign is left outside the held set.
    stops = {lid for lid, l in leads.items() if l["is_active"] is True and l["opted_out"] is True and l["campaign"] in campaigns}
    assert stops <= set(held)

    # No lead de-enrolled twice from one campaign: the lead log and deenroll's history entries.
    log = conn.execute(
        """SELECT lead_id::text, campaign_id::text, run_id::text FROM public.de_enrollment_lead_log
            WHERE outcome IN ('completed', 'opted_out')"""
    ).fetchall()
    assert max(Counter((lid, cid) for lid, cid, _ in log).values(), default=0) <= 1
    assert max(Counter(lid for lid, _, _ in log).values(), default=0) <= 1  # the SOP's check (by lead only)
    logged = {(lid, cid): run for lid, cid, run in log}
    for lid, lead in leads.items():
        mine = [e for e in lead["history"] if ours(e)]
        assert max(Counter(e["campaign_id"] for e in mine).values(), default=0) <= 1, lead["history"]
        for e in mine:
            assert logged.get((lid, e["campaign_id"])) == e["run_id"], (lid, e, logged.get((lid, e["campaign_id"])))
        # the platform's own entries are kept as it wrote them, in its order
        assert [e for e in lead["history"] if not ours(e)] == platform_history[lid], lid
    assert conn.execute("SELECT count(*) FROM public.de_enrollment_duplicates").fetchone()[0] == 0

    # Counters exact: the drift view is empty and the counters match a count made here.
    assert conn.execute("SELECT count(*) FROM public.campaign_stats_drift").fetchone()[0] == 0
    for cid, c in campaigns.items():
        mine = [l for l in leads.values() if l["campaign"] == cid]
        expected = (
            sum(1 for l in mine if l["is_active"] is True and l["opted_out"] is not True),
            sum(1 for l in mine if l["completed"]),
            sum(1 for l in mine if l["opted_out"] is True),
            sum(1 for l in mine if l["booked"] is True),
        )
        assert c["counters"] == expected, (cid, c, expected)


def expected_platform_history(sc: Scenario) -> dict[str, list[Any]]:
    """The platform's own history entries each lead must end with, whatever order the writes and runs took."""
    history = {lead_id(i): list(spec["history"]) for i, spec in enumerate(sc.leads)}
    for i, reset in sc.reactivate:
        if reset:
            history[lead_id(i)] = []
    for k, op in enumerate(sc.ops):
        if op[0] == "insert":
            history[lead_id(len(sc.leads) + k)] = list(op[1]["history"])
        elif op[0] == "history":
            history[lead_id(op[1])].append(op[2])
        elif op[0] == "reactivate" and op[2]:
            history[lead_id(op[1])] = []
    return history


def untouched(sc: Scenario) -> set[str]:
    """Leads no write of the platform touches after loading, in campaigns whose sequence is never edited."""
    edited = {op[1] for op in sc.ops if op[0] == "messages"}
    touched = {i for i, _ in sc.reactivate} | {op[1] for op in sc.ops if op[0] in ("advance", "opt_out", "reactivate", "history")}
    return {
        lead_id(i) for i, spec in enumerate(sc.leads)
        if i not in touched and (spec["campaign"] is None or spec["campaign"] not in edited)
    }


# --------------------------------------------------------------------------- the property


@pytest.fixture(scope="module", autouse=True)
def no_webhook() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DE_ENROLLMENT_ALERT_WEBHOOK", raising=False)
        yield


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(sc=scenario_st())
def test_dirty_data_and_concurrent_platform_writes_keep_every_guarantee(fresh_db, sc: Scenario) -> None:
    with fresh_db() as url, psycopg.connect(url, autocommit=True) as conn:
        load(conn, sc)
        before = read_leads(conn)
        first_due = due_now(conn)

        # 1. the generated data as it is: stuck = dry run = run
        assert_stuck_dry_run_and_run_agree(conn, url, sc.batch_size)
        after_first = read_leads(conn)
        for lid in first_due:  # each due lead left, unless the platform refused
            assert after_first[lid]["is_active"] is False or lid in dict(
                conn.execute("SELECT lead_id::text, reason FROM public.de_enrollment_held_leads()").fetchall()
            ), (lid, after_first[lid])

        # 2. the platform re-activates leads (some with their history reset), then writes during a run
        for i, reset in sc.reactivate:
            reactivate(conn, i, reset)
        run_while_the_platform_writes(url, sc)

        # 3. a last run with the platform quiet: stuck = dry run = run, then every guarantee
        assert_stuck_dry_run_and_run_agree(conn, url, sc.batch_size)
        assert_guarantees(conn, expected_platform_history(sc))

        held = conn.execute("SELECT count(*) FROM public.de_enrollment_held_leads()").fetchone()[0]
        again = conn.execute(
            "SELECT count(*) FROM public.de_enrollment_lead_log WHERE action = 're_de_enrolled'"
        ).fetchone()[0]
        event(f"leads held at the end: {'some' if held else 'none'}")
        event(f"leads de-enrolled again after re-activation: {'some' if again else 'none'}")

        # leads never due and never touched by the platform are exactly as loaded
        final = read_leads(conn)
        for lid in untouched(sc):
            if lid not in first_due:
                assert final[lid] == before[lid], (lid, before[lid], final[lid])
