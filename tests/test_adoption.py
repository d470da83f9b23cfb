"""Adopting an existing platform database: status reads only, prerequisites checked before
anything is created, the SOP's psql route recognised, failures that name their cause,
definitions replaced without touching what others built on them, and uninstall."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from catalog import diff, snapshot
from deenroll import paths, sqlfiles
from deenroll.database import Target
from deenroll.migrate import commands, definitions, execute, files, inspection

pytestmark = pytest.mark.schema

REPO = Path(__file__).resolve().parent.parent
STEMS = [m.stem for m in files.migration_files()]
AFTER_BASELINE = STEMS[STEMS.index(files.BASELINE) + 1 :]
SOP_ROUTE = [s for s in AFTER_BASELINE if s[:4] in ("0019", "0020", "0021")]

# A platform schema as many live databases have it: varchar names, timestamps without time
# zone, nullable columns, and columns of its own.
PLATFORM_TABLES = """
CREATE TABLE campaigns (id uuid PRIMARY KEY, client_id uuid, name varchar(255), messages jsonb,
                        created_at timestamp DEFAULT now(), owner_email varchar(320));
CREATE TABLE leads (id uuid PRIMARY KEY, client_id uuid, campaign_link_id uuid REFERENCES campaigns,
                    first_name varchar(100), phone varchar(40), current_message_position integer,
                    is_active boolean, opted_out boolean, booked boolean,
                    created_at timestamp DEFAULT now(), updated_at timestamp DEFAULT now(), source text);
