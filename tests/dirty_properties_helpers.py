"""The platform's side of test_dirty_properties.py: what its tables may hold (strategies of dirty
data), a Scenario, loading it into a fresh database, and the platform's writes while a run runs."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import psycopg
from hypothesis import event
from hypothesis import strategies as st

from deenroll.runner import calls as runner_calls, options as runner_options, report as runner_report
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


class _Started(runner_report.Observer):
    """Lets the platform's writer go once the run has started its first client."""

    def __init__(self, go: threading.Event) -> None:
        super().__init__()
        self.go = go

    def client_started(self, client_id: str) -> None:
        self.go.set()
        super().client_started(client_id)


def run_while_the_platform_writes(url: str, sc: Scenario) -> runner_report.RunReport:
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
        report = runner_calls.run(Target(url, "test"), runner_options.RunOptions(None, sc.batch_size, 60000), _Started(go))
        event(f"platform writes: {'none' if not sc.ops else 'still going when the run ended' if writer.is_alive() else 'done within the run'}")
    finally:
        go.set()  # a run without clients never starts one
        writer.join(WRITER_TIMEOUT_S)
    assert not writer.is_alive(), "the platform's writer did not finish"
    assert not failures, failures
    assert_no_client_failed(report)
    return report


def assert_no_client_failed(report: runner_report.RunReport) -> None:
    bad = [(c.client_id, c.status, c.error) for c in report.clients if c.status not in ("success", "partial", "dry_run")]
    assert not bad, bad
    assert report.exit_code in (0, 1), report.exit_code
