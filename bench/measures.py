"""The timed sides of a round, each on its own clone of the data set: (a) the set-based lower
bound, (b) `deenroll run` as a child process, (c) the run's procedure as one CALL and the queued
CALLs after it, (d) the previous release's `deenroll run`."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import psycopg

from bench.common import RUNNER_MAX_RUNTIME_MS, Child, deenroll_exe, run_child

LB_HOST = "deenroll-benchmark (lower bound)"


# Every write process_de_enrollment_batch makes, for every due lead of every client at once.
# The due leads are found the way get_leads_for_de_enrollment finds them, through the
# partial indexes of 0019 per campaign (a plain join lets the planner scan the whole
# candidates index once per campaign: twice as slow), and the UPDATE re-checks them.
# The lower bound is deenroll's own functions with no batching at all: every client's due
# leads claimed and processed by one call each, all in one statement and one transaction.
LOWER_BOUND_SQL = """
SELECT count(*) FILTER (WHERE b.outcome IN ('completed', 'opted_out'))
  FROM unnest(%(clients)s::uuid[], %(runs)s::uuid[]) AS r (client_id, run_id)
 CROSS JOIN LATERAL process_de_enrollment_batch(
           r.run_id,
           ARRAY(SELECT g.lead_id FROM get_leads_for_de_enrollment(r.client_id, 2147483647) AS g)) AS b
"""


@dataclass
class Measurement:
    name: str
    leads: int
    wall_s: float
    leads_per_s: float
    ratio: float | None = None
    runner_ms: int | None = None  # the runner's own duration_ms (without process start)
    peak_rss_mb: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def lower_bound(dsn: str) -> Measurement:
    """One set-based transaction doing the runner's writes; returns its wall time."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")  # connection and catalog warm-up outside the timing
        conn.commit()
        t0 = time.perf_counter()
        opened = conn.execute(
            """SELECT c.client_id, start_de_enrollment_run(c.client_id, 2147483647, %s, %s, pg_backend_pid())
                 FROM de_enrollment_clients() AS c""",
            (RUNNER_MAX_RUNTIME_MS, LB_HOST),
        ).fetchall()
        clients, runs = [c for c, _ in opened], [r for _, r in opened]
        t1 = time.perf_counter()
        done = conn.execute(LOWER_BOUND_SQL, {"clients": clients, "runs": runs}).fetchone()[0]
        t2 = time.perf_counter()
        folded = conn.execute("SELECT apply_campaign_stats_deltas()").fetchone()[0]
        t3 = time.perf_counter()
        conn.execute("SELECT finish_de_enrollment_run(r, 'success') FROM unnest(%s::uuid[]) AS r", (runs,))
        conn.commit()
        t4 = time.perf_counter()
    steps = {"open_runs_s": t1 - t0, "statement_s": t2 - t1, "fold_s": t3 - t2, "finish_commit_s": t4 - t3}
    wall = t4 - t0
    return Measurement("lower bound: one statement", done, round(wall, 3), round(done / wall) if wall else 0.0,
                       ratio=1.0, detail={k: round(v, 3) for k, v in steps.items()} | {"delta_rows_folded": folded,
                                                                                     "clients": len(runs)})


def workers_supported() -> bool:
    """Whether this deenroll's `run` has --workers."""
    help_text = subprocess.run([deenroll_exe(), "run", "--help"], capture_output=True, text=True, timeout=60).stdout
    return "--workers" in help_text


def runner(dsn: str, batch_size: int, workers: int = 1) -> Measurement:
    args = ["--batch-size", str(batch_size)] + (["--workers", str(workers)] if workers > 1 else [])
    child = run_child(dsn, *args)
    totals = child.report["totals"]
    name = "deenroll run " + " ".join(args)
    if child.code != 0 or totals["failed"] or totals["partial"]:
        raise click.ClickException(f"`{name}` exited {child.code} ({totals}); stderr: {child.stderr.strip()[-500:]}")
    n = totals["leads_de_enrolled"]
    return Measurement(name, n, round(child.wall_s, 3),
                       round(n / child.wall_s) if child.wall_s else 0.0,
                       runner_ms=child.report["duration_ms"], peak_rss_mb=round(child.peak_rss_mb, 1),
                       detail={"batches": totals["batches"], "clients": totals["clients"]})


def call_run(dsn: str, batch_size: int) -> Measurement:
    """One `CALL deenroll.run_de_enrollment(p_batch_size => N)` on one open connection, as a pg_cron
    job sends it; timed from sending the CALL to its reply (every batch committed inside)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT 1")  # connection warm-up outside the timing, as for the lower bound
        t0 = time.perf_counter()
        summary = conn.execute("CALL deenroll.run_de_enrollment(p_batch_size => %s::integer, p_max_runtime_ms => %s::integer)",
                               (batch_size, RUNNER_MAX_RUNTIME_MS)).fetchone()[0]
        wall = time.perf_counter() - t0
    clients = summary["clients"]
    name = f"CALL run_de_enrollment, batch {batch_size}"
    bad = [c for c in clients if c["status"] != "success"]
    if bad or summary.get("not_reached") or summary.get("fold_error"):
        raise click.ClickException(f"`{name}` left work undone: {json.dumps(summary)[:800]}")
    n = sum(c["leads_de_enrolled"] for c in clients)
    return Measurement(name, n, round(wall, 3), round(n / wall) if wall else 0.0,
                       detail={"batches": sum(c["batches"] for c in clients), "clients": len(clients)})


def queued_calls(dsn: str, calls: int) -> list[float]:
    """`CALL deenroll.run_de_enrollment()` with nothing to do, each on a new session as pg_cron opens
    one per job (the session's first statement, so its compile cost counts); milliseconds."""
    out = []
    for _ in range(calls):
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.perf_counter()
            summary = conn.execute("CALL deenroll.run_de_enrollment()").fetchone()[0]
            out.append(round((time.perf_counter() - t0) * 1000, 2))
        done = sum(c["leads_de_enrolled"] for c in summary["clients"])
        if done:
            raise click.ClickException(f"a queued CALL after a complete run de-enrolled {done} leads")
    return out


def previous_run(dsn: str, code: Path, commit: str, batch_size: int, workers: int = 1) -> Measurement:
    """The previous release's `deenroll run --batch-size N [--workers W]` on this clone: its own
    `migrate` first (its functions back in place of this checkout's; not timed), then the run,
    like runner()."""
    setup = Child.start(dsn, "migrate", code=code).finish(timeout=600)
    if setup.code != 0:
        raise click.ClickException(f"`deenroll migrate` of {commit[:12]} exited {setup.code}: {setup.last_line}")
    child = Child.start(dsn, "run", "--json", "--max-runtime", str(RUNNER_MAX_RUNTIME_MS),
                               "--batch-size", str(batch_size), *(["--workers", str(workers)] if workers > 1 else []),
                               code=code).finish()
    report = child.report or {}
    totals = report.get("totals") or {}
    name = f"previous {commit[:7]}: run --batch-size {batch_size}" + (f" --workers {workers}" if workers > 1 else "")
    if child.code != 0 or totals.get("failed") or totals.get("partial"):
        raise click.ClickException(f"`{name}` exited {child.code} ({totals}); stderr: {child.stderr.strip()[-500:]}")
    n = totals["leads_de_enrolled"]
    return Measurement(name, n, round(child.wall_s, 3), round(n / child.wall_s) if child.wall_s else 0.0,
                       runner_ms=report["duration_ms"], peak_rss_mb=round(child.peak_rss_mb or 0.0, 1),
                       detail={"batches": totals["batches"], "clients": totals["clients"]})
