"""Property-based: generated platform data with every kind of dirt, the platform writing while a run
runs; after the runs, the guarantees hold.

Each example is a fresh database (a clone of the migrated template) whose platform tables allow
what live schemas allow (campaigns without a client, NULL positions, NULL opted_out and
is_active, messages that are not a sequence or SQL NULL), plus a platform trigger that refuses to
let some leads go. The runs are the real runner (deenroll.runner.run); the expectations are
computed here, in Python, from the rows, independently of the SQL rule under test.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from deenroll import runner
from deenroll.database import Target

CLIENTS = [f"c{i:07x}-0000-4000-8000-00000000000{i}" for i in range(1, 4)]
BAD_TIMES = ["2024-13-45", "yesterday", "2023-02-29T10:00:00Z", "2024-01-01T25:00:00", "", "2024-06-01T10:00:00+99:00"]
REFUSE = "refuse"  # first_name of the leads the platform's trigger will not let go
WRITER_TIMEOUT_S = 60


def campaign_id(i: int) -> str:
    return f"ca000000-0000-4000-8000-{i:012x}"


def lead_id(i: int) -> str:
    return f"1ead0000-0000-4000-8000-{i:012x}"


# --------------------------------------------------------------------------- what the platform may hold

# a sequence (possibly a draft: empty), or something that is not one; None is SQL NULL
messages_st = st.one_of(
    st.integers(0, 4).map(lambda n: json.dumps([f"message {k}" for k in range(n)])),
    st.integers(1, 3).map(lambda n: json.dumps([f"message {k}" for k in range(n)])),
    st.sampled_from(['{"steps": 3}', '"three messages"', "3", "null", None]),
)


def history_entry_st(n_campaigns: int) -> st.SearchStrategy[Any]:
    """Entries the platform writes into campaign_history: none of them is deenroll's (no run_id)."""
    camp = st.integers(0, n_campaigns - 1).map(campaign_id)
    return st.one_of(
        st.just({"campaign_id": None, "outcome": "moved"}),
        st.text(alphabet="ab xy", max_size=4),
        st.integers(-3, 3),
        st.just([1, 2]),
        st.just(None),
        st.just({"note": "imported"}),
        camp.map(lambda c: {"campaign_id": c}),
        st.tuples(camp, st.sampled_from(BAD_TIMES)).map(lambda t: {"campaign_id": t[0], "de_enrolled_at": t[1]}),
    )


@st.composite
def history_st(draw: st.DrawFn, n_campaigns: int) -> list[Any]:
    entries = draw(st.lists(history_entry_st(n_campaigns), max_size=3))
    if entries and draw(st.booleans()):
        entries.append(entries[0])  # the platform's own repeat
    return entries


def lead_st(n_campaigns: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "client": st.integers(0, len(CLIENTS) - 1),
            # index n_campaigns: no campaign at all
            "campaign": st.integers(0, n_campaigns).map(lambda i: None if i == n_campaigns else i),
            "position": st.one_of(st.none(), st.integers(0, 5)),
            "is_active": st.sampled_from([True, True, True, False, None]),
            "opted_out": st.sampled_from([False, False, True, None]),
            "completed": st.sampled_from([False, False, False, True]),
            "booked": st.sampled_from([False, True, None]),
            "history": history_st(n_campaigns),
            "refuse": st.sampled_from([False, False, True]),
        }
    )


def op_st(n_campaigns: int, n_leads: int) -> st.SearchStrategy[tuple]:
    """One write of the platform while a run runs."""
    lead = st.integers(0, n_leads - 1)
    return st.one_of(
        st.tuples(st.just("advance"), lead, st.integers(1, 3)),
        st.tuples(st.just("opt_out"), lead),
        st.tuples(st.just("reactivate"), lead, st.booleans()),
        st.tuples(st.just("insert"), lead_st(n_campaigns)),
        st.tuples(st.just("history"), lead, history_entry_st(n_campaigns)),
        st.tuples(st.just("messages"), st.integers(0, n_campaigns - 1), messages_st),
    )


@dataclass
class Scenario:
    campaigns: list[tuple[int | None, str | None, bool]]  # client index or None, messages JSON or SQL NULL, is_active
    leads: list[dict[str, Any]]
    reactivate: list[tuple[int, bool]]  # before the second run: lead index, history reset
    ops: list[tuple]  # during the second run
    batch_size: int


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


# --------------------------------------------------------------------------- loading and writing


PLATFORM_SCHEMA = """
ALTER TABLE public.campaigns ALTER COLUMN client_id DROP NOT NULL, ALTER COLUMN messages DROP NOT NULL;
ALTER TABLE public.leads ALTER COLUMN current_message_position DROP NOT NULL,
                         ALTER COLUMN opted_out DROP NOT NULL,
                         ALTER COLUMN is_active DROP NOT NULL,
                         ALTER COLUMN booked DROP NOT NULL;
CREATE FUNCTION public.platform_keeps_lead() RETURNS trigger LANGUAGE plpgsql AS $t$
BEGIN
    IF NEW.first_name = 'refuse' AND OLD.is_active AND NEW.is_active IS NOT TRUE THEN
        RAISE EXCEPTION 'the platform keeps lead % active', NEW.id;
    END IF;
    RETURN NEW;
END $t$;
CREATE TRIGGER platform_keeps_lead BEFORE UPDATE ON public.leads
    FOR EACH ROW EXECUTE FUNCTION public.platform_keeps_lead();
"""


