"""Who may do what in the shared, Supabase-like database of security_helpers.py: the exact
privilege matrix of the runner, the analyst, PUBLIC and the API roles; what is refused; row-level
security that would hide rows from the engine; and what Supabase's Security Advisor warns about.
The hostile neighbour's code and the scheduler recipe run as a runner member are in
test_security_hostile.py.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from deenroll.sqlfiles import definitions

from conftest import Server, run_cli
from security_helpers import API_ROLES, Shared, shared_database

pytestmark = pytest.mark.schema


@pytest.fixture
def shared(pg_server: Server) -> Iterator[Shared]:
    yield from shared_database(pg_server)


def _matrix(conn: psycopg.Connection) -> set[tuple[str, str, str]]:
    """Every (role, object, privilege) that holds for our objects and the platform's tables."""
    roles = list(API_ROLES) + ["deenroll_runner", "deenroll_analyst", "deenroll_t_nobody"]
    return set(
        conn.execute(
            """
            WITH ours AS (
                SELECT c.oid::regclass::text AS obj, c.relkind::text AS kind
                  FROM pg_class c
                 WHERE c.oid IN (SELECT t FROM deenroll.own_tables() AS t)
                    OR (c.relnamespace = 'public'::regnamespace
                        AND c.relname IN (SELECT name FROM public._deenroll_definitions WHERE kind = 'view'))
            ), platform AS (
                SELECT c.oid::regclass::text AS obj FROM pg_class c
                 WHERE c.oid IN ('public.leads'::regclass, 'public.campaigns'::regclass)
            ), funcs AS (
                SELECT p.oid::regprocedure::text AS obj
                  FROM pg_proc p
                 WHERE (p.pronamespace = 'public'::regnamespace
                        AND p.proname IN (SELECT name FROM public._deenroll_definitions WHERE kind = 'function'))
                    OR p.pronamespace = 'deenroll'::regnamespace
                    OR p.oid = 'public.leads_record_stats_delta()'::regprocedure  -- our trigger in public
            )
            SELECT r, o.obj, p
              FROM unnest(%(roles)s::text[]) AS r
             CROSS JOIN ours AS o
             CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p
             WHERE has_table_privilege(r, o.obj, p)
            UNION ALL
            -- The platform's own tables are the platform's business, except for our roles.
            SELECT r, o.obj, p
              FROM unnest(ARRAY['deenroll_runner', 'deenroll_analyst', 'deenroll_t_nobody']) AS r
             CROSS JOIN platform AS o
             CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p
             WHERE has_table_privilege(r, o.obj, p)
            UNION ALL
            SELECT r, f.obj, 'EXECUTE'
              FROM unnest(%(roles)s::text[]) AS r
             CROSS JOIN funcs AS f
             WHERE has_function_privilege(r, f.obj, 'EXECUTE')
            UNION ALL
            SELECT r, 'schema deenroll', p
              FROM unnest(%(roles)s::text[]) AS r
             CROSS JOIN unnest(ARRAY['USAGE', 'CREATE']) AS p
             WHERE has_schema_privilege(r, 'deenroll', p)
            """,
            {"roles": roles},
        ).fetchall()
    )