"""


def _platform(url: str, ddl: str = PLATFORM_TABLES) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(ddl)


def _seed(url: str) -> None:
    """Two clients' campaigns; some leads finished their sequence, some opted out, some not."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO campaigns (id, client_id, name, messages)
               SELECT md5('c' || i)::uuid, md5('client' || (i % 2))::uuid, 'campaign ' || i, '[1, 2, 3]'
                 FROM generate_series(1, 4) i;
               INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, is_active, opted_out, booked)
               SELECT md5('l' || i)::uuid, md5('client' || ((i % 4 + 1) % 2))::uuid, md5('c' || (i % 4 + 1))::uuid,
                      i % 4, true, i % 5 = 0, false
                 FROM generate_series(1, 40) i;"""
        )


def _pg_class(url: str) -> list[tuple]:
    """Every relation and schema of the database: what a refused command must leave as it was."""
    with psycopg.connect(url) as conn:
        rels = conn.execute(
            "SELECT relnamespace::regnamespace::text, relname, relkind::text FROM pg_class ORDER BY 1, 2"
        ).fetchall()
        nsps = conn.execute("SELECT 'schema', nspname, '' FROM pg_namespace ORDER BY 2").fetchall()
        procs = conn.execute("SELECT 'function', oid::regprocedure::text, '' FROM pg_proc ORDER BY 2").fetchall()
    return rels + nsps + procs


def _catalog(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return snapshot(conn)


def _psql(url: str, *args: str) -> subprocess.CompletedProcess:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    return subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def _one_line_error(res) -> str:
    assert res.code != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and "SPEC" not in res.stderr
    return lines[0]


# --------------------------------------------------------------------------- status


def test_status_on_a_never_migrated_database_says_so_and_creates_nothing(empty_db_url: str, cli) -> None:
    _platform(empty_db_url)
    before = _pg_class(empty_db_url)
    res = cli("status", db=empty_db_url)
    assert res.code == 0, res.stderr
    assert "0019_add_campaign_completion_tracking" in res.stdout and "pending" in res.stdout
    assert _pg_class(empty_db_url) == before
    st = inspection.status(Target(empty_db_url, "test"))
    assert st.never_migrated and all(state == "pending" for _, state in st.migrations)
    assert _pg_class(empty_db_url) == before


# --------------------------------------------------------------------------- prerequisites


def test_compatible_platform_types_and_nullable_columns_are_accepted_and_run(empty_db_url: str, cli) -> None:
    _platform(empty_db_url)
    _seed(empty_db_url)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:  # the nulls such columns allow
        conn.execute(
            """INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, is_active, opted_out, booked)
               VALUES (md5('n1')::uuid, md5('client1')::uuid, md5('c1')::uuid, NULL, true, NULL, NULL),
                      (md5('n2')::uuid, md5('client1')::uuid, md5('c1')::uuid, 3, NULL, false, false)"""
        )
    res = cli("migrate", db=empty_db_url)
    assert res.code == 0, res.stderr
    run = cli("run", db=empty_db_url)
    assert run.code == 0, run.stderr + run.stdout
    with psycopg.connect(empty_db_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM leads WHERE is_active AND (opted_out OR current_message_position >= 3)"
        ).fetchone()[0]
        done = conn.execute("SELECT count(*) FROM de_enrollment_lead_log").fetchone()[0]
    assert left == 0 and done > 0


def test_every_missing_or_incompatible_column_is_named_at_once_and_nothing_is_left(empty_db_url: str, cli) -> None:
    _platform(
        empty_db_url,
        """CREATE TABLE campaigns (id uuid PRIMARY KEY, client_id uuid, name varchar(255), created_at timestamp);
           CREATE TABLE leads (id uuid PRIMARY KEY, client_id uuid, campaign_link_id uuid,
                               current_message_position integer, is_active boolean, booked boolean,
                               created_at integer, updated_at timestamp)""",
    )
    before = _pg_class(empty_db_url)
    line = _one_line_error(cli("migrate", db=empty_db_url))
    for needle in ("campaigns.messages is missing", "leads.opted_out is missing", "leads.created_at is integer"):
        assert needle in line, line
    assert _pg_class(empty_db_url) == before


# --------------------------------------------------------------------------- the SOP's psql route


def test_migrations_applied_by_hand_with_psql_are_recognised_then_run_and_psql_rollbacks_work(
    empty_db_url: str, cli
) -> None:
    _platform(empty_db_url)
    _seed(empty_db_url)
    before = _catalog(empty_db_url)
    for stem in SOP_ROUTE:
        res = _psql(empty_db_url, "-1", "-f", f"migrations/{stem}.sql")
        assert res.returncode == 0, res.stderr

    result = commands.migrate(Target(empty_db_url, "test"))
    assert result.applied_by_hand == SOP_ROUTE
    assert result.applied == [files.BASELINE] + [s for s in AFTER_BASELINE if s not in SOP_ROUTE]
    assert all(state.startswith("applied") for _, state in inspection.status(Target(empty_db_url, "test")).migrations)
    run = cli("run", db=empty_db_url)
    assert run.code == 0, run.stderr
    assert cli("migrate", db=empty_db_url).stdout.startswith("nothing to do")

    # The SOP's rollback commands, newest first (in one transaction each, except the files that
    # must run outside one); then deenroll records it.
    for stem in reversed(AFTER_BASELINE):
        one = ["-1"] if files.is_transactional((REPO / "rollback" / f"{stem}.sql").read_text()) else []
        res = _psql(empty_db_url, *one, "-f", f"migrations/rollback/{stem[:4]}_rollback.sql")
        assert res.returncode == 0, res.stderr
    assert diff(before, _catalog(empty_db_url)) == []
    refused = _one_line_error(cli("migrate", db=empty_db_url))
    assert "rolled back by hand" in refused and "deenroll rollback --to" in refused
    assert cli("rollback", "--to", files.BASELINE, db=empty_db_url).code == 0
    assert diff(before, _catalog(empty_db_url)) == []
    assert cli("migrate", db=empty_db_url).code == 0


def test_a_half_applied_migration_is_refused_naming_what_is_there_and_missing(empty_db_url: str, cli) -> None:
    _platform(empty_db_url)
    _psql(empty_db_url, "-c", "ALTER TABLE leads ADD COLUMN completed_at timestamptz")
    before = _pg_class(empty_db_url)
    line = _one_line_error(cli("migrate", db=empty_db_url))
    assert "0019_add_campaign_completion_tracking is partly in the database" in line
    assert "column leads.completed_at" in line.split("missing:")[0]
    assert "column leads.campaign_history" in line.split("missing:")[1]
    assert _pg_class(empty_db_url) == before


def test_rollback_files_drop_what_the_definition_headers_say() -> None:
    """The psql route's DROP lines are written from the headers; a new or moved function or view
    fails here until scripts/sync-rollback-drops.py has rewritten them."""
    for m in files.migration_files():
        text = m.rollback_path.read_text()
        assert files.rollback_with_drops(m.stem, text) == text, f"run scripts/sync-rollback-drops.py ({m.stem})"
    dropped = {line for m in files.migration_files() for line in files.rollback_drops(m.stem)}
    # trigger functions are restored or dropped by the rollback file itself, after their triggers
    assert dropped == {d.drop for d in sqlfiles.definitions() if not d.fires_on_trigger}
    health = files.rollback_drops("0024_isolate_dirty_platform_data")
    assert health.index("DROP VIEW IF EXISTS public.de_enrollment_health;") < health.index(
        "DROP VIEW IF EXISTS public.de_enrollment_stuck_leads;"
    ), "a view goes before the view it reads"


def test_sop_rollback_paths_point_at_every_rollback_and_migrate_ignores_them() -> None:
    links = sorted(paths.sql_dir("migrations").joinpath("rollback").glob("*_rollback.sql"))
    assert [p.name for p in links] == [f"{s[:4]}_rollback.sql" for s in AFTER_BASELINE]
    for link, stem in zip(links, AFTER_BASELINE):
        # A link in the checkout, a copy in the installed package: the same text either way.
        assert link.read_text() == (paths.sql_dir("rollback") / f"{stem}.sql").read_text()
    assert [m.stem for m in files.migration_files()] == STEMS and all("rollback" not in s for s in STEMS)


# --------------------------------------------------------------------------- a failed migrate names its cause


def test_a_lock_timeout_names_the_migration_the_statement_and_the_blocking_session(empty_db_url: str, cli) -> None:
    _platform(empty_db_url)
    assert cli("migrate", "--to", files.BASELINE, db=empty_db_url).code == 0
    with psycopg.connect(empty_db_url, application_name="platform-app") as blocker:
        blocker.execute("SELECT count(*) FROM leads")  # holds its lock until the transaction ends
        line = _one_line_error(cli("migrate", db=empty_db_url))
        pid = blocker.info.backend_pid
        blocker.rollback()
    assert "migration 0019_add_campaign_completion_tracking failed at migrations/0019_add_campaign_completion_tracking.sql line" in line
    assert "'ALTER TABLE leads'" in line and "lock timeout" in line
    assert f"pid {pid} (application_name 'platform-app'" in line and "'idle in transaction'" in line
    states = dict(inspection.status(Target(empty_db_url, "test")).migrations)
    assert states["0019_add_campaign_completion_tracking"] == "pending"


def test_a_failing_statement_is_named_by_its_file_line_and_first_line(empty_db_url: str, tmp_path) -> None:
    path = tmp_path / "migrations" / "9999_example.sql"
    path.parent.mkdir()
    path.write_text("-- example\nSELECT 1;\n\n-- the second statement\nSELECT\n    1,\n    no_such_column\n  FROM pg_class;\n")
    with psycopg.connect(empty_db_url) as conn, pytest.raises(execute.MigrationError) as failed:
        execute.run_file(conn, path, "migration 9999_example")
    assert failed.value.message() == (
        "migration 9999_example failed at migrations/9999_example.sql line 7 ('SELECT'): "
        'column "no_such_column" does not exist'
    )


# --------------------------------------------------------------------------- definitions never destroy others' objects


def _forget(url: str, name: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(f"DELETE FROM {definitions.DEFINITIONS_TABLE} WHERE name = %s", (name,))


def test_a_users_view_and_grant_survive_the_re_creation_of_ours(db_url: str, cli) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE VIEW my_health AS SELECT client_id, status FROM de_enrollment_health")
        conn.execute("CREATE VIEW my_clients AS SELECT client_id FROM de_enrollment_clients()")
        conn.execute("CREATE ROLE adoption_reader_probe NOLOGIN")
        try:
            conn.execute("GRANT SELECT ON de_enrollment_health TO adoption_reader_probe")
            _forget(db_url, "de_enrollment_health")
            _forget(db_url, "de_enrollment_clients")
            res = cli("migrate", db=db_url)
            assert res.code == 0, res.stderr
            assert "installed de_enrollment_health" in res.stdout and "installed de_enrollment_clients" in res.stdout
            assert conn.execute("SELECT count(*) FROM my_health").fetchone()[0] >= 0
            assert conn.execute("SELECT count(*) FROM my_clients").fetchone()[0] >= 0
            assert conn.execute(
                "SELECT has_table_privilege('adoption_reader_probe', 'de_enrollment_health', 'SELECT')"
            ).fetchone()[0]
        finally:
            conn.execute("REVOKE ALL ON de_enrollment_health FROM adoption_reader_probe")
            conn.execute("DROP ROLE adoption_reader_probe")


def test_an_incompatible_change_is_refused_naming_the_users_view(db_url: str, cli) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        # The database's view gets a column the file does not have: replacing it in place is impossible.
        conn.execute(
            """DO $$ BEGIN EXECUTE 'CREATE OR REPLACE VIEW de_enrollment_health AS SELECT h.*, 1 AS hand_added FROM ('
                   || rtrim(pg_get_viewdef('de_enrollment_health'::regclass), ';') || ') AS h'; END $$"""
        )
        conn.execute("CREATE VIEW my_health AS SELECT client_id, hand_added FROM de_enrollment_health")
        line = _one_line_error(cli("migrate", db=db_url))
        assert "my_health" in line.split("depend on it:")[1] and "de_enrollment_health" in line
        assert conn.execute("SELECT count(*) FROM my_health").fetchone()[0] >= 0
        conn.execute("DROP VIEW my_health")
    assert cli("migrate", db=db_url).code == 0
    assert all(state == "up to date" for _, _, state in inspection.status(Target(db_url, "test")).definitions)


@contextmanager
def _migrate_beside_a_reader(db_url: str) -> Iterator[tuple[Callable[[], bool], list[object]]]:
    """A dashboard in a transaction that has read de_enrollment_health (whose file must be applied
    again) while `migrate` runs in a thread; yields a probe "is migrate waiting for the reader?" and
    the list that receives migrate's result. The reader commits when the block ends."""
    _forget(db_url, "de_enrollment_health")
    with psycopg.connect(db_url, application_name="dashboard") as reader:
        reader.execute("SELECT count(*) FROM de_enrollment_health")
        done: list[object] = []
        worker = threading.Thread(target=lambda: done.append(_migrate_or_error(db_url)))
        worker.start()
        with psycopg.connect(db_url, autocommit=True) as watch:

            def blocked() -> bool:
                return bool(watch.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE %s = ANY (pg_blocking_pids(pid))", (reader.info.backend_pid,)
                ).fetchone())

            yield blocked, done
            assert reader.execute("SELECT count(*) FROM de_enrollment_health").fetchone()[0] >= 0
        reader.commit()
        worker.join(timeout=60)
    assert len(done) == 1 and not isinstance(done[0], Exception), done
    assert done[0].definitions == ["de_enrollment_health"]