def insert_lead(conn: psycopg.Connection, i: int, spec: dict[str, Any]) -> None:
    conn.execute(
        """INSERT INTO public.leads (id, client_id, campaign_link_id, first_name, current_message_position,
                                     is_active, opted_out, booked, completed_at, campaign_history)
           VALUES (%s::uuid, %s::uuid, %s::uuid, %s, %s, %s, %s, %s,
                   CASE WHEN %s THEN now() - interval '1 day' END, %s::jsonb)""",
        (
            lead_id(i), CLIENTS[spec["client"]],
            None if spec["campaign"] is None else campaign_id(spec["campaign"]),
            REFUSE if spec["refuse"] else "lead", spec["position"], spec["is_active"], spec["opted_out"],
            spec["booked"], spec["completed"], json.dumps(spec["history"]),
        ),
    )


def load(conn: psycopg.Connection, sc: Scenario) -> None:
    conn.execute(PLATFORM_SCHEMA)
    for i, (client, messages, active) in enumerate(sc.campaigns):
        conn.execute(
            "INSERT INTO public.campaigns (id, client_id, name, messages, is_active) VALUES (%s, %s, %s, %s::jsonb, %s)",
            (campaign_id(i), None if client is None else CLIENTS[client], f"campaign {i}", messages, active),
        )
    for i, spec in enumerate(sc.leads):
        insert_lead(conn, i, spec)


def reactivate(conn: psycopg.Connection, i: int, reset: bool) -> None:
    conn.execute(
        """UPDATE public.leads SET is_active = true, completed_at = NULL, updated_at = now(),
                  campaign_history = CASE WHEN %s THEN '[]'::jsonb ELSE campaign_history END
            WHERE id = %s::uuid""",
        (reset, lead_id(i)),
    )


def apply_op(conn: psycopg.Connection, op: tuple, next_lead: int) -> None:
    kind = op[0]
    if kind == "advance":
        conn.execute(
            """UPDATE public.leads SET current_message_position = coalesce(current_message_position, 0) + %s,
                      updated_at = now() WHERE id = %s::uuid""",
            (op[2], lead_id(op[1])),
        )
    elif kind == "opt_out":
        conn.execute("UPDATE public.leads SET opted_out = true, updated_at = now() WHERE id = %s::uuid", (lead_id(op[1]),))
    elif kind == "reactivate":
        reactivate(conn, op[1], op[2])
    elif kind == "insert":
        insert_lead(conn, next_lead, op[1])
    elif kind == "history":
        conn.execute(
            "UPDATE public.leads SET campaign_history = campaign_history || jsonb_build_array(%s::jsonb) WHERE id = %s::uuid",
            (json.dumps(op[2]), lead_id(op[1])),
        )
    elif kind == "messages":
        conn.execute("UPDATE public.campaigns SET messages = %s::jsonb WHERE id = %s::uuid", (op[2], campaign_id(op[1])))
    else:
        raise AssertionError(kind)


class _Started(runner.LogObserver):
    """Lets the platform's writer go once the run has started its first client."""

    def __init__(self, go: threading.Event) -> None:
        super().__init__()
        self.go = go

    def client_started(self, client_id: str) -> None:
        self.go.set()
        super().client_started(client_id)


def run_while_the_platform_writes(url: str, sc: Scenario) -> runner.RunReport:
    """A run, with a thread on its own connection doing the scenario's writes meanwhile."""
    go = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                go.wait(WRITER_TIMEOUT_S)
                for k, op in enumerate(sc.ops):
                    apply_op(conn, op, len(sc.leads) + k)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    writer = threading.Thread(target=write, name="platform-writer")
    writer.start()
    try:
        report = runner.run(Target(url, "test"), runner.RunOptions(None, sc.batch_size, 60000), _Started(go))
        event(f"platform writes: {'none' if not sc.ops else 'still going when the run ended' if writer.is_alive() else 'done within the run'}")
    finally:
        go.set()  # a run without clients never starts one
        writer.join(WRITER_TIMEOUT_S)
    assert not writer.is_alive(), "the platform's writer did not finish"
    assert not failures, failures
    assert_no_client_failed(report)
    return report


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


def assert_no_client_failed(report: runner.RunReport) -> None:
    bad = [(c.client_id, c.status, c.error) for c in report.clients if c.status not in ("success", "partial", "dry_run")]
    assert not bad, bad
    assert report.exit_code in (0, 1), report.exit_code


def assert_stuck_dry_run_and_run_agree(conn: psycopg.Connection, url: str, batch_size: int) -> runner.RunReport:
    """What `stuck` lists, what the dry run counts and what the run then does are the same, per client."""
    stuck_due: Counter[str] = Counter()
    stuck_held: Counter[str] = Counter()
    for client, reason, n in conn.execute(
        "SELECT client_id::text, reason, count(*) FROM public.de_enrollment_stuck_leads GROUP BY 1, 2"
    ):
        (stuck_held if reason.startswith("held:") else stuck_due)[client] += n
    assert sum(stuck_due.values()) + sum(stuck_held.values()) == len(due_now(conn))

    target = Target(url, "test")
    dry = runner.run(target, runner.RunOptions(None, batch_size, 60000, dry_run=True))
    assert_no_client_failed(dry)
    real = runner.run(target, runner.RunOptions(None, batch_size, 60000))
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
