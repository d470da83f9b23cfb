"""migrate, rollback, uninstall and breaking yoyo's lock.

Rolling a migration back first drops the functions and views whose header requires it;
`uninstall` rolls back to the baseline and drops the bookkeeping tables and the roles a
migration created. Nothing of someone else's is ever dropped: where one of their objects
depends on ours, the command stops and names it. A migration that gives up waiting for a lock
(lock_timeout) is retried a few times with backoff: a transactional one left nothing behind, a
non-transactional one re-runs safely."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import psycopg
from yoyo import exceptions as yoyo_exceptions

from .. import queries, schedule
from ..database import Target, connect
from ..errors import UserError, one_line
from ..sqlfiles import SCHEMA, definitions
from .adoption import check_prerequisites, recognise
from .definitions import DEFINITIONS_TABLE, apply_definitions, forget_missing_definitions
from .execute import LockWatch, retry_lock_waits, run_written
from .files import BASELINE, resolve_target
from .yoyo_bridge import MIGRATION_TABLE, backend, locked, our_migrations, recorded_migrations

# yoyo's own tables (its defaults) and ours: what `uninstall` drops besides the migrations.
BOOKKEEPING_TABLES = (MIGRATION_TABLE, "_yoyo_log", "_yoyo_version", "yoyo_lock", DEFINITIONS_TABLE)
# The mark a role created by a migration carries (COMMENT ON ROLE ... IS 'deenroll: ...').
ROLE_MARK = "deenroll:"


@dataclass
class MigrateResult:
    applied: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)
    applied_by_hand: list[str] = field(default_factory=list)  # recognised and recorded as applied
    notes: list[str] = field(default_factory=list)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Database errors of migration steps become one-line UserErrors."""
    try:
        yield
    except (psycopg.Error, yoyo_exceptions.BadMigration) as exc:
        cause: BaseException = exc  # yoyo wraps the database's error: say the database's words
        while cause.__cause__ is not None and not isinstance(cause, psycopg.Error):
            cause = cause.__cause__
        said = cause if isinstance(cause, psycopg.Error) and cause.diag.message_primary else exc
        raise UserError(one_line(said, details=True)) from None


def migrate(target: Target, to: str | None = None, lock_timeout: float = 60.0) -> MigrateResult:
    """Apply pending migrations (up to `to`), then every changed function and view.

    Before anything is created: the prerequisites are checked and migrations applied by
    hand are recognised; either may refuse, leaving the database as it was."""
    stop_at = resolve_target(to) if to else None
    result = MigrateResult()
    check_prerequisites(target)
    look = stop_at is None or stop_at > BASELINE
    with connect(target, autocommit=True) as conn:
        first_time = recorded_migrations(conn) is None
    # On a database deenroll never migrated, a refusal must leave nothing behind: look before
    # yoyo creates its tables. Otherwise look under the migration lock, where no other
    # migrate changes the database between the look and the record.
    by_hand = recognise(target, set(), result.notes) if look and first_time else []
    with backend(target) as yoyo, LockWatch(target) as watch, _one_line_errors():
        migrations = our_migrations(watch)
        with locked(yoyo, lock_timeout):
            if look and not first_time:
                by_hand = recognise(target, set(recorded_migrations(yoyo.connection) or ()), result.notes, watch)
            for m in yoyo.to_apply(migrations).filter(lambda m: m.id in by_hand):
                yoyo.mark_one(m)
                result.applied_by_hand.append(m.id)
            for m in yoyo.to_apply(migrations).filter(lambda m: stop_at is None or m.id <= stop_at):
                retry_lock_waits(lambda: yoyo.apply_one(m), 5)
                result.applied.append(m.id)
            applied = set(recorded_migrations(yoyo.connection) or ())
        with locked(yoyo, lock_timeout):
            result.definitions = apply_definitions(target, applied)
    return result


@contextmanager
def _jobs_follow(target: Target, doing: str, calls_dropped: Callable[[dict], bool] | None,
                 removed: list[dict] | None) -> Iterator[None]:
    """Our pg_cron jobs for this database that `doing` leaves calling what it drops (all of them
    when calls_dropped is None) are removed after it, appended to `removed`. Where the login may
    not remove one, it refuses before anything changes, naming each with its statement."""
    with schedule.jobs_of_database(target) as (where, found):
        hit = [j for j in found if calls_dropped is None or calls_dropped(j)]
        blocked = [j for j in hit if not j["may_remove"]]
        if blocked:
            raise UserError(
                f"{doing} would leave pg_cron jobs calling what it drops, and login {where.login} may not remove "
                "them: " + "; ".join(schedule.unschedule_statement(j) for j in blocked) + f"; then {doing} again"
            )
        yield
        if hit and where is not None:
            done = schedule.unschedule(where, hit)
            if removed is not None:
                removed.extend(done["removed"])


