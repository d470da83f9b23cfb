"""No JIT in a run, whatever the caller's session says: every transaction of the run's procedures
pins jit off (de_enrollment_pin_settings, first and after every COMMIT), and the functions that
plan statements estimated far above jit_above_cost outside those transactions (the dry run, a
direct call) carry SET jit = off. A server with JIT on (Debian's PostgreSQL 15) would otherwise
compile those plans on every call. Checked by what the statements of a run see, not by time."""

from __future__ import annotations

import json
import os

import psycopg
import pytest

from conftest import add_campaign, add_leads, new_id

pytestmark = pytest.mark.schema

# The functions that carry SET jit = off: their statements are estimated far above
# jit_above_cost and cost a few index probes, and they are called outside the run's transactions.
WITHOUT_JIT = {"count_leads_for_de_enrollment", "get_leads_for_de_enrollment", "de_enrollment_clients",
               "de_enrollment_run_queue", "de_enrollment_invalid_campaigns", "de_enrollment_dry_run"}


def _watch(conn: psycopg.Connection) -> None:
    """A platform trigger on leads and on the run rows that records, per statement, the jit setting
    and the transaction: every transaction of a run writes one of them."""
    conn.execute(
        """CREATE TABLE public.jit_seen (tbl text, jit text, xact xid8);
           CREATE FUNCTION public.jit_seen_record() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
           BEGIN
               INSERT INTO public.jit_seen VALUES (TG_TABLE_NAME, current_setting('jit'), pg_current_xact_id());
               RETURN NULL;
           END $$;
           CREATE TRIGGER jit_seen AFTER INSERT OR UPDATE ON public.leads
               FOR EACH STATEMENT EXECUTE FUNCTION public.jit_seen_record();
           CREATE TRIGGER jit_seen AFTER INSERT OR UPDATE ON public.de_enrollment_runs
               FOR EACH STATEMENT EXECUTE FUNCTION public.jit_seen_record();"""
    )


def _due_leads(conn: psycopg.Connection) -> int:
    """Two clients with finished and opted-out leads: 8 due in all, several batches of 2 each."""
    for client in (new_id(), new_id()):
        campaign = add_campaign(conn, client, messages=3)
        add_leads(conn, campaign, client, 3, position=3)
        add_leads(conn, campaign, client, 1, position=1, opted_out=True)
        add_leads(conn, campaign, client, 2, position=1)  # in progress: not due
    return 8


def _seen(conn: psycopg.Connection) -> tuple[dict[str, set[str]], int]:
    rows = conn.execute("SELECT tbl, jit, xact::text FROM public.jit_seen").fetchall()
    by_table: dict[str, set[str]] = {}
    for tbl, jit, _ in rows:
        by_table.setdefault(tbl, set()).add(jit)
    return by_table, len({xact for _, _, xact in rows})


def test_the_procedure_runs_every_transaction_without_jit_while_the_caller_has_it_on(
        conn: psycopg.Connection, runner_login: str) -> None:
    due = _due_leads(conn)
    _watch(conn)
    with psycopg.connect(runner_login, autocommit=True) as caller:
        caller.execute("SET jit = on")
        (summary,) = caller.execute("CALL deenroll.run_de_enrollment(p_batch_size => 2)").fetchone()
        # the pin lasts for the run's transactions only: the caller's session keeps its setting
        assert caller.execute("SHOW jit").fetchone()[0] == "on"
    assert sum(c["leads_de_enrolled"] for c in summary["clients"]) == due
    by_table, transactions = _seen(conn)
    assert by_table == {"leads": {"off"}, "de_enrollment_runs": {"off"}}
    # each client's start, its batches (a COMMIT after each) and its end
    assert transactions >= 4
    # what the trigger records is the statement's setting: a session's own when nothing pins it
    conn.execute("SET jit = on")
    conn.execute("UPDATE public.leads SET is_active = is_active WHERE false")
    assert _seen(conn)[0]["leads"] == {"off", "on"}


def test_deenroll_run_sends_statements_without_jit_from_a_session_with_it_on(
        conn: psycopg.Connection, runner_login: str, cli) -> None:
    due = _due_leads(conn)
    _watch(conn)
    jit_on = {"PGOPTIONS": " ".join(filter(None, [os.environ.get("PGOPTIONS"), "-c jit=on"]))}
    done = cli("run", "--batch-size", "2", "--workers", "2", "--json", db=runner_login, env=jit_on)
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout)["totals"]["leads_de_enrolled"] == due
    by_table, transactions = _seen(conn)
    assert by_table == {"leads": {"off"}, "de_enrollment_runs": {"off"}}
    assert transactions >= 4


def test_the_functions_planned_outside_the_runs_transactions_carry_jit_off(conn: psycopg.Connection) -> None:
    rows = conn.execute(
        """SELECT p.proname, coalesce('jit=off' = ANY (p.proconfig), false)
             FROM pg_proc AS p
            WHERE p.pronamespace IN ('public'::regnamespace, 'deenroll'::regnamespace)
              AND p.proname = ANY (%s)""", (sorted(WITHOUT_JIT),)).fetchall()
    assert dict(rows) == dict.fromkeys(WITHOUT_JIT, True)
