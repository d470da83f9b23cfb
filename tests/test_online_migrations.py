"""Migrations on a live leads table: concurrent index builds outside a transaction (an INVALID
index left by a failed build is dropped and built again), counters counted in short batches that
never lock leads, and a migration that gives up waiting for a lock retried until it gets it.
Every wait below is on a condition seen in pg_stat_activity / pg_locks, with a deadline."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import psycopg
import pytest

from deenroll.database import Target
from deenroll.migrate import commands, files
from engine_data import recount, stored

pytestmark = pytest.mark.schema

REPO = Path(__file__).resolve().parent.parent
STEMS = [m.stem for m in files.migration_files()]
ONLINE = next(m.stem for m in files.migration_files() if m.stem.startswith("0026_"))
BEFORE_ONLINE = STEMS[STEMS.index(ONLINE) - 1]
INDEXES = [
    "de_enrollment_leads_candidates_idx",
    "de_enrollment_leads_opted_out_idx",
    "de_enrollment_leads_client_candidates_idx",
    "de_enrollment_leads_client_opted_out_idx",
]
# Table locks weaker than SHARE (the lock a plain CREATE INDEX takes): none of them blocks
# INSERT, UPDATE or DELETE.
WRITE_FRIENDLY = {"AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock"}


def _seed(url: str, campaigns: int = 150, leads_per_campaign: int = 4) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            """INSERT INTO campaigns (id, client_id, name, messages)
               SELECT md5('c' || i)::uuid, md5('client' || (i %% 3))::uuid, 'campaign ' || i, '[1, 2, 3]'
                 FROM generate_series(1, %(n)s) AS i""",
            {"n": campaigns},
        )
        conn.execute(
            """INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, is_active, opted_out, booked)
               SELECT md5('l' || i)::uuid, md5('client' || ((i %% %(n)s + 1) %% 3))::uuid,
                      md5('c' || (i %% %(n)s + 1))::uuid, i %% 4, i %% 5 <> 0, i %% 7 = 0, i %% 11 = 0
                 FROM generate_series(1, %(n)s * %(per)s) AS i""",
            {"n": campaigns, "per": leads_per_campaign},
        )


def _wait_for(what: str, probe: Callable[[], object], deadline_s: float = 60.0) -> object:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        found = probe()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Migrating(threading.Thread):
    """commands.migrate in a thread; its outcome kept for the test."""

    def __init__(self, url: str, to: str | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.to = url, to
        self.result: commands.MigrateResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = commands.migrate(Target(self.url, "test"), to=self.to)
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> commands.MigrateResult:
        self.join(timeout=120)
        assert not self.is_alive(), "migrate did not finish"
        assert self.error is None, repr(self.error)
        assert self.result is not None
        return self.result


def _migrate_waiting(watch: psycopg.Connection) -> list[tuple[int, str]]:
    """(pid, wait event) of the migrating sessions of this database that wait for a lock.

    Of this database only: on a server shared by several test workers, another test's migrate
    waits too."""
    return watch.execute(
        """SELECT pid, wait_event FROM pg_stat_activity
            WHERE application_name = 'deenroll migrate' AND wait_event_type = 'Lock'
              AND datname = current_database()"""
    ).fetchall()


def _locks_on_leads(watch: psycopg.Connection, pid: int) -> set[str]:
    return {r[0] for r in watch.execute(
        "SELECT mode FROM pg_locks WHERE pid = %s AND relation = 'leads'::regclass AND granted", (pid,)
    ).fetchall()}


def _index_states(conn: psycopg.Connection) -> dict[str, tuple[int, bool]]:
    rows = conn.execute(
        """SELECT c.relname, c.oid::bigint, i.indisvalid
             FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
            WHERE c.relname = ANY (%s)""",
        (INDEXES,),
    ).fetchall()
    return {name: (oid, valid) for name, oid, valid in rows}


def _platform_update(url: str) -> int:
    """One platform write of a lead, which must not wait on the migration (lock_timeout: fails if it does)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")
        return conn.execute(
            "UPDATE leads SET current_message_position = current_message_position + 1 WHERE id = md5('l1')::uuid"
        ).rowcount


def _invalid_index(url: str, name: str) -> None:
    """An INVALID index left by a concurrent build that was cancelled: the build waits for an
    older snapshot (held open here) after creating its catalog entry, and is cancelled there."""
    build = f"""CREATE INDEX CONCURRENTLY {name} ON leads (campaign_link_id, current_message_position)
                WHERE is_active AND completed_at IS NULL"""
    errors: list[BaseException] = []
    with psycopg.connect(url) as snapshot, psycopg.connect(url, autocommit=True) as watch, \
            psycopg.connect(url, autocommit=True, application_name="deenroll test build") as builder:
        snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        snapshot.execute("SELECT count(*) FROM campaigns")
        pid = builder.info.backend_pid

        def run() -> None:
            try:
                builder.execute(build)
            except psycopg.Error as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        _wait_for("the concurrent build to wait for the older snapshot", lambda: watch.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,)).fetchone())
        watch.execute("SELECT pg_cancel_backend(%s)", (pid,))
        thread.join(timeout=60)
        snapshot.rollback()
    assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled), errors