def _wait_for(blocked: Callable[[], bool], wanted: bool) -> None:
    deadline = time.monotonic() + 30
    while blocked() != wanted:
        assert time.monotonic() < deadline, f"never saw blocked={wanted}"
        time.sleep(0.01)


def test_a_reader_of_our_view_is_waited_for_not_broken(db_url: str) -> None:
    with _migrate_beside_a_reader(db_url) as (blocked, _done):
        _wait_for(blocked, True)


def test_definitions_are_retried_after_a_lock_timeout_and_then_applied(db_url: str) -> None:
    with _migrate_beside_a_reader(db_url) as (blocked, _done):
        for wanted in (True, False, True):  # waits, gives up at lock_timeout, waits again
            _wait_for(blocked, wanted)


def _migrate_or_error(url: str) -> object:
    try:
        return commands.migrate(Target(url, "test"))
    except Exception as exc:  # noqa: BLE001 - the test reports it
        return exc


# --------------------------------------------------------------------------- uninstall


def test_uninstall_leaves_the_platform_schema_as_it_was(empty_db_url: str, cli) -> None:
    _platform(empty_db_url)
    _seed(empty_db_url)
    before, before_rows = _catalog(empty_db_url), _pg_class(empty_db_url)
    assert cli("migrate", db=empty_db_url).code == 0
    assert cli("run", db=empty_db_url).code == 0
    result = commands.uninstall(Target(empty_db_url, "test"))
    assert result.rolled_back == list(reversed(AFTER_BASELINE))
    assert sorted(result.dropped_tables) == sorted(commands.BOOKKEEPING_TABLES)
    assert diff(before, _catalog(empty_db_url)) == []
    assert _pg_class(empty_db_url) == before_rows
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 40
        ours = conn.execute(
            "SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') LIKE 'deenroll:%'"
        ).fetchall()
    # A role of ours still exists only when something outside this database still uses it.
    for (name,) in ours:
        assert any(k.startswith(f"{name}: ") for k in result.kept_roles), (name, result)
    assert set(result.dropped_roles).isdisjoint(name for (name,) in ours)
    # Uninstalling again finds nothing to do and changes nothing.
    again = commands.uninstall(Target(empty_db_url, "test"))
    assert again.rolled_back == [] and again.dropped_tables == []
    assert _pg_class(empty_db_url) == before_rows


def test_each_rollback_file_drops_the_functions_and_views_that_need_its_migration() -> None:
    """The SOP's psql rollbacks run the files alone: each must drop what `-- requires:` its migration."""
    missing = [
        f"rollback/{d.requires}.sql does not drop {d.kind} {d.name}"
        for d in sqlfiles.definitions()
        if not d.fires_on_trigger and not re.search(
            rf"DROP\s+{d.routine}\s+IF\s+EXISTS\s+(\w+\.)?{d.name}\b",
            (paths.sql_dir("rollback") / f"{d.requires}.sql").read_text(),
            re.I,
        )
    ]
    assert missing == []
