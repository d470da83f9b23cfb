"""Migrations are reversible to the catalog, keep the platform's rows, and are safe to repeat."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import psycopg
import pytest

from deenroll import sqlfiles
from deenroll.database import Target
from deenroll.migrate import commands, definitions, files, inspection

from catalog import diff, snapshot
from conftest import deenroll_exe
from engine_data import recount, stored

pytestmark = pytest.mark.schema

STEMS = [m.stem for m in files.migration_files()]
BASELINE = files.BASELINE
AFTER_BASELINE = STEMS[STEMS.index(BASELINE) + 1 :]


def _seed_platform_rows(url: str) -> None:
    """Some campaigns and leads as the messaging platform would have them."""
    with psycopg.connect(url) as conn:
        conn.execute(
            """
            INSERT INTO campaigns (id, client_id, name, messages)
            SELECT md5('c' || i)::uuid, md5('client' || (i % 3))::uuid, 'campaign ' || i,
                   (SELECT jsonb_agg(j) FROM generate_series(1, 1 + i % 4) j)
              FROM generate_series(1, 9) i;
            INSERT INTO leads (id, client_id, campaign_link_id, first_name, current_message_position,
                               is_active, opted_out, booked)
            SELECT md5('l' || i)::uuid, md5('client' || ((i % 9 + 1) % 3))::uuid, md5('c' || (i % 9 + 1))::uuid,
                   'lead ' || i, i % 6, i % 5 <> 0, i % 7 = 0, i % 11 = 0
              FROM generate_series(1, 300) i;
            """
        )


def _platform_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        leads = conn.execute(
            """SELECT id, client_id, campaign_link_id, first_name, last_name, phone, email,
                      current_message_position, is_active, opted_out, booked, created_at, updated_at
                 FROM leads ORDER BY id"""
        ).fetchall()
        campaigns = conn.execute("SELECT id, client_id, name, messages, created_at FROM campaigns ORDER BY id").fetchall()
    return leads + campaigns


def _catalog(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return snapshot(conn)


def _use_new_objects(url: str) -> None:
    """Write into what 0019-0021 added, so that a rollback has data to drop."""
    with psycopg.connect(url) as conn:
        lead, campaign, client = conn.execute(
            "SELECT id, campaign_link_id, client_id FROM leads ORDER BY id LIMIT 1"
        ).fetchone()
        conn.execute("UPDATE leads SET completed_at = now(), campaign_history = '[{\"campaign_id\": \"x\"}]' WHERE id = %s", (lead,))
        run = conn.execute("INSERT INTO de_enrollment_runs (client_id) VALUES (%s) RETURNING id", (client,)).fetchone()[0]
        conn.execute(
            "INSERT INTO de_enrollment_lead_log (run_id, lead_id, client_id, campaign_id, outcome) VALUES (%s, %s, %s, %s, 'completed')",
            (run, lead, client, campaign),
        )


def test_up_then_down_to_baseline_restores_catalog_and_rows(empty_db_url: str) -> None:
    target = Target(empty_db_url, "test")
    commands.migrate(target, to=BASELINE)
    _seed_platform_rows(empty_db_url)
    before_catalog, before_rows = _catalog(empty_db_url), _platform_rows(empty_db_url)

    result = commands.migrate(target)
    assert result.applied == AFTER_BASELINE
    _use_new_objects(empty_db_url)
    assert commands.rollback(target, BASELINE) == list(reversed(AFTER_BASELINE))

    assert diff(before_catalog, _catalog(empty_db_url)) == []
    with psycopg.connect(empty_db_url) as conn:
        # The platform's rows are all there; only columns we added (and dropped) changed.
        rows = conn.execute(
            """SELECT id, client_id, campaign_link_id, first_name, last_name, phone, email,
                      current_message_position, is_active, opted_out, booked, created_at
                 FROM leads ORDER BY id"""
        ).fetchall()
    assert [r[:12] for r in before_rows[: len(rows)]] == rows
    assert len(_platform_rows(empty_db_url)) == len(before_rows)

    # Up again: the same catalog as the first time up (river's up/down/up round trip).
    commands.migrate(target)
    full_again = _catalog(empty_db_url)
    commands.rollback(target, BASELINE)
    commands.migrate(target)
    assert diff(full_again, _catalog(empty_db_url)) == []


@pytest.mark.parametrize("stem", AFTER_BASELINE)
def test_each_single_step_rollback_restores_the_catalog(empty_db_url: str, stem: str) -> None:
    target = Target(empty_db_url, "test")
    previous = STEMS[STEMS.index(stem) - 1]
    commands.migrate(target, to=previous)
    _seed_platform_rows(empty_db_url)
    before_catalog, before_rows = _catalog(empty_db_url), _platform_rows(empty_db_url)

    assert commands.migrate(target, to=stem).applied == [stem]
    assert commands.rollback(target, previous) == [stem]

    assert diff(before_catalog, _catalog(empty_db_url)) == []
    assert len(_platform_rows(empty_db_url)) == len(before_rows)


def test_migrate_twice_changes_nothing(db_url: str) -> None:
    before = _catalog(db_url)
    with psycopg.connect(db_url) as conn:
        recorded = conn.execute(f"SELECT name, file_sha256, catalog_md5, applied_at FROM {definitions.DEFINITIONS_TABLE} ORDER BY name").fetchall()
    result = commands.migrate(Target(db_url, "test"))
    assert result.applied == [] and result.definitions == []
    assert diff(before, _catalog(db_url)) == []
    with psycopg.connect(db_url) as conn:
        assert conn.execute(f"SELECT name, file_sha256, catalog_md5, applied_at FROM {definitions.DEFINITIONS_TABLE} ORDER BY name").fetchall() == recorded


def test_counters_are_backfilled_and_then_kept_by_the_triggers(empty_db_url: str) -> None:
    target = Target(empty_db_url, "test")
    commands.migrate(target, to=BASELINE)
    _seed_platform_rows(empty_db_url)
    commands.migrate(target)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert sum(active for active, *_ in stored(conn).values()) > 0
        assert stored(conn) == recount(conn)
        # The platform changes leads; the deltas, once folded, keep the counters exact.
        conn.execute("UPDATE leads SET opted_out = true WHERE first_name LIKE 'lead 1%'")
        conn.execute("DELETE FROM leads WHERE first_name LIKE 'lead 2%'")
        conn.execute("UPDATE leads SET booked = NOT booked, campaign_link_id = md5('c1')::uuid WHERE first_name LIKE 'lead 3%'")
        conn.execute(
            "INSERT INTO leads (client_id, campaign_link_id, is_active) SELECT client_id, id, true FROM campaigns"
        )
        conn.execute("UPDATE leads SET current_message_position = current_message_position + 1")  # counts nothing
        pending = conn.execute("SELECT count(*) FROM campaign_stats_delta").fetchone()[0]
        assert pending > 0
        folded = conn.execute("SELECT to_regproc('apply_campaign_stats_deltas')").fetchone()[0]
        if folded is None:
            pytest.skip("apply_campaign_stats_deltas() not installed yet")
        conn.execute("SELECT apply_campaign_stats_deltas()")
        assert stored(conn) == recount(conn)
        assert conn.execute("SELECT count(*) FROM campaign_stats_delta").fetchone()[0] == 0


def test_existing_platform_tables_are_left_alone(empty_db_url: str) -> None:
    """On a database that has the platform's tables, the baseline creates and changes nothing."""
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            """
            CREATE TABLE campaigns (id uuid PRIMARY KEY, client_id uuid NOT NULL, name text,
                                    messages jsonb, created_at timestamptz DEFAULT now(), owner text);
            CREATE TABLE leads (id uuid PRIMARY KEY, client_id uuid NOT NULL,
                                campaign_link_id uuid REFERENCES campaigns, first_name text, last_name text,
                                phone text, email text, current_message_position integer, is_active boolean,
                                opted_out boolean, booked boolean, created_at timestamptz, updated_at timestamptz,
                                source text);
            INSERT INTO campaigns (id, client_id, name, messages) VALUES (md5('a')::uuid, md5('b')::uuid, 'x', '[1,2]');
            """
        )
    before = _catalog(empty_db_url)
    commands.migrate(Target(empty_db_url, "test"), to=BASELINE)
    assert diff(before, _catalog(empty_db_url)) == []
    commands.migrate(Target(empty_db_url, "test"))
    commands.rollback(Target(empty_db_url, "test"), BASELINE)
    assert diff(before, _catalog(empty_db_url)) == []


