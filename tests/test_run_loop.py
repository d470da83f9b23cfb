"""The run's loop over clients (deenroll.run_de_enrollment), the one loop `deenroll run` and
pg_cron both run: called here as pg_cron calls it, one CALL by a login that is only a member of
deenroll_runner, and through `deenroll run` where a path is the runner's.

A failed client and a failed start leave the others to run in the same CALL; other sessions'
open runs are helped and reported once each; lock races are retried; a newly opted-out lead
makes an idle client due again; the calls of one `deenroll run` share the clients; and every
transaction of the CALL pins its search_path, whatever the caller's puts ahead of pg_catalog."""

from __future__ import annotations

import uuid
import psycopg
import pytest

from conftest import add_campaign, add_leads, new_id
from engine_data import assert_exactly_once
from processes import fault


def call(url: str, sql: str = "CALL deenroll.run_de_enrollment()", params: tuple = ()) -> dict:
    with psycopg.connect(url, autocommit=True) as c:
        return c.execute(sql, params).fetchone()[0]


def clients(conn: psycopg.Connection, n: int, due: int = 7) -> list[str]:
    """n clients with `due` finished leads each, in the order a run takes them (none ran yet: by id)."""
    made = sorted(new_id() for _ in range(n))
    for client in made:
        add_leads(conn, add_campaign(conn, client), client, due, position=3)
    return made


def left_due(conn: psycopg.Connection, client: str) -> int:
    return conn.execute("SELECT count(*) FROM leads WHERE client_id = %s AND is_active", (client,)).fetchone()[0]


def by_client(summary: dict) -> dict[str, dict]:
    return {c["client_id"]: c for c in summary["clients"]}


def test_a_failed_client_is_followed_by_the_others_in_one_call(conn: psycopg.Connection, runner_login: str) -> None:
    first, hit, last = clients(conn, 3)
    fault(conn, "zz_full", "leads", "BEFORE UPDATE", f"NEW.client_id = '{hit}'", "53100")
    summary = call(runner_login)
    got = by_client(summary)
    assert list(got) == [first, hit, last]  # in the queue's order, each once
    assert got[hit]["status"] == "failed" and "injected fault zz_full" in got[hit]["error"]
    assert got[first]["status"] == got[last]["status"] == "success"
    assert left_due(conn, hit) == 7 and left_due(conn, first) == left_due(conn, last) == 0
    row = conn.execute("SELECT status, error_details FROM de_enrollment_runs WHERE id = %s", (got[hit]["run_id"],)).fetchone()
    assert row[0] == "failed" and "injected fault zz_full" in row[1]
    assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0
    assert_exactly_once(conn)


def test_a_failed_start_is_reported_and_the_call_goes_on(conn: psycopg.Connection, runner_login: str) -> None:
    first, hit, last = clients(conn, 3)
    fault(conn, "zz_no_runs", "de_enrollment_runs", "BEFORE INSERT", f"NEW.client_id = '{hit}'", "53000")
    got = by_client(call(runner_login))
    assert got[hit]["status"] == "failed" and got[hit]["run_id"] is None
    assert got[hit]["error"].startswith("could not start a run: injected fault zz_no_runs")
    assert got[first]["status"] == got[last]["status"] == "success"
    assert left_due(conn, hit) == 7 and left_due(conn, last) == 0


def test_another_sessions_open_run_is_helped_and_reported_once(conn: psycopg.Connection, db_url: str,
                                                               runner_login: str) -> None:
    [held, mine] = clients(conn, 2, due=30)
    with psycopg.connect(db_url, autocommit=True) as other:  # alive, holding its lease, doing nothing
        other_run = str(other.execute("SELECT start_de_enrollment_run(%s, 100, 60000, 'elsewhere', 1)",
                                      (held,)).fetchone()[0])
        summary = call(runner_login, "CALL deenroll.run_de_enrollment(p_batch_size => 7)")
        got = by_client(summary)
        assert got[held]["status"] == "skipped" and got[mine]["status"] == "success"
        assert summary["helped"] == [{"run_id": other_run, "client_id": held, "batches": 5, "completed": 30,
                                      "opted_out": 0, "held": 0, "error": None}]
        assert left_due(conn, held) == 0
        logged = conn.execute("SELECT DISTINCT run_id::text FROM de_enrollment_lead_log WHERE client_id = %s",
                              (held,)).fetchall()
        assert logged == [(other_run,)]
        # the helped run is the other session's to close: still open, with the helper's batches in its row
        assert conn.execute("SELECT status, batches FROM de_enrollment_runs WHERE id = %s",
                            (other_run,)).fetchone() == ("running", 5)
        other.execute("SELECT finish_de_enrollment_run(%s, 'success')", (other_run,))
    assert_exactly_once(conn)


