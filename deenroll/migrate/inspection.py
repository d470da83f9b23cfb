"""What `status` and `verify` report: which migrations and definitions are applied and current,
and the operating procedure's checks after migrating. Both only read."""

from __future__ import annotations

from dataclasses import dataclass

from .. import queries, schedule_status
from ..database import Target, connect
from ..sqlfiles import SCHEMA, definitions
from .definitions import catalog_hash, pin_search_path, recorded
from .execute import run_written
from .files import migration_files
from .yoyo_bridge import recorded_migrations


@dataclass
class Status:
    migrations: list[tuple[str, str]]  # (stem, "applied <when>" | "pending")
    definitions: list[tuple[str, str, str]]  # (name, kind, state)
    never_migrated: bool = False  # no migration was ever recorded in this database


def status(target: Target) -> Status:
    """What is applied and current, read from the catalog in a read-only transaction."""
    with connect(target) as conn:
        queries.run(conn, "migrate_read_only")
        found = recorded_migrations(conn)
        when = found or {}
        mig_states = [
            (m.stem, f"applied {when[m.stem]:%Y-%m-%d %H:%M:%S} UTC" if m.stem in when else "pending")
            for m in migration_files()
        ]
        pin_search_path(conn)
        seen_defs = recorded(conn)
        def_states = []
        for d in definitions():
            current = catalog_hash(conn, d)
            seen = seen_defs.get(d.name)
            if d.requires not in when:
                state = f"waits for {d.requires}"
            elif current is None:
                state = "missing (run migrate)"
            elif seen is None:
                state = "unmanaged (run migrate)"
            elif seen[0] != d.sha256:
                state = "file changed (run migrate)"
            elif seen[1] != current:
                state = "changed in the database by hand (run migrate to restore)"
            else:
                state = "up to date"
            def_states.append((d.name, d.kind, state))
        conn.rollback()
    return Status(mig_states, def_states, never_migrated=found is None)


# The SOP's Step 2.2: each new column with the type it must have.
SOP_COLUMNS = [
    ("campaigns", "active_leads_count", "integer"),
    ("campaigns", "auto_discovered", "boolean"),
    ("campaigns", "booked_count", "integer"),
    ("campaigns", "completed_leads_count", "integer"),
    ("campaigns", "deactivated_at", "timestamp with time zone"),
    ("campaigns", "is_active", "boolean"),
    ("campaigns", "last_enrollment_at", "timestamp with time zone"),
    ("campaigns", "opted_out_count", "integer"),
    ("leads", "campaign_history", "jsonb"),
    ("leads", "completed_at", "timestamp with time zone"),
]
# The SOP's names of what must exist after migrating (the checks, not a list of what we maintain).
SOP_TABLES = ["de_enrollment_runs", "de_enrollment_lead_log"]
SOP_FUNCTIONS = ["get_leads_for_de_enrollment", "process_de_enrollment_batch"]
SOP_VIEWS = ["de_enrollment_health"]


def verify(target: Target) -> list[tuple[str, bool, str]]:
    """The SOP's post-migration checks: (item, passed, detail) for each."""
    checks: list[tuple[str, bool, str]] = []
    with connect(target) as conn:
        cols = {(t, c): ty for t, c, ty in queries.run(conn, "migrate_platform_columns", schema=SCHEMA).fetchall()}
        for table, column, typ in SOP_COLUMNS:
            found = cols.get((table, column))
            ok = found == typ
            checks.append((f"column {table}.{column}", ok, found or "missing" if not ok else typ))
        for table in SOP_TABLES:
            counted = run_written(conn, "migrate_count_rows", schema=SCHEMA, table=table)
            if counted is None:
                checks.append((f"table {table}", False, "missing"))
                continue
            count = counted.fetchone()[0]
            checks.append((f"table {table}", True, f"{count} rows"))
        routines = {r[0] for r in queries.run(conn, "migrate_enrollment_routines", schema=SCHEMA).fetchall()}
        for fn in SOP_FUNCTIONS:
            checks.append((f"function {fn}", fn in routines, "present" if fn in routines else "missing"))
        for view in SOP_VIEWS:
            kind = queries.one(conn, "migrate_relation_kind", name=view, schema=SCHEMA)
            ok = kind is not None and kind[0] == "v"
            checks.append((f"view {view}", ok, "present" if ok else "missing"))
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