RUNNER_FUNCTIONS = {
    "apply_campaign_stats_deltas(uuid[])",
    "apply_client_stats_deltas(uuid)",
    "archive_de_enrollment_history(integer,integer,boolean)",
    "count_leads_for_de_enrollment(uuid)",
    "de_enrollment_client_exists(uuid)",
    "de_enrollment_heartbeat(uuid)",
    "de_enrollment_clients()",
    "de_enrollment_held_leads(uuid)",
    "de_enrollment_invalid_campaigns(uuid)",
    "de_enrollment_rls_blind_spots()",
    "finish_de_enrollment_run(uuid,text,text)",
    "get_leads_for_de_enrollment(uuid,integer)",
    "process_de_enrollment_batch(uuid,uuid[])",
    "recalculate_campaign_stats(uuid)",
    "start_de_enrollment_run(uuid,integer,integer,text,integer,integer,integer)",
    # the run's loop in the database: it runs with its caller's rights and only calls the above
    "deenroll.run_de_enrollment(uuid,integer,integer,integer,timestamp with time zone,text,integer,integer,boolean,jsonb)",
    "deenroll.run_de_enrollment_loop(uuid,integer,integer,integer,timestamp with time zone,text,integer,integer,boolean,uuid,integer,jsonb)",
    "deenroll.run_de_enrollment_client(uuid,integer,integer,integer,timestamp with time zone,bigint,text,integer,integer,uuid,boolean,jsonb)",
    "deenroll.run_de_enrollment_batches(uuid,uuid,integer,timestamp with time zone,boolean,jsonb)",
    "deenroll.help_de_enrollment_run(uuid,uuid,integer,timestamp with time zone,boolean,jsonb)",
    "deenroll.de_enrollment_run_options(integer,integer,integer)",
    "deenroll.de_enrollment_run_lock(uuid,boolean)",
    "deenroll.de_enrollment_open_runs()",
    "deenroll.fold_remaining_de_enrollment_deltas(integer)",
    "deenroll.de_enrollment_run_queue(integer)",
    "deenroll.de_enrollment_pin_settings()",
    "deenroll.de_enrollment_retry_lock_race(integer,text)",
    "deenroll.de_enrollment_join_run_group(uuid,timestamp with time zone)",
    "deenroll.de_enrollment_take_client(uuid,uuid,integer,integer,text,integer,integer,integer)",
    "deenroll.de_enrollment_require_client(uuid)",
    "deenroll.de_enrollment_dry_run(uuid)",
    # the pg_cron jobs' health check and `deenroll schedule status`
    "check_de_enrollment_health()",
    "de_enrollment_maintained_tables()",
    "count_de_enrollment_runs_in_windows(timestamp with time zone[],timestamp with time zone[],integer[])",
    "count_de_enrollment_held_in_windows(timestamp with time zone[],timestamp with time zone[],integer[])",
    "deenroll.de_enrollment_cron_jobs(text)",
    # alerts: the documents, the database's sending (a definer function) and its health job,
    # whether alerts are on and their deliveries; keeping the webhook is the owner's alone
    "deenroll.de_enrollment_version()",
    "deenroll.de_enrollment_run_exit_code(jsonb,text,boolean)",
    "deenroll.de_enrollment_alert_document(text,text,jsonb,text)",
    "deenroll.de_enrollment_run_alert(jsonb,text,text)",
    "deenroll.de_enrollment_health_alert(text)",
    "deenroll.send_de_enrollment_alert(jsonb)",
    "deenroll.alert_de_enrollment_health()",
    "deenroll.de_enrollment_alert_webhook()",
    "deenroll.de_enrollment_alert_deliveries(integer)",
}
VIEWS = {d.name for d in definitions() if d.kind == "view"}  # every view file of ours


def test_privilege_matrix_is_exactly_the_list(shared: Shared) -> None:
    """Nothing for PUBLIC or the API roles; the runner and the analyst get exactly their share."""
    assert run_cli("migrate", db=shared.admin).code == 0
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        granted = _matrix(conn)
        # what the views call, and what those functions' bound bodies call with the reader's rights
        view_functions = {
            sig for (sig,) in conn.execute(
                """WITH RECURSIVE called AS (
                       SELECT d.refobjid AS oid
                         FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid
                        WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_proc'::regclass
                          AND w.ev_class IN (SELECT ('public.' || v)::regclass FROM unnest(%s::text[]) AS v)
                       UNION
                       SELECT d.refobjid
                         FROM called c JOIN pg_proc p ON p.oid = c.oid AND NOT p.prosecdef
                         JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                         AND d.refclassid = 'pg_proc'::regclass)
                   SELECT oid::regprocedure::text FROM called
                    WHERE (SELECT pronamespace FROM pg_proc WHERE oid = called.oid) <> 'pg_catalog'::regnamespace""",
                (sorted(VIEWS),),
            ).fetchall()
        }
        assert "deenroll.de_enrollment_sequence_length(jsonb)" in view_functions  # through de_enrollment_due_outcome
        # Helpers of CHECK constraints run with the writer's rights: every role may execute them.
        check_helpers = {
            sig for (sig,) in conn.execute(
                """SELECT DISTINCT d.refobjid::regprocedure::text
                     FROM pg_depend d JOIN pg_constraint k ON k.oid = d.objid
                    WHERE d.classid = 'pg_constraint'::regclass AND d.refclassid = 'pg_proc'::regclass
                      AND (SELECT pronamespace FROM pg_proc WHERE oid = d.refobjid) = 'deenroll'::regnamespace"""
            ).fetchall()
        }
    roles = list(API_ROLES) + ["deenroll_runner", "deenroll_analyst", "deenroll_t_nobody"]
    assert check_helpers, "the history constraint's helper should be found"
    expected = (
        {(r, f, "EXECUTE") for r in roles for f in check_helpers}
        | {("deenroll_runner", v, "SELECT") for v in VIEWS}
        | {("deenroll_analyst", v, "SELECT") for v in VIEWS}
        | {("deenroll_runner", f, "EXECUTE") for f in RUNNER_FUNCTIONS | view_functions}
        | {("deenroll_analyst", f, "EXECUTE") for f in view_functions}
        | {("deenroll_runner", "schema deenroll", "USAGE")}  # for the run's procedure
    )
    assert granted == expected


