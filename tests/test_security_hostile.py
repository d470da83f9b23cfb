"""Whose code runs in the shared, Supabase-like database of security_helpers.py: the hostile
neighbour's overloads of built-ins are a real trap for an unprotected caller, yet none of them
runs while the platform's tables are under row-level security, its login writes with plain DML,
the DBA migrates, and a login that is only a member of deenroll_runner runs the whole scheduler
recipe.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from conftest import Server, run_cli
from security_helpers import Shared, shared_database

pytestmark = pytest.mark.schema


@pytest.fixture
def shared(pg_server: Server) -> Iterator[Shared]:
    yield from shared_database(pg_server)


def _hijacks(shared: Shared) -> list[tuple]:
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        return conn.execute("SELECT fn, by_role FROM public.hijack_log ORDER BY at").fetchall()


def _platform_setup_and_writes(shared: Shared) -> None:
    """The platform's tables under RLS, its login with plain DML, and its everyday writes."""
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON public.leads, public.campaigns TO deenroll_t_platform")
        for table in ("leads", "campaigns"):
            conn.execute(f"ALTER TABLE public.{table} ENABLE ROW LEVEL SECURITY")
            conn.execute(f"CREATE POLICY platform_all ON public.{table} TO deenroll_t_platform USING (true) WITH CHECK (true)")
    with psycopg.connect(shared.platform, autocommit=True) as conn:
        assert conn.execute("SHOW search_path").fetchone()[0].startswith("deenroll_t_platform")
        conn.execute(
            """INSERT INTO campaigns (id, client_id, name, messages)
               SELECT md5('sc' || i)::uuid, md5('scl' || (i % 2))::uuid, 'campaign ' || i, '["a", "b", "c"]'::jsonb
                 FROM generate_series(1, 4) AS i"""
        )
        conn.execute(
            """INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, is_active, opted_out)
               SELECT md5('sl' || i)::uuid, md5('scl' || (i % 4 % 2))::uuid, md5('sc' || (i % 4 + 1))::uuid,
                      i % 4, true, i % 7 = 0
                 FROM generate_series(1, 80) AS i"""
        )
        conn.execute("UPDATE leads SET current_message_position = current_message_position + 1 WHERE id = md5('sl1')::uuid")
        conn.execute("UPDATE leads SET opted_out = true WHERE id = md5('sl2')::uuid")
        conn.execute("DELETE FROM leads WHERE id = md5('sl3')::uuid")


def test_plants_would_run_for_an_unprotected_caller(shared: Shared) -> None:
    """The trap is real: an ordinary query with the default search_path calls the hostile code."""
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        conn.execute("SELECT cardinality(ARRAY[gen_random_uuid()]), format('%s', 'x'::text)")
    assert {fn for fn, _ in _hijacks(shared)} == {"cardinality(uuid[])", "format(text,text)"}


def test_scheduler_recipe_as_runner_member_with_a_hostile_neighbour(shared: Shared) -> None:
    assert run_cli("migrate", "--to", "0018", db=shared.admin).code == 0
    _platform_setup_and_writes(shared)
    migrated = run_cli("migrate", db=shared.admin)
    assert migrated.code == 0, migrated.stderr
    with psycopg.connect(shared.admin, autocommit=True) as conn:
        conn.execute("GRANT deenroll_runner TO deenroll_t_scheduler")
    # The platform keeps writing after the install: the trigger works for its login and path.
    with psycopg.connect(shared.platform, autocommit=True) as conn:
        conn.execute("UPDATE leads SET current_message_position = 3 WHERE id = md5('sl5')::uuid")
        conn.execute("UPDATE leads SET opted_out = true WHERE id = md5('sl6')::uuid")
        conn.execute(
            "INSERT INTO leads (client_id, campaign_link_id, current_message_position) "
            "VALUES (md5('scl1')::uuid, md5('sc2')::uuid, 3)"
        )

    env = {"DEENROLL_EMBEDDED": "never"}
    recipe = [
        ("run", "--dry-run", "--json"),
        ("run", "--json"),
        ("health-check",),
        ("stuck",),
        ("stats", "drift"),
        ("stats", "recalculate"),
        ("maintenance", "cleanup"),
        ("run", "--json"),
    ]
    for args in recipe:
        result = run_cli(*args, db=shared.scheduler, env=env)
        assert result.code in (0, 1), (args, result.code, result.stderr[-2000:])
        assert "permission denied" not in result.stderr, (args, result.stderr[-2000:])

    with psycopg.connect(shared.admin, autocommit=True) as conn:
        active_due = conn.execute(
            """SELECT count(*) FROM leads l JOIN campaigns c ON c.id = l.campaign_link_id
                WHERE l.is_active AND (l.opted_out OR l.current_message_position >= jsonb_array_length(c.messages))"""
        ).fetchone()[0]
        de_enrolled = conn.execute("SELECT count(*) FROM de_enrollment_lead_log").fetchone()[0]
        drift = conn.execute("SELECT count(*) FROM campaign_stats_drift").fetchone()[0]
    assert active_due == 0 and de_enrolled > 0 and drift == 0
    assert _hijacks(shared) == []