def rollback(target: Target, to: str, lock_timeout: float = 60.0, removed_jobs: list[dict] | None = None) -> list[str]:
    """Roll back every migration after `to`, newest first. Our pg_cron jobs whose command calls a
    function it drops are removed afterwards (listed in removed_jobs when given); where the login
    may not remove one, nothing is rolled back."""
    stop_at = resolve_target(to)
    with connect(target, autocommit=True) as conn:
        applied = set(recorded_migrations(conn) or ())
    # schema.name of every function it drops (those requiring a later migration)
    dropped = {f"{d.schema}.{d.name}" for d in definitions() if d.requires in applied and d.requires > stop_at}
    with _jobs_follow(target, f"rollback --to {stop_at}", lambda j: bool(set(j["calls"]) & dropped), removed_jobs):
        return _rollback(target, stop_at, lock_timeout)


def _rollback(target: Target, stop_at: str, lock_timeout: float) -> list[str]:
    rolled: list[str] = []
    with backend(target) as yoyo, LockWatch(target) as watch, _one_line_errors():
        migrations = our_migrations(watch)
        with locked(yoyo, lock_timeout):
            for m in yoyo.to_rollback(migrations).filter(lambda m: m.id > stop_at):
                retry_lock_waits(lambda: yoyo.rollback_one(m), 5)
                rolled.append(m.id)
    with connect(target) as conn:
        forget_missing_definitions(conn)
    return rolled


def break_lock(target: Target) -> None:
    with backend(target) as yoyo:
        yoyo.break_lock()


@dataclass
class UninstallResult:
    rolled_back: list[str] = field(default_factory=list)
    dropped_tables: list[str] = field(default_factory=list)
    dropped_roles: list[str] = field(default_factory=list)
    kept_roles: list[str] = field(default_factory=list)  # "name: why"
    removed_jobs: list[dict] = field(default_factory=list)  # our pg_cron jobs for this database


def uninstall(target: Target, lock_timeout: float = 60.0) -> UninstallResult:
    """Everything deenroll added, gone: every migration after the baseline rolled back, the
    bookkeeping tables dropped, and the roles a migration created (marked by their comment)
    dropped when no login is a member and no database still grants them anything; then our
    pg_cron jobs for this database removed (where the login may not remove one, nothing
    changes and the error names it).
    The platform's campaigns and leads stay, with every row."""
    result = UninstallResult()
    with _jobs_follow(target, "uninstall", None, result.removed_jobs):
        with connect(target, autocommit=True) as conn:
            never = recorded_migrations(conn) is None
            roles_before = [r[0] for r in queries.run(conn, "migrate_marked_roles", mark=ROLE_MARK).fetchall()]
        if not never:
            result.rolled_back = _rollback(target, BASELINE, lock_timeout)
        with connect(target) as conn:
            queries.run(conn, "migrate_uninstall_lock_wait")
            for table in BOOKKEEPING_TABLES:
                if run_written(conn, "migrate_drop_table", schema=SCHEMA, table=table) is not None:
                    result.dropped_tables.append(table)
            for name, has_members in queries.run(conn, "migrate_marked_roles_with_members", mark=ROLE_MARK).fetchall():
                if has_members:
                    result.kept_roles.append(f"{name}: other roles are members of it")
                    continue
                try:
                    with conn.transaction():
                        run_written(conn, "migrate_drop_role", role=name)
                except psycopg.errors.DependentObjectsStillExist:
                    result.kept_roles.append(f"{name}: another database still grants it privileges")
                except psycopg.errors.InsufficientPrivilege:
                    result.kept_roles.append(f"{name}: this login may not drop roles")
            conn.commit()
            left = {r[0] for r in queries.run(conn, "migrate_marked_roles", mark=ROLE_MARK).fetchall()}
        result.dropped_roles = [r for r in roles_before if r not in left]
    return result