def test_missing_prerequisite_column_is_named_and_nothing_is_applied(empty_db_url: str, cli) -> None:
    with psycopg.connect(empty_db_url) as conn:
        conn.execute(
            """CREATE TABLE campaigns (id uuid PRIMARY KEY, client_id uuid NOT NULL, name text,
                                       messages jsonb, created_at timestamptz);
               CREATE TABLE leads (id uuid PRIMARY KEY, client_id uuid NOT NULL, campaign_link_id uuid,
                                   current_message_position integer, is_active boolean, booked boolean,
                                   created_at timestamptz, updated_at timestamptz)"""
        )
    before = _catalog(empty_db_url)
    res = cli("migrate", db=empty_db_url)
    assert res.code != 0
    assert "leads.opted_out" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert diff(before, _catalog(empty_db_url)) == []
    with psycopg.connect(empty_db_url) as conn:  # refused before yoyo creates its tables
        assert conn.execute("SELECT to_regclass('_yoyo_migration')").fetchone()[0] is None


def test_two_migrate_processes_at_once_are_safe(empty_db_url: str, pg_server) -> None:
    procs = [
        subprocess.Popen([deenroll_exe(), "--database-url", empty_db_url, "migrate"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    applied_lines = sum(out.count("applied   ") for out, _ in outs)
    assert applied_lines == len(STEMS)  # each migration applied by exactly one process
    with psycopg.connect(empty_db_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")]
    assert ids == STEMS
    # The result is the same catalog as a plain, single migrate.
    name = f"deenroll_single_{uuid.uuid4().hex[:10]}"
    other = pg_server.create_db(name)
    try:
        commands.migrate(Target(other, "test"))
        assert diff(_catalog(other), _catalog(empty_db_url)) == []
    finally:
        pg_server.drop_db(name)


def test_changed_function_is_reapplied_and_hand_edits_are_reported(db_url: str, cli) -> None:
    defs = sqlfiles.definitions()
    if not defs:
        pytest.skip("no function or view files yet")
    victim = next(d for d in defs if d.kind == "function")
    with psycopg.connect(db_url) as conn:
        sig = conn.execute(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE proname = %s LIMIT 1", (victim.name,)
        ).fetchone()[0]
        conn.execute(f"COMMENT ON FUNCTION {sig} IS 'hand edit'")
        conn.execute(f"ALTER FUNCTION {sig} SET work_mem = '77MB'")
    res = cli("status", db=db_url)
    assert res.code == 0
    line = next(l for l in res.stdout.splitlines() if f" {victim.name} " in l)
    assert "by hand" in line
    res = cli("migrate", db=db_url)
    assert res.code == 0 and f"installed {victim.name}" in res.stdout
    assert "by hand" not in cli("status", db=db_url).stdout


def test_a_changed_file_is_reapplied_alone_and_rolled_back_objects_stay_gone(db_url: str, tmp_path, monkeypatch) -> None:
    from deenroll import paths

    copy = tmp_path / "sql"
    for folder in ("migrations", "rollback", "functions", "views"):
        shutil.copytree(paths.sql_dir(folder), copy / folder)
    monkeypatch.setattr(paths, "sql_root", lambda: copy)
    target = Target(db_url, "test")

    edited = copy / "functions" / "apply_campaign_stats_deltas.sql"
    edited.write_text(edited.read_text() + "\n-- a changed line\n")
    result = commands.migrate(target)
    assert result.applied == [] and result.definitions == ["apply_campaign_stats_deltas"]
    assert all(state == "up to date" for _, _, state in inspection.status(target).definitions)

    # Rolled back to 0020: what needs 0021 is dropped and a migrate up to 0020 does not bring it back.
    commands.rollback(target, "0020_unify_campaign_model")
    commands.migrate(target, to="0020_unify_campaign_model")
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regproc('get_leads_for_de_enrollment')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('de_enrollment_health')").fetchone()[0] is None
        assert conn.execute("SELECT to_regproc('apply_campaign_stats_deltas')").fetchone()[0] is not None
    states = dict((name, state) for name, _, state in inspection.status(target).definitions)
    assert states["get_leads_for_de_enrollment"].startswith("waits for 002")
