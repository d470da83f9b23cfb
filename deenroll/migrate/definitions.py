"""The function and view files applied to the database: created or replaced in place when their
text changed or the database's copy was edited by hand, dropped and created again only when they
must be, and never dropping anything someone else built on ours."""

from __future__ import annotations

import re

import psycopg

from .. import queries
from ..database import Target, connect
from ..errors import UserError
from ..sqlfiles import SCHEMA, Definition, definitions
from .execute import LockWatch, MigrationError, retry_lock_waits, run_file, run_written

DEFINITIONS_TABLE = "_deenroll_definitions"

# (catalog, oid, signature or qualified name) of one object in the database.
CatalogObject = tuple[str, int, str]


def catalog_hashes(conn: psycopg.Connection, defs: list[Definition]) -> dict[str, str]:
    """md5 of each object's definition as the database holds it (read under the pinned search
    path), by name; the absent ones left out."""
    names, kinds, schemas = [d.name for d in defs], [d.kind for d in defs], [d.schema for d in defs]
    return dict(queries.run(conn, "migrate_catalog_hashes", names=names, kinds=kinds, schemas=schemas).fetchall())


def catalog_hash(conn: psycopg.Connection, d: Definition) -> str | None:
    return catalog_hashes(conn, [d]).get(d.name)


def pin_search_path(conn: psycopg.Connection) -> None:
    """Views and SQL-standard function bodies bind the functions and operators they call when
    they are created: with only pg_catalog in the path, a better-matching overload planted in a
    schema others can write to is never bound. Every name of ours in the files is qualified.
    The catalog's text of a definition is read under the same path."""
    queries.run(conn, "migrate_pin_search_path")