def test_public_and_api_roles_are_refused(shared: Shared) -> None:
    assert run_cli("migrate", db=shared.admin).code == 0
    client = str(uuid.uuid4())
    with psycopg.connect(shared.nobody, autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT public.start_de_enrollment_run(%s, 100, 1000)", (client,))
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        for role in API_ROLES:
            for sql in (
                "SELECT * FROM public.de_enrollment_lead_log",
                "DELETE FROM public.de_enrollment_lead_log",
                "SELECT * FROM public.de_enrollment_health",
                "SELECT public.process_de_enrollment_batch(gen_random_uuid(), '{}')",
                "SELECT * FROM public._yoyo_migration",
                "SELECT * FROM public.campaign_stats_delta",
            ):
                with conn.transaction(force_rollback=True):
                    conn.execute(f"SET LOCAL ROLE {role}")
                    with pytest.raises(errors.InsufficientPrivilege):
                        conn.execute(sql)
        # Our tables keep row-level security on, with no policy: no API can read them even by mistake.
        open_tables = conn.execute(
            "SELECT t::text FROM deenroll.own_tables() AS t JOIN pg_class c ON c.oid = t WHERE NOT c.relrowsecurity"
        ).fetchall()
    assert open_tables == []


def test_rls_that_hides_rows_from_the_engine_is_reported(shared: Shared) -> None:
    """A function owner that neither owns leads nor bypasses RLS would see only what policies allow."""
    assert run_cli("migrate", db=shared.admin).code == 0
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        assert conn.execute("SELECT * FROM public.de_enrollment_rls_blind_spots()").fetchall() == []
        conn.execute("ALTER TABLE public.leads ENABLE ROW LEVEL SECURITY")
        conn.execute("ALTER FUNCTION public.de_enrollment_rls_blind_spots() OWNER TO deenroll_t_platform")
        rows = conn.execute("SELECT table_name, function_owner FROM public.de_enrollment_rls_blind_spots()").fetchall()
    assert rows == [("public.leads", "deenroll_t_platform")]
    # Never a silent "0 de-enrolled": run refuses, health-check is an error, verify fails, each naming the table.
    run = run_cli("run", db=shared.admin)
    assert run.code == 2 and "row-level security hides leads" in run.stderr and "public.leads" in run.stderr
    health = run_cli("health-check", db=shared.admin)
    assert health.code == 2 and "row-level security" in health.stdout and "public.leads" in health.stdout
    verify = run_cli("verify", db=shared.admin)
    assert verify.code == 1 and "FAIL  row-level security on public.leads" in verify.stdout


def test_a_login_without_the_runner_role_cannot_run(shared: Shared) -> None:
    """PUBLIC's rights are not enough: `run` fails with one line and leaves no run row or lock behind."""
    assert run_cli("migrate", db=shared.admin).code == 0
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO campaigns (client_id, name, messages) VALUES (gen_random_uuid(), 'c', '[1]')"
        )
    result = run_cli("run", db=shared.nobody, env={"DEENROLL_EMBEDDED": "never"})
    assert result.code == 2
    assert "Traceback" not in result.stderr
    assert "permission denied" in result.stderr
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM de_enrollment_runs").fetchone()[0] == 0
        # this database's: runs of other tests on the same server hold their runs' locks
        assert conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()[0] == 0


