"""What `status` and `verify` report: which migrations and definitions are applied and current,
and the operating procedure's checks after migrating. Both only read."""

from __future__ import annotations

from dataclasses import dataclass

from .. import queries, schedule_status
from ..database import Target, connect
from ..sqlfiles import SCHEMA, definitions
from .definitions import catalog_hashes, pin_search_path, recorded
from .files import migration_files
from .yoyo_bridge import recorded_migrations


@dataclass
class Status:
    migrations: list[tuple[str, str]]  # (stem, "applied <when>" | "pending")
    definitions: list[tuple[str, str, str]]  # (name, kind, state)
    never_migrated: bool = False  # no migration was ever recorded in this database


def status(target: Target) -> Status:
    """What is applied and current, read from the catalog in a read-only transaction."""
    defs = definitions()
    with connect(target) as conn:
        queries.run(conn, "migrate_read_only")
        found = recorded_migrations(conn)
        pin_search_path(conn)
        seen_defs, current = recorded(conn), catalog_hashes(conn, defs)
        conn.rollback()
    when = found or {}
    mig_states = [
        (m.stem, f"applied {when[m.stem]:%Y-%m-%d %H:%M:%S} UTC" if m.stem in when else "pending")
        for m in migration_files()
    ]
    def_states = []
    for d in defs:
        seen = seen_defs.get(d.name)
        if d.requires not in when:
            state = f"waits for {d.requires}"
        elif d.name not in current:
            state = "missing (run migrate)"
        elif seen is None:
            state = "unmanaged (run migrate)"
        elif seen[0] != d.sha256:
            state = "file changed (run migrate)"
        elif seen[1] != current[d.name]:
            state = "changed in the database by hand (run migrate to restore)"
        else:
            state = "up to date"
        def_states.append((d.name, d.kind, state))
    return Status(mig_states, def_states, never_migrated=found is None)


def verify(target: Target) -> list[tuple[str, bool, str]]:
    """The SOP's post-migration checks (Step 2.2): (item, passed, detail) for each."""
    with connect(target) as conn:
        checks = [
            (item, ok, f"{conn.execute(count).fetchone()[0]} rows" if count else detail)
            for item, ok, detail, count in queries.run(conn, "migrate_sop_checks", schema=SCHEMA).fetchall()
        ]
        # The engine runs as the owner of its functions: row-level security it cannot see
        # through would make runs silently miss leads.
        if queries.value(conn, "migrate_rls_check_exists"):
            blind = queries.run(conn, "migrate_rls_blind_spots").fetchall()
            for table, reason in blind:
                checks.append((f"row-level security on {table}", False, reason))
            if not blind:
                checks.append(("row-level security on leads, campaigns", True, "the engine sees every row"))
    # A pg_cron job of ours calling what does not exist fails every time it runs.
    for j in schedule_status.summary(target)["jobs"]:
        if j["calls_missing"]:
            checks.append((f"pg_cron job {j['name']} (job {j['jobid']}, as {j['username']})", False,
                           f"calls {', '.join(j['calls_missing'])}, which does not exist"))
    return checks