# --------------------------------------------------------------------------- an INVALID index


def test_an_invalid_index_left_by_a_cancelled_build_is_dropped_and_built_again(empty_db_url: str) -> None:
    target = Target(empty_db_url, "test")
    commands.migrate(target, to=BEFORE_ONLINE)
    _seed(empty_db_url)
    _invalid_index(empty_db_url, INDEXES[0])
    with psycopg.connect(empty_db_url) as conn:
        (left_oid, valid), = [_index_states(conn)[INDEXES[0]]]
    assert valid is False

    assert ONLINE in commands.migrate(target).applied
    with psycopg.connect(empty_db_url) as conn:
        states = _index_states(conn)
        assert sorted(states) == sorted(INDEXES)
        assert all(valid for _, valid in states.values()), states
        assert states[INDEXES[0]][0] != left_oid  # the invalid one was dropped, a new one built
        # and it is the index 0026 defines, not the one the cancelled build began
        assert "completed_at IS NULL" in conn.execute(
            "SELECT pg_get_indexdef(%s::regclass)", (INDEXES[0],)).fetchone()[0]


def test_by_hand_the_file_refuses_a_transaction_block_and_stops_on_an_invalid_index_naming_it(empty_db_url: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    commands.migrate(Target(empty_db_url, "test"), to=BEFORE_ONLINE)
    _seed(empty_db_url, campaigns=5)
    _invalid_index(empty_db_url, INDEXES[2])
    path = next(m.apply_path for m in files.migration_files() if m.stem == ONLINE)
    res = subprocess.run([psql, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", empty_db_url, "-f", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "must run outside a transaction block" in res.stderr and "without -1" in res.stderr
    res = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_db_url, "-f", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and INDEXES[2] in res.stderr and "DROP INDEX CONCURRENTLY" in res.stderr, res.stderr
    with psycopg.connect(empty_db_url) as conn:
        assert INDEXES[0] not in _index_states(conn)  # it stopped before building anything
        conn.execute(f"DROP INDEX {INDEXES[2]}")
    res = subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", empty_db_url, "-f", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    with psycopg.connect(empty_db_url) as conn:
        assert sorted(_index_states(conn)) == sorted(INDEXES)
        assert stored(conn) == recount(conn)


# --------------------------------------------------------------------------- nothing blocks writes


def test_index_builds_hold_only_a_lock_that_lets_the_platform_write(empty_db_url: str) -> None:
    """While a concurrent build waits for an older transaction, the migration holds no lock on
    leads that blocks writes, and a platform UPDATE of a lead goes through."""
    commands.migrate(Target(empty_db_url, "test"), to=BEFORE_ONLINE)
    _seed(empty_db_url)
    with psycopg.connect(empty_db_url) as snapshot, psycopg.connect(empty_db_url, autocommit=True) as watch:
        snapshot.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        snapshot.execute("SELECT count(*) FROM campaigns")
        migrating = Migrating(empty_db_url, to=ONLINE)
        migrating.start()
        # Only the wait for the open snapshot counts: a build may first wait a moment on a lock of
        # leads that autovacuum holds (a 'relation' wait) before it reaches that point.
        pid, event = _wait_for(
            "an index build waiting for the open snapshot",
            lambda: [w for w in _migrate_waiting(watch) if w[1] == "virtualxid"],
        )[0]
        assert event == "virtualxid"
        held = _locks_on_leads(watch, pid)
        assert held and held <= WRITE_FRIENDLY, held
        assert "ShareUpdateExclusiveLock" in held
        assert _platform_update(empty_db_url) == 1
        snapshot.rollback()
    assert migrating.finish().applied == [ONLINE]


def test_counting_goes_in_committed_batches_without_locking_leads(empty_db_url: str) -> None:
    """A campaign of the second batch is held by someone else: the migration waits for that one
    row only, with the first batch's counters already committed, no lock on leads, and the
    platform's writes going through. Released, every counter ends exact."""
    commands.migrate(Target(empty_db_url, "test"), to=BEFORE_ONLINE)
    _seed(empty_db_url, campaigns=150)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        ids = [str(r[0]) for r in conn.execute("SELECT id FROM campaigns ORDER BY id").fetchall()]
    first_batch, held = ids[:100], ids[120]
    with psycopg.connect(empty_db_url) as holder, psycopg.connect(empty_db_url, autocommit=True) as watch:
        holder.execute("SELECT 1 FROM campaigns WHERE id = %s FOR UPDATE", (held,))
        migrating = Migrating(empty_db_url, to=ONLINE)
        migrating.start()
        pid, event = _wait_for("the count to wait for the held campaign", lambda: [
            w for w in _migrate_waiting(watch) if w[1] in ("transactionid", "tuple")])[0]
        assert _locks_on_leads(watch, pid) <= WRITE_FRIENDLY
        assert _platform_update(empty_db_url) == 1
        with psycopg.connect(empty_db_url) as reader:
            counted = {k: v for k, v in stored(reader).items() if v != (0, 0, 0, 0)}
            exact = recount(reader)
            pending = {r[0] for r in reader.execute("SELECT DISTINCT campaign_id FROM campaign_stats_delta").fetchall()}
        assert counted, "the first batch is committed while the second waits"
        assert set(counted) <= set(first_batch)
        for campaign, counters in counted.items():  # exact, up to deltas of writes made since
            assert counters == exact[campaign] or campaign in pending
        holder.rollback()
    assert migrating.finish().applied == [ONLINE]
    with psycopg.connect(empty_db_url) as conn:
        conn.execute("SELECT apply_campaign_stats_deltas()")
        assert stored(conn) == recount(conn)


# --------------------------------------------------------------------------- lock_timeout and retries


def test_a_migration_that_gives_up_on_a_lock_is_retried_and_applied_once_the_lock_is_free(empty_db_url: str) -> None:
    """0020 needs a strong lock on campaigns; a reader holds it past lock_timeout: the migration
    gives up (nothing of it stays), is tried again on a new session, and is applied once the
    reader is done."""
    target = Target(empty_db_url, "test")
    stem = next(s for s in STEMS if s.startswith("0020_"))
    commands.migrate(target, to=STEMS[STEMS.index(stem) - 1])
    _seed(empty_db_url, campaigns=5)
    with psycopg.connect(empty_db_url) as reader, psycopg.connect(empty_db_url, autocommit=True) as watch:
        reader.execute("SELECT count(*) FROM campaigns")
        migrating = Migrating(empty_db_url, to=stem)
        migrating.start()
        seen: set[int] = set()

        def two_attempts() -> bool:
            seen.update(pid for pid, _ in _migrate_waiting(watch))
            return len(seen) >= 2

        _wait_for("a second attempt after lock_timeout", two_attempts)
        # Between attempts nothing of 0020 is there.
        assert watch.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'campaigns'::regclass AND attname = 'active_leads_count'"
        ).fetchone()[0] == 0
        reader.rollback()
    assert migrating.finish().applied == [stem]
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regclass('campaign_stats_delta')").fetchone()[0] is not None


# --------------------------------------------------------------------------- levels


def test_existing_indexes_are_left_alone_and_counters_recounted(db_url: str) -> None:
    """An install whose indexes an earlier 0019/0024 built: 0026 finds nothing to build (same
    index oids) and rewrites the counters exactly."""
    target = Target(db_url, "test")
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = _index_states(conn)
        conn.execute("UPDATE campaigns SET active_leads_count = active_leads_count + 5")
    commands.rollback(target, BEFORE_ONLINE)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert _index_states(conn) == {}
        for name, (_, _) in before.items():  # as an earlier 0019 and 0024 left them
            conn.execute(
                f"CREATE INDEX {name} ON leads "
                + {"de_enrollment_leads_candidates_idx": "(campaign_link_id, current_message_position) WHERE is_active AND completed_at IS NULL",
                   "de_enrollment_leads_opted_out_idx": "(campaign_link_id) WHERE is_active AND opted_out",
                   "de_enrollment_leads_client_candidates_idx": "(client_id, campaign_link_id, current_message_position) WHERE is_active AND completed_at IS NULL",
                   "de_enrollment_leads_client_opted_out_idx": "(client_id) WHERE is_active AND opted_out"}[name]
            )
        old = _index_states(conn)
    assert commands.migrate(target).applied[0] == ONLINE
    with psycopg.connect(db_url) as conn:
        assert _index_states(conn) == old
        assert stored(conn) == recount(conn)


def test_a_migration_and_its_rollback_agree_on_running_outside_a_transaction(
    empty_db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deenroll import paths

    assert not files.is_transactional("-- transactional: false\nSELECT 1;")
    assert files.is_transactional("-- 0019: ...\nSELECT 1;\n-- transactional: false\n")
    copy = tmp_path / "sql"
    for folder in ("migrations", "rollback", "functions", "views"):
        shutil.copytree(paths.sql_dir(folder), copy / folder, symlinks=True)
    rollback = copy / "rollback" / f"{ONLINE}.sql"
    rollback.write_text(rollback.read_text().replace("-- transactional: false\n", "", 1))
    monkeypatch.setattr(paths, "sql_root", lambda: copy)
    with pytest.raises(RuntimeError, match="must both begin with '-- transactional: false'"):
        commands.migrate(Target(empty_db_url, "test"))