# Functions the planner must inline into the per-row work of a run: a SET clause would stop
# that, and their SQL-standard bodies are bound to their objects when created, so no search
# path can redirect them. The only functions of ours without a pinned search path.
INLINED = {
    "public.de_enrollment_due_outcome(boolean,timestamp with time zone,boolean,integer,uuid,jsonb)",
    "public.de_enrollment_finished_leads(uuid,uuid[],boolean)",
    "public.de_enrollment_opted_out_leads(uuid,boolean)",
    "public.de_enrollment_marked_campaigns(uuid)",
    # the counter rule, evaluated for every lead a recount or the drift view reads
    "public.de_enrollment_counts_as_active(boolean,boolean)",
    # a sequence's length, read for every campaign the claim, the batch and the views look into
    "deenroll.de_enrollment_sequence_length(jsonb)",
}
# Procedures that commit: a SET clause or SECURITY DEFINER would make their COMMIT fail, so they
# run with their caller's rights and pin search_path themselves, first and after every COMMIT.
COMMITTING = {
    "deenroll.run_de_enrollment(uuid,integer,integer,integer,timestamp with time zone,text,integer,integer,boolean,jsonb)",
    "deenroll.run_de_enrollment_loop(uuid,integer,integer,integer,timestamp with time zone,text,integer,integer,boolean,uuid,integer,jsonb)",
    "deenroll.run_de_enrollment_client(uuid,integer,integer,integer,timestamp with time zone,bigint,text,integer,integer,uuid,boolean,jsonb)",
    "deenroll.run_de_enrollment_batches(uuid,uuid,integer,timestamp with time zone,boolean,jsonb)",
    "deenroll.help_de_enrollment_run(uuid,uuid,integer,timestamp with time zone,boolean,jsonb)",
    "deenroll.alert_de_enrollment_health()",  # the health job that commits its alert before it fails
}
PIN = "PERFORM deenroll.de_enrollment_pin_settings();"
# What that call runs: a SQL-standard body (bound when created) that sets search_path and jit for
# the transaction; a SET clause of its own would undo them when it returns.
PIN_FUNCTION = "deenroll.de_enrollment_pin_settings()"
# What the platform's own tables are; everything else the migrating role owns in these schemas is ours.
PLATFORM_TABLES = ("leads", "campaigns")


def test_the_security_advisors_warnings_find_nothing_of_ours(shared: Shared) -> None:
    """What Supabase's Security Advisor warns about, checked on every object of ours: a SECURITY
    DEFINER function the API roles may call, a function with a mutable search path, a table in
    the exposed schema without row-level security, a view the API roles may read (views run with
    their owner's rights), anything PUBLIC may call in the exposed schema."""
    assert run_cli("migrate", db=shared.admin).code == 0
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        functions = conn.execute(
            """SELECT p.oid::regprocedure::text, n.nspname, p.prosecdef, p.prosqlbody IS NOT NULL,
                      EXISTS (SELECT FROM unnest(p.proconfig) AS c WHERE c LIKE 'search_path=%%'),
                      has_function_privilege('anon', p.oid, 'EXECUTE'),
                      has_function_privilege('authenticated', p.oid, 'EXECUTE'),
                      EXISTS (SELECT FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
                               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')
                 FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
                WHERE n.nspname IN ('public', 'deenroll') AND p.proowner = current_user::regrole"""
        ).fetchall()
        relations = conn.execute(
            """SELECT c.oid::regclass::text, n.nspname, c.relkind, c.relrowsecurity,
                      has_table_privilege('anon', c.oid, 'SELECT'), has_table_privilege('authenticated', c.oid, 'SELECT')
                 FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
                WHERE n.nspname IN ('public', 'deenroll') AND c.relkind IN ('r', 'p', 'v', 'm')
                  AND c.relowner = current_user::regrole
                  AND NOT (n.nspname = 'public' AND c.relname = ANY (%s))""",
            (list(PLATFORM_TABLES),),
        ).fetchall()
    names = {sig.removeprefix("public.").split("(")[0] for sig, *_ in functions}
    assert "de_enrollment_heartbeat" in names and len(functions) > 20
    assert "campaign_history_has_no_repeats" not in names  # 0019's unused helper is gone

    api_may_call_definer = [sig for sig, _, definer, _, _, anon, auth, _ in functions if definer and (anon or auth)]
    assert api_may_call_definer == []
    unpinned = {(f"public.{sig}" if nsp == "public" and not sig.startswith("public.") else sig)
                for sig, nsp, _, _, pinned, *_ in functions if not pinned}
    assert unpinned == INLINED | COMMITTING | {PIN_FUNCTION}
    assert all(bound and not definer for sig, _, definer, bound, pinned, *_ in functions
               if not pinned and sig not in COMMITTING)
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        for sig in COMMITTING:
            definer, body = conn.execute(
                "SELECT prosecdef, prosrc FROM pg_proc WHERE oid = %s::regprocedure", (sig,)
            ).fetchone()
            assert not definer, sig
            code = re.sub(r"--[^\n]*", "", body)
            first = code.split("BEGIN", 1)[1].split(";", 1)[0] + ";"
            assert first.strip() == PIN, (sig, first)
            after_commits = [part.lstrip() for part in code.split("COMMIT;")[1:]]
            assert all(part.startswith(PIN) for part in after_commits), sig
    public_may_call = [sig for sig, nsp, *_, public in functions if nsp == "public" and public]
    assert public_may_call == []

    assert len(relations) > 5
    assert [name for name, nsp, kind, rls, *_ in relations if kind in ("r", "p") and not rls] == []
    assert [name for name, nsp, kind, _, anon, auth in relations if anon or auth] == []