def test_two_lost_lock_races_in_a_row_are_retried(conn: psycopg.Connection, runner_login: str) -> None:
    [hit] = clients(conn, 1)
    conn.execute("CREATE SEQUENCE public.zz_attempts")
    conn.execute("GRANT USAGE ON SEQUENCE public.zz_attempts TO PUBLIC")
    fault(conn, "zz_deadlock", "leads", "BEFORE UPDATE", "nextval('public.zz_attempts') <= 2", "40P01")
    got = by_client(call(runner_login))
    assert got[hit]["status"] == "success" and got[hit]["leads_de_enrolled"] == 7
    assert conn.execute("SELECT last_value FROM public.zz_attempts").fetchone()[0] >= 3
    assert left_due(conn, hit) == 0
    conn.execute("DROP TRIGGER zz_deadlock ON leads")

    # a third lost race in a row is the batch's failure
    [again] = clients(conn, 1)
    conn.execute("ALTER SEQUENCE public.zz_attempts RESTART")
    fault(conn, "zz_deadlock3", "leads", "BEFORE UPDATE", "nextval('public.zz_attempts') <= 3", "40P01")
    got = by_client(call(runner_login, "CALL deenroll.run_de_enrollment(p_client_id => %s)", (again,)))
    assert got[again]["status"] == "failed" and "injected fault zz_deadlock3" in got[again]["error"]
    assert left_due(conn, again) == 7


def test_a_newly_opted_out_lead_makes_an_idle_client_due_again(conn: psycopg.Connection, runner_login: str) -> None:
    [client] = clients(conn, 1)
    campaign = add_campaign(conn, client, messages=5)
    add_leads(conn, campaign, client, 3, position=1)  # active, mid-sequence: not due
    assert by_client(call(runner_login))[client]["leads_de_enrolled"] == 7
    # run a moment ago, nothing due: a queued run passes it over
    assert call(runner_login)["clients"] == []
    lead = conn.execute("SELECT id::text FROM leads WHERE campaign_link_id = %s LIMIT 1", (campaign,)).fetchone()[0]
    conn.execute("UPDATE leads SET opted_out = true WHERE id = %s", (lead,))
    got = by_client(call(runner_login))
    assert got[client]["opted_out"] == 1 and got[client]["status"] == "success"
    assert conn.execute("SELECT is_active FROM leads WHERE id = %s", (lead,)).fetchone()[0] is False


def test_the_calls_of_one_run_share_its_clients_and_report_each_once(conn: psycopg.Connection,
                                                                     runner_login: str) -> None:
    made = clients(conn, 4)
    group = str(uuid.uuid4())
    sql = "CALL deenroll.run_de_enrollment_loop(p_run_group => %s, p_idle_ms => 0)"
    first = call(runner_login, sql, (group,))
    second = call(runner_login, sql, (group,))  # the same run: its clients are the first call's
    assert sorted(by_client(first)) == sorted(made) and second["clients"] == []
    third = call(runner_login, sql, (str(uuid.uuid4()),))  # another run: every client again
    assert sorted(by_client(third)) == sorted(made)
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs").fetchone()[0] == 8


def test_every_transaction_of_the_call_pins_search_path(conn: psycopg.Connection, db_url: str,
                                                         runner_login: str) -> None:
    """A caller whose search_path puts a schema of a hostile neighbour ahead of pg_catalog, with
    its own operators for what the run computes (=, >=, -, *, ||, ->>): nothing in the CALL,
    before or after any COMMIT, may reach them."""
    clients(conn, 2)
    hostile = f"zz_hostile_{uuid.uuid4().hex[:6]}"
    conn.execute(f"CREATE SCHEMA {hostile}; GRANT USAGE ON SCHEMA {hostile} TO PUBLIC")
    for i, (op, left, right, result) in enumerate((("=", "text", "text", "boolean"), ("=", "uuid", "uuid", "boolean"),
                                    (">=", "timestamptz", "timestamptz", "boolean"),
                                    ("-", "timestamptz", "timestamptz", "interval"),
                                    ("*", "numeric", "numeric", "numeric"), ("||", "jsonb", "jsonb", "jsonb"),
                                    ("->>", "jsonb", "text", "text"))):
        name = f"trap_{i}"
        conn.execute(
            f"""CREATE FUNCTION {hostile}.{name}({left}, {right}) RETURNS {result} LANGUAGE plpgsql AS $$
                    BEGIN RAISE EXCEPTION 'hostile operator reached'; END $$;
                CREATE OPERATOR {hostile}.{op} (LEFTARG = {left}, RIGHTARG = {right}, FUNCTION = {hostile}.{name})"""
        )
    with psycopg.connect(runner_login, autocommit=True) as c:
        c.execute(f"SET search_path = {hostile}, pg_catalog, public")
        with pytest.raises(psycopg.errors.RaiseException):  # the trap works for an unpinned statement
            c.execute("SELECT 'a'::text = 'a'::text")
        summary = c.execute("CALL deenroll.run_de_enrollment(p_batch_size => 3, p_progress => true)").fetchone()[0]
        assert [x["status"] for x in summary["clients"]] == ["success", "success"], summary
        assert summary["fold_error"] is None
        # with a client given, the loop compares client ids after its commits too
        client = summary["clients"][0]["client_id"]
        again = c.execute("CALL deenroll.run_de_enrollment(p_client_id => %s::uuid)", (client,)).fetchone()[0]
        assert again["clients"][0]["status"] == "success"
        assert c.execute("SHOW search_path").fetchone()[0].startswith(hostile)  # the caller's, as it was
