"""Adopting a database deenroll did not set up, or not alone.

- The baseline's prerequisite check runs in a transaction that is rolled back before anything
  is created, so a refused migrate leaves nothing behind.
- Migrations applied by hand (`psql -f migrations/0019_...sql`) are recognised: each migration
  is applied to empty copies of the platform's tables in a scratch schema, inside a transaction
  that is rolled back, and what it created there is looked for in our schema.
"""

from __future__ import annotations

import re
import uuid

import psycopg

from .. import queries
from ..database import Target, connect
from ..errors import UserError, flatten, one_line
from ..sqlfiles import SCHEMA
from .execute import LockWatch, MigrationError, run_file, run_written
from .files import BASELINE, is_transactional, migration_files, sop_rollback_path

Footprint = frozenset[tuple[str, str, str]]  # (kind, name, definition)


def check_prerequisites(target: Target) -> None:
    """Run the baseline in a transaction that is rolled back: refuse, creating nothing, if it fails."""
    baseline = next(m for m in migration_files() if m.stem == BASELINE)
    with connect(target) as conn:
        try:
            run_file(conn, baseline.apply_path, f"migration {BASELINE}")
        except MigrationError as exc:
            diag = exc.cause.diag
            if exc.cause.sqlstate in ("23505", "42P07", "40P01", "55P03"):
                # Another migrate is creating the baseline's tables right now (its uncommitted
                # catalog rows collide with this probe's): not a refusal. The migration itself
                # runs under yoyo's lock and decides.
                return
            if exc.cause.sqlstate == "42703" and diag.message_primary:
                hint = f"; {flatten(diag.message_hint)}" if diag.message_hint else ""
                raise UserError(f"cannot install here: {flatten(diag.message_primary)}{hint}") from None
            raise UserError(exc.message()) from None
        finally:
            conn.rollback()


def _schema_objects(conn: psycopg.Connection, schema: str) -> set[tuple[str, str, str]]:
    """What the schema holds, its own name taken out of the definitions."""
    queries.run(conn, "migrate_search_path_to", schema=schema)
    qualified = re.compile(r'(?<![\w"])("?' + re.escape(schema) + r'"?)\.')
    return {
        (kind, name, qualified.sub("", definition))
        for name, kind, definition in queries.run(conn, "migrate_footprint", schema=schema).fetchall()
    }


def _probeable(text: str, schemas: set[str]) -> bool:
    """A migration that names no schema can be tried in a scratch schema without touching the real one."""
    named = (re.search(r'(?<![\w."])"?' + re.escape(s) + r'"?\s*\.\s*[\w"]', text) for s in schemas)
    return not re.search(r"\bCREATE\s+SCHEMA\b", text, re.I) and not any(named)


def _footprints(target: Target, watch: LockWatch | None) -> tuple[dict[str, Footprint], set[tuple[str, str, str]]]:
    """What each migration after the baseline creates, learnt on empty tables in a scratch schema
    (rolled back), and what our schema holds. The probe stops at the first migration that names
    a schema (it could reach outside the scratch schema) or fails there."""
    files = migration_files()
    after = [m.stem for m in files].index(BASELINE) + 1
    probe = f"deenroll_probe_{uuid.uuid4().hex[:12]}"
    found: dict[str, Footprint] = {}
    with connect(target, app="deenroll migrate (probe)") as conn:
        try:
            queries.run(conn, "migrate_probe_lock_wait")
            schemas = {r[0] for r in queries.run(conn, "migrate_schemas").fetchall()} | {probe}
            real = _schema_objects(conn, SCHEMA)
            run_written(conn, "migrate_create_schema", schema=probe)
            queries.run(conn, "migrate_search_path_to", schema=probe)
            run_file(conn, files[after - 1].apply_path, "probe", watch=watch)
            before = _schema_objects(conn, probe)
            for m in files[after:]:
                text = m.apply_path.read_text()
                if not is_transactional(text):
                    continue  # cannot run in the probe's transaction; re-runnable, so migrate just runs it
                if not _probeable(text, schemas):
                    break
                try:
                    with conn.transaction():
                        queries.run(conn, "migrate_search_path_to", schema=probe)
                        run_file(conn, m.apply_path, "probe", text, watch)
                except MigrationError:
                    break
                now = _schema_objects(conn, probe)
                found[m.stem], before = frozenset(now - before), now
        finally:
            conn.rollback()
    return found, real


def _describe(items: set[tuple[str, str, str]], limit: int = 6) -> str:
    names = sorted(f"{kind} {name}" for kind, name, _ in items)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def recognise(target: Target, applied: set[str], notes: list[str], watch: LockWatch | None = None) -> list[str]:
    """The migrations not in `applied` that were applied by hand (all their objects are there).

    Reads only (the probe is rolled back). A pending migration with only some of its
    objects there is half applied: refused, naming what is there and what is missing.
    A migration recorded as applied none of whose objects is left was rolled back by
    hand: refused too, with the command that records that.
    """
    try:
        footprints, real = _footprints(target, watch)
    except (psycopg.Error, MigrationError) as exc:
        said = exc.message() if isinstance(exc, MigrationError) else one_line(exc)
        notes.append(f"could not look for migrations applied by hand: {said}")
        return []
    stems = [m.stem for m in migration_files()]
    found: list[str] = []
    for stem, fp in footprints.items():
        if not fp:
            continue
        present = fp & real
        if stem not in applied:
            if present == fp:
                found.append(stem)
            elif present:
                raise UserError(
                    f"{stem} is partly in the database (present: {_describe(present)}; missing: {_describe(fp - present)}): "
                    f"finish it by hand, or undo it with psql -1 -f {sop_rollback_path(stem)}, then run migrate again"
                )
        elif not present:
            previous = stems[stems.index(stem) - 1]
            raise UserError(
                f"{stem} is recorded as applied but none of its objects is in the database (rolled back by hand?): "
                f"run `deenroll rollback --to {previous}` to record that (the rollback scripts skip what is gone), "
                "then run migrate again"
            )
    return found
