"""The migration files handed to yoyo, which keeps its record, its lock and its transactions.

Each migration is one yoyo migration built in memory with one step: forward, its file run
statement by statement; back, the functions and views that need it dropped, then its rollback
file. Each depends on the one before. A file that begins with `-- transactional: false` (with
its rollback) runs outside any transaction, after an INVALID index a failed concurrent build
left under a name it creates is dropped."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import psycopg
from yoyo import exceptions as yoyo_exceptions
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri
from yoyo.migrations import Migration, MigrationList, StepCollector

from .. import queries
from ..database import Target, connect
from ..errors import UserError
from ..sqlfiles import definitions
from .definitions import drop_ours, objects_of
from .execute import LockWatch, drop_invalid_indexes, run_file
from .files import MigrationFile, is_transactional, migration_files

MIGRATION_TABLE = "_yoyo_migration"


def _step(m: MigrationFile, watch: LockWatch, back: bool) -> Callable[[psycopg.Connection], None]:
    """The step forward or `back`, as the module says; the functions and views dropped first go
    newest first, with ours built on them. Trigger functions are the rollback file's: it restores
    their earlier body or drops them once their triggers are gone."""
    path, label = (m.rollback_path, f"rollback of {m.stem}") if back else (m.apply_path, f"migration {m.stem}")

    def step(conn: psycopg.Connection) -> None:
        text = path.read_text()
        if back:  # outside yoyo's transaction (a non-transactional migration) the drops get their own
            with nullcontext() if m.transactional else conn.transaction():
                for d in reversed(definitions()):
                    if d.requires == m.stem and not d.fires_on_trigger:
                        for obj in objects_of(conn, d):
                            drop_ours(conn, d, obj, why=f"rolling back {m.stem} drops it")
        if not m.transactional:
            drop_invalid_indexes(conn, text)
        run_file(conn, path, label, text, watch)

    return step


class _BuiltMigration(Migration):
    """A yoyo migration whose step is built here rather than read from a file."""

    def __init__(self, m: MigrationFile, previous: Migration | None, watch: LockWatch) -> None:
        super().__init__(m.stem, str(m.apply_path), str(m.apply_path.parent))
        self._previous = previous
        self.use_transactions = m.transactional
        collector = StepCollector(migration=self)
        collector.add_step(_step(m, watch, back=False), _step(m, watch, back=True))
        self.steps = collector.create_steps(self.use_transactions)  # loaded: yoyo reads no file

    @property
    def depends(self) -> set[Migration]:
        return {self._previous} if self._previous is not None else set()


@contextmanager
def backend(target: Target) -> Iterator[PostgresqlPsycopgBackend]:
    """A yoyo backend on the target (yoyo's psycopg 3 backend, connecting with our resolved
    conninfo), its tables created if missing."""
    connect(target, autocommit=True).close()  # fail early, with our one-line message

    class Backend(PostgresqlPsycopgBackend):
        def connect(self, dburi):  # noqa: ARG002 - yoyo's signature
            return psycopg.connect(target.dsn, autocommit=True, application_name="deenroll migrate")

    opened = Backend(parse_uri("postgresql+psycopg://deenroll/deenroll"), MIGRATION_TABLE)
    opened.init_database()
    try:
        yield opened
    finally:
        opened.connection.close()


def our_migrations(watch: LockWatch) -> MigrationList:
    """Our migrations for yoyo, each depending on the one before, each with its rollback (both
    run in a transaction or neither); their steps report their session to `watch`."""
    built: list[Migration] = []
    for m in migration_files():
        if not m.rollback_path.exists():
            raise RuntimeError(f"{m.apply_path.name} has no rollback/{m.apply_path.name}")
        if is_transactional(m.rollback_path.read_text()) != m.transactional:
            raise RuntimeError(
                f"{m.apply_path.name} and rollback/{m.apply_path.name} must both begin with "
                "'-- transactional: false', or neither"
            )
        built.append(_BuiltMigration(m, built[-1] if built else None, watch))
    return MigrationList(built)


@contextmanager
def locked(backend: PostgresqlPsycopgBackend, timeout: float) -> Iterator[None]:
    """yoyo's migration lock, waited for up to `timeout` seconds."""
    try:
        with backend.lock(timeout=timeout):
            yield
    except yoyo_exceptions.LockTimeout as exc:
        raise UserError(
            f"another migrate or rollback holds the migration lock ({exc}); "
            "if no such process is running, run `deenroll migrate --break-lock`"
        ) from None


def recorded_migrations(conn: psycopg.Connection) -> dict[str, object] | None:
    """yoyo's record (migration id -> applied at, UTC); None when yoyo never ran here. Reads only."""
    if not queries.value(conn, "migrate_yoyo_record_exists"):
        return None
    return {mid: at for mid, at in queries.run(conn, "migrate_yoyo_record").fetchall()}