def recorded(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    """name -> (hash of its file, hash of its catalog text) as migrate last left them."""
    if not queries.value(conn, "migrate_definitions_record_exists"):
        return {}
    return {name: (sha, md5) for name, sha, md5 in queries.run(conn, "migrate_definitions_record").fetchall()}


def objects_of(conn: psycopg.Connection, d: Definition) -> list[CatalogObject]:
    """The database's objects named like `d`."""
    return queries.run(conn, "migrate_objects", kind=d.kind, name=d.name, schema=d.schema).fetchall()


def drop_ours(conn: psycopg.Connection, d: Definition, obj: CatalogObject, why: str = "") -> list[str]:
    """Drop one of our objects (a changed file cannot replace it in place, or a rollback). Refuses,
    naming them, when anything that is not one of our functions or views depends on it; our
    dependents go with it (migrate creates them again from their files). Returns their names."""
    catalog, oid, ident = obj
    is_view = catalog == "pg_catalog.pg_class"
    if is_view:
        run_written(conn, "migrate_lock_view", oid=oid)
    views, functions = ([x.name for x in definitions() if x.kind == k] for k in ("view", "function"))
    rows = queries.run(
        conn, "migrate_dependents", classid=catalog, objid=oid, schema=SCHEMA, views=views, functions=functions
    ).fetchall()
    foreign = [described for described, _, ours in rows if not ours]
    if foreign:
        reason = why or f"{d.path.parent.name}/{d.path.name} changes it in a way that needs it dropped and created again"
        raise UserError(
            f"cannot drop {ident} ({reason}): objects that are not deenroll's functions or views depend on it: "
            f"{', '.join(sorted(set(foreign)))}; drop or change them first (they would be lost), then try again"
        )
    run_written(conn, "migrate_drop_view" if is_view else "migrate_drop_routine", oid=oid)
    return [name for _, name, ours in rows if ours]


def _or_replace(sql: str) -> str:
    """The file's `CREATE FUNCTION` / `CREATE VIEW` as CREATE OR REPLACE: replaced in place,
    so that what others built on it (views, grants) stays."""
    return re.sub(r"^(\s*)CREATE\s+(FUNCTION|PROCEDURE|VIEW)\b", r"\1CREATE OR REPLACE \2", sql, count=1, flags=re.M | re.I)


def _apply_one(conn: psycopg.Connection, d: Definition, watch: LockWatch) -> None:
    """Create or replace one definition in place; drop and create only when it must, and never
    anything someone else built on it."""
    text = _or_replace(d.sql)
    before = objects_of(conn, d)
    try:
        with conn.transaction():
            run_file(conn, d.path, d.path.stem, text, watch)
    except MigrationError as exc:
        # 42P16: a view's columns changed; 42P13: a function's result type or parameter names.
        if exc.cause.sqlstate not in ("42P16", "42P13"):
            raise
        for obj in before:
            drop_ours(conn, d, obj)
        run_file(conn, d.path, d.path.stem, text, watch)
        return
    if d.kind == "function":
        after = objects_of(conn, d)
        if len(after) > len(before):  # a new signature: the old overloads are stale
            for obj in before:
                drop_ours(conn, d, obj)


def apply_definitions(target: Target, applied: set[str], attempts: int = 4) -> list[str]:
    """(Re)create every function and view whose file changed, was dropped or was edited by hand,
    all in one short transaction; a lock wait that gives up after lock_timeout, or a deadlock
    with a run's batch, rolls the whole back and it is retried."""
    return retry_lock_waits(lambda: _apply_definitions_once(target, applied), attempts)


def _apply_definitions_once(target: Target, applied: set[str]) -> list[str]:
    """Apply each definition whose file or catalog text differs from the record (`seen`, kept up
    to date here); the names applied."""
    changed: list[str] = []
    with LockWatch(target) as watch, connect(target) as conn:
        pin_search_path(conn)
        queries.run(conn, "migrate_definitions_lock_wait")
        queries.run(conn, "migrate_create_definitions_record")
        todo = [d for d in definitions() if d.requires in applied]
        seen = recorded(conn)
        for _pass in range(3):  # a drop may take our dependents with it: they come back next pass
            for d in todo:
                current = catalog_hash(conn, d)
                if current is not None and seen.get(d.name) == (d.sha256, current):
                    continue
                _apply_one(conn, d, watch)
                seen[d.name] = (d.sha256, catalog_hash(conn, d))
                queries.run(conn, "migrate_record_definition", name=d.name, kind=d.kind, file_sha256=d.sha256,
                            catalog_md5=seen[d.name][1])
                if d.name not in changed:
                    changed.append(d.name)
            gone = {d.name for d in todo} - catalog_hashes(conn, todo).keys()
            for name in gone:
                seen.pop(name, None)
            if not gone:
                break
        _close_and_grant(conn, [d for d in todo if d.name in changed])
        # What ran after a file may have altered its object (owner, settings): record the final state.
        for name, final in catalog_hashes(conn, todo).items():
            if name in seen and seen[name][1] != final:
                queries.run(conn, "migrate_record_catalog_hash", catalog_md5=final, name=name)
        conn.commit()
    return changed


def _close_and_grant(conn: psycopg.Connection, changed: list[Definition]) -> None:
    """New objects of ours start closed to PUBLIC; default privileges may also have handed them
    (or tables a migration just made) to API roles. Once the privileges function exists, its one
    list of grants does both after every migrate; before that, the changed functions are closed."""
    if queries.value(conn, "migrate_privileges_function_exists"):
        queries.run(conn, "apply_privileges")
        return
    names, schemas = [d.name for d in changed], [d.schema for d in changed]
    for (revoke,) in queries.run(conn, "migrate_close_to_public", names=names, schemas=schemas).fetchall():
        conn.execute(revoke)


def forget_missing_definitions(conn: psycopg.Connection) -> None:
    """Drop from the record the definitions whose object is gone (after a rollback)."""
    pin_search_path(conn)
    if recorded(conn):
        present = catalog_hashes(conn, definitions())
        queries.run(conn, "migrate_forget_definitions", names=[d.name for d in definitions() if d.name not in present])
