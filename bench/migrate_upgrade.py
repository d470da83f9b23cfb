"""Platform writes while `deenroll migrate` upgrades from the previous release during a run of that
release: the waits, both children's exits and the end state after the run."""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

from bench import common
from bench.baseline import build
from bench.common import RUNNER_MAX_RUNTIME_MS, Child
from bench.platform_writer import TARGET_MS, start_writer, stop_writer, waits_between
from bench.release import previous_release, previous_release_code
from deenroll.migrate.definitions import DEFINITIONS_TABLE
from deenroll.migrate.files import migration_files

BATCHES_BEFORE_MIGRATE = 3

say = partial(common.say, "migrate-wait")


def running_batches(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(
            "SELECT coalesce(max(batches), 0) FROM public.de_enrollment_runs WHERE status = 'running'"
        ).fetchone()[0]


def end_state(dsn: str, touched: set[str]) -> dict[str, Any]:
    """What must hold after the run, as figures: runs left running, leads de-enrolled twice, due leads left."""
    with psycopg.connect(dsn) as conn:
        return {
            "runs_left_running": conn.execute(
                "SELECT count(*) FROM public.de_enrollment_runs WHERE status = 'running'").fetchone()[0],
            "lead_log_rows": conn.execute(
                "SELECT count(*) FROM public.de_enrollment_lead_log WHERE outcome IN ('completed', 'opted_out')"
            ).fetchone()[0],
            "leads_logged_twice": conn.execute(
                """SELECT count(*) FROM (SELECT 1 FROM public.de_enrollment_lead_log
                                          WHERE outcome IN ('completed', 'opted_out')
                                          GROUP BY lead_id, campaign_id HAVING count(*) > 1) AS x"""
            ).fetchone()[0],
            "leads_with_two_entries_of_ours": conn.execute(
                """SELECT count(*) FROM (SELECT 1 FROM public.leads AS l
                                          CROSS JOIN LATERAL jsonb_array_elements(l.campaign_history) AS e
                                          WHERE jsonb_typeof(l.campaign_history) = 'array'
                                            AND l.campaign_history <> '[]'::jsonb
                                            AND jsonb_typeof(e.value) = 'object' AND e.value ? 'run_id'
                                          GROUP BY l.id, e.value ->> 'campaign_id' HAVING count(*) > 1) AS x"""
            ).fetchone()[0],
            "due_left": conn.execute("SELECT count(*) FROM public.de_enrollment_due_leads").fetchone()[0],
            "due_left_untouched_by_writer": conn.execute(
                """SELECT count(*) FROM public.de_enrollment_due_leads
                    WHERE lead_id NOT IN (SELECT unnest(%s::uuid[]))""",
                (sorted(touched),),
            ).fetchone()[0],
            "due_left_held": conn.execute(
                "SELECT count(*) FROM public.de_enrollment_due_leads WHERE held_reason IS NOT NULL").fetchone()[0],
        }


def measure(dsn: str, leads: int, clients: int = 20, campaigns: int = 200, interval_ms: float = 5.0,
                    batch_size: int = 100) -> dict[str, Any]:
    """Build `leads` leads in the empty database `dsn` and migrate them to the previous release with
    that release's code; start a run of that release, and upgrade to the latest migration with this
    code while the run and a platform writer work; the waits, the exits and the end state."""
    with tempfile.TemporaryDirectory(prefix="deenroll-previous-release-") as tmp:
        return upgrade(dsn, Path(tmp), leads, clients, campaigns, interval_ms, batch_size)


def upgrade(dsn: str, tmp: Path, leads: int, clients: int, campaigns: int, interval_ms: float,
            batch_size: int) -> dict[str, Any]:
    previous, latest = previous_release(), migration_files()[-1].stem
    commit = previous_release_code(tmp)
    say(f"upgrade, {leads:,} leads: building the baseline data set")
    build_s = build(dsn, leads, clients, campaigns)
    say(f"upgrade, {leads:,} leads: built in {build_s:.1f} s; migrating to {previous} with commit {commit[:12]}")
    setup = Child.start(dsn, "migrate", code=tmp).finish()
    if setup.code != 0:
        raise RuntimeError(f"`deenroll migrate` of the previous release exited {setup.code}: {setup.last_line}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        marked = conn.execute(f"UPDATE public.{DEFINITIONS_TABLE} SET file_sha256 = 'old'").rowcount
        conn.execute("VACUUM ANALYZE leads")
        due = conn.execute("SELECT count(*) FROM public.de_enrollment_due_leads").fetchone()[0]
    say(f"upgrade: at {previous} in {setup.wall_s:.1f} s, {marked} definitions marked changed, {due:,} leads due; "
        f"starting the previous release's run and the platform writer")
    writer = start_writer(dsn, leads, interval_ms)
    run = Child.start(dsn, "run", "--json", "--batch-size", str(batch_size), "--max-runtime", str(RUNNER_MAX_RUNTIME_MS),
                      code=tmp)
    batches = 0
    deadline = time.monotonic() + 300
    while batches < BATCHES_BEFORE_MIGRATE and run.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        batches = running_batches(dsn)
    say(f"upgrade: the run has committed {batches} batches of its client; migrating to {latest}")
    migrate = Child.start(dsn, "migrate", "--json")
    migrated = migrate.finish()
    migrate_end = time.perf_counter()
    run_outlasted = run.proc.poll() is None
    say(f"upgrade: migrate exited {migrated.code} after {migrated.wall_s:.1f} s; waiting for the run")
    ran = run.finish()
    run_end = time.perf_counter()
    stop_writer(writer)
    say(f"upgrade: the run exited {ran.code} after {ran.wall_s:.1f} s; checking the end state")
    migrate_report, run_report = migrated.report, ran.report
    during_migrate = waits_between(writer, migrate.started, migrate_end)
    return {
        "leads": leads,
        "campaigns": campaigns,
        "clients": clients,
        "interval_ms": interval_ms,
        "batch_size": batch_size,
        "from": previous,
        "to": latest,
        "previous_release_commit": commit,
        "build_s": round(build_s, 1),
        "setup_migrate_s": round(setup.wall_s, 1),
        "definitions_marked_changed": marked,
        "due_before": due,
        "migrate": {
            "exit_code": migrated.code,
            "seconds": round(migrated.wall_s, 2),
            "started_after_run_s": round(migrate.started - run.started, 2),
            "run_batches_before": batches,
            "applied": migrate_report.get("applied") if migrate_report else None,
            "installed": len(migrate_report.get("installed") or []) if migrate_report else None,
            "stderr_last_line": migrated.last_line if migrated.code else "",
        },
        "run": {
            "exit_code": ran.code,
            "seconds": round(ran.wall_s, 2),
            "outlasted_migrate": run_outlasted,
            "totals": run_report.get("totals") if run_report else None,
            "errors": sorted({c["error"] for c in (run_report or {}).get("clients", []) if c.get("error")}
                             | ({run_report["error"]} if run_report and run_report.get("error") else set())),
            "stderr_last_line": ran.last_line if ran.code else "",
        },
        "writes_during_migrate": during_migrate,
        "writes_during_run": waits_between(writer, run.started, run_end),
        "checks": end_state(dsn, writer.touched),
        "target_ms": TARGET_MS,
        "meets_target": migrated.code == 0 and during_migrate["longest_wait_ms"] is not None
                        and during_migrate["longest_wait_ms"] < TARGET_MS and not during_migrate["failed_writes"],
    }

