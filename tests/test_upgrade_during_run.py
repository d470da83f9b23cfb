"""An upgrade while a run of the previous release works, with real processes: the previous
release's code (from this checkout's git history) migrates a database and runs; while one of
its batches is held open mid-statement and the platform keeps writing, this release's
`deenroll migrate` completes without waiting for that batch, without a deadlock and without
failing a platform write. Once the batch goes on, the run finishes: every due lead
de-enrolled exactly once, counters right, no run left 'running'."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bench import release
from bench.common import Child
from conftest import run_cli
from deenroll.errors import one_line
from deenroll.migrate.files import migration_files
from engine_data import assert_exactly_once, de_enrolled, recount, stored
from processes import due_now, make_clients, wait_until

pytestmark = pytest.mark.schema

HOLD_KEY = 1717  # the advisory lock the test holds to keep the run's batch open
WRITER_APP = "platform writer"
LATEST = migration_files()[-1].stem


@pytest.fixture(scope="module")
def previous_release() -> Iterator[Path]:
    """The previous release's code in a temporary directory (skipped without git history)."""
    with tempfile.TemporaryDirectory(prefix="deenroll-previous-") as tmp:
        try:
            release.previous_release_code(Path(tmp))  # the benchmark knows which release came before
        except RuntimeError as exc:
            pytest.skip(f"the previous release's code is not available: {exc}")
        yield Path(tmp)


def old_deenroll(code: Path, url: str, *args: str) -> Child:
    """The previous release's `deenroll --database-url URL ARGS`, started in a child process."""
    return Child.start(url, *args, code=code)


class Writer(threading.Thread):
    """The platform: flips one lead's is_active at a time, in its own transaction, on leads no run
    touches (never due); each write goes through the counters' trigger into campaign_stats_delta."""

    def __init__(self, url: str, leads: list[str]) -> None:
        super().__init__(name=WRITER_APP, daemon=True)
        self.url, self.leads = url, leads
        self.writes = 0
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name=WRITER_APP) as conn:
            conn.execute("SET statement_timeout = '60s'")  # a write stuck behind a lock fails, it never hangs the test
            while not self.stop.is_set():
                lead = self.leads[self.writes % len(self.leads)]
                try:
                    conn.execute("UPDATE leads SET is_active = NOT is_active WHERE id = %s", (lead,))
                except psycopg.DatabaseError as exc:
                    self.failures.append(one_line(exc))
                self.writes += 1
                self.stop.wait(0.005)


def test_migrate_during_a_run_of_the_previous_release_never_waits_for_its_batch(
    previous_release: Path, empty_db_url: str
) -> None:
    migrated = old_deenroll(previous_release, empty_db_url, "migrate").finish(timeout=300)
    assert migrated.code == 0, migrated.last_line

    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        make_clients(conn, clients=3, campaigns=2, leads=30)
        # leads no run touches (first message, not opted out), for the platform's writes
        quiet = [str(r[0]) for r in conn.execute(
            "SELECT id FROM leads WHERE current_message_position = 0 AND NOT opted_out ORDER BY id LIMIT 40")]
        conn.execute(
            f"""CREATE FUNCTION public.zz_hold() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF current_setting('application_name') <> '{WRITER_APP}' THEN
                        PERFORM pg_advisory_xact_lock_shared({HOLD_KEY});
                    END IF;
                    RETURN NULL;
                END $$;
                CREATE TRIGGER zz_hold AFTER UPDATE ON public.leads FOR EACH STATEMENT EXECUTE FUNCTION public.zz_hold()"""
        )
        expected = due_now(conn)
        assert len(expected) > 50

        conn.execute("SELECT pg_advisory_lock(%s)", (HOLD_KEY,))
        run = old_deenroll(previous_release, empty_db_url, "run", "--json", "--batch-size", "4")
        # its batch has updated leads (and written counter deltas) and now waits at the end of its statement
        wait_until(lambda: conn.execute(
            """SELECT count(*) FROM pg_locks
                WHERE locktype = 'advisory' AND objid = %s AND NOT granted""", (HOLD_KEY,)).fetchone()[0] >= 1,
            timeout=120)
        writer = Writer(empty_db_url, quiet)
        writer.start()
        wait_until(lambda: writer.writes >= 20 or bool(writer.failures), timeout=60)

        before = writer.writes
        res = run_cli("migrate", "--json", db=empty_db_url, timeout=300)
        assert res.code == 0, res.stderr
        assert "deadlock" not in res.stdout + res.stderr
        # the batch is still open: migrate needed nothing it holds
        assert conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted",
            (HOLD_KEY,)).fetchone()[0] >= 1
        assert run.proc.poll() is None
        wait_until(lambda: writer.writes >= before + 20 or bool(writer.failures), timeout=60)
        assert writer.failures == []
        assert json.loads(res.stdout)["applied"][-1] == LATEST

        conn.execute("SELECT pg_advisory_unlock(%s)", (HOLD_KEY,))
        ran = run.finish(timeout=300)
        writer.stop.set()
        writer.join(timeout=60)
        assert ran.code == 0, ran.stdout
        assert writer.failures == []

        assert de_enrolled(conn) == expected
        assert due_now(conn) == {}
        assert_exactly_once(conn)
        assert conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status = 'running'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0
        conn.execute("SELECT apply_campaign_stats_deltas()")  # the writer's last deltas
        assert stored(conn) == recount(conn)
