#!/usr/bin/env python3
"""Performance benchmark of `deenroll run`. A benchmark, not a test.

    scripts/bench.sh [--database-url URL] [--leads N] [--json-out FILE] ...

What it does, in one process:

1. Server: --database-url names a database on a server where the user may
   CREATE DATABASE (the benchmark creates and drops its own databases there);
   without it an embedded PostgreSQL is started in a temporary directory and
   deleted afterwards, so the user's embedded default data is never touched.
2. Data set: a template database is migrated and filled with
   deenroll.dataset.build_dataset (deterministic: --seed), then VACUUM ANALYZEd.
   Every measurement runs on a fresh clone of it (CREATE DATABASE ... TEMPLATE,
   STRATEGY FILE_COPY), preceded by a CHECKPOINT, so each starts from the same data
   and no measurement pays for another one's dirty pages.
3. (a) Lower bound: deenroll's own functions without batching, in one transaction:
   start_de_enrollment_run for every client, then ONE statement that calls
   process_de_enrollment_batch(get_leads_for_de_enrollment(client, 2^31-1)) once per
   client (every due lead claimed and de-enrolled in one call: the same writes and
   checks as the runner, none of its per-batch costs), then the counter fold and
   finish_de_enrollment_run; timed from BEGIN to the end of COMMIT, on an open
   connection. The ratio is thus the price of batching itself.
   (b) The real command `deenroll run --batch-size N --json` in a subprocess (process
   start included), at N = 100 and N = 1000; peak RSS of that child from wait4().
   Ratio = runner wall time / lower-bound wall time.
   (c) The run's procedure as pg_cron drives it: one `CALL deenroll.run_de_enrollment(
   p_batch_size => N)` on an open connection, at N = 100 and N = 1000, timed like (a);
   after each, the end state is read, then QUEUED_CALLS more CALLs with nothing to do, each
   the first statement of a new session (a pg_cron job queued behind a complete run).
   (d) The previous release's `deenroll run --batch-size 100` (its code taken from this
   checkout's git history: by default the commit before the one that added
   functions/run_de_enrollment.sql, or --previous-release REV; --skip-previous-release),
   after that release's own `migrate` on the clone (not timed), beside (b) at 100.
   --repeats rounds of (a), (b) 100, (b) 1000, (c), (d), interleaved; the table shows medians.
   After each, the invariants are checked (nothing due, counters exact, no pending
   deltas, one log row per de-enrolled lead) and the end states are compared: the
   same leads de-enrolled with the same outcomes and history entries, the same log
   rows, the same counters and run totals.
4. Idle: on a data set of --idle-small-leads and one of --leads (the same shape),
   everything is de-enrolled by a real run, VACUUM ANALYZE, one warm-up run, then
   the median of --idle-repeats runs with nothing eligible.
5. Trigger overhead (the triggers deenroll keeps on leads: the counters' deltas, and the
   marks of campaigns that hold finished leads): single-row UPDATEs of
   current_message_position (no counted column), of one that finishes the sequence (the
   lead's campaign is marked) and opted_out flips, with and without the triggers (ALTER
   TABLE leads DISABLE TRIGGER USER), executed one statement at a time in a server-side
   loop (rolled back) and, for scale, as autocommit transactions from a client;
   alternating rounds, medians.
6. Workers: (b) at batch size 100 with `--workers 2` too, in the same rounds, when
   `deenroll run --help` lists --workers ("n/a" otherwise).
7. Campaign-count scaling (bench/campaign_scaling.py): the same leads and due leads with
   --cs-base campaigns per client, or with --cs-extra finished campaigns per client
   added; a full run at batch size 100 and idle runs on each; ratios many / few.
8. Migrations while the platform writes (bench/migrate_wait.py): the
   longest single-row UPDATE wait while `migrate` takes a baseline database of
   --migrate-wait-leads leads to the latest migration; and
   while `migrate` upgrades a database of --migrate-upgrade-leads leads from the previous
   release (every function and view re-created) during a `run` of that release, with the
   exit codes of both and the end state after the run.

Figures are printed as a table with each target's pass/fail (information, not an
assertion); --json-out writes them as JSON. The server's durability settings are
left as they are (fsync, synchronous_commit): both sides pay them alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import click
import psycopg

if __package__ in (None, ""):  # run as a file: the package `bench` is the checkout's
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench import campaign_scaling, common, migrate_wait  # noqa: E402
from bench.common import RUNNER_MAX_RUNTIME_MS, Server, deenroll_exe, machine_info, open_server, run_child  # noqa: E402
from deenroll import schema  # noqa: E402
from deenroll.database import Target, redact  # noqa: E402
from deenroll.dataset import build_dataset  # noqa: E402

TARGET_RATIO_100 = 1.5  # one worker
TARGET_RATIO_100_W2 = 1.0  # two workers
TARGET_CAMPAIGN_RATIO = 1.3
TARGET_MIGRATE_WAIT_MS = 200.0
TARGET_RATIO_1000 = 1.3
TARGET_IDLE_RATIO = 1.5
TARGET_RSS_MB = 100.0
TARGET_CALL_RATIO_100 = 1.2  # one CALL, the way pg_cron drives the run
TARGET_PREVIOUS_RATIO = 1.0  # deenroll run / the previous release's, same data, same rounds
TARGET_QUEUED_MS = 50.0
QUEUED_CALLS = 3  # queued no-op CALLs after each complete CALL run, each on a new session
LB_HOST = "deenroll-benchmark (lower bound)"


say = partial(common.say, "bench")  # progress on stderr (the figures go to stdout)


# --------------------------------------------------------------------------- machine and server


SERVER_SETTINGS = ("shared_buffers", "work_mem", "max_wal_size", "fsync", "synchronous_commit",
                   "wal_sync_method", "full_page_writes", "checkpoint_timeout", "autovacuum")


def server_info(conn: psycopg.Connection) -> dict[str, Any]:
    version = conn.execute("SHOW server_version").fetchone()[0]
    settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in SERVER_SETTINGS}
    return {"version": version, "version_num": conn.info.server_version, "settings": settings}


# --------------------------------------------------------------------------- data set


@dataclass
class DataSet:
    template: str
    leads: int
    clients: int
    campaigns: int
    eligible: int
    eligible_completed: int
    eligible_opted_out: int
    build_s: float
    vacuum_s: float
    size_mb: float


def build_template(server: Server, label: str, leads: int, clients: int, campaigns: int,
                   eligible_fraction: float, seed: str) -> DataSet:
    name = server.create_db(label)
    dsn = server.dsn(name)
    schema.migrate(Target(dsn, "benchmark"))
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        info = build_dataset(conn, clients=clients, campaigns=campaigns, leads=leads,
                             eligible_fraction=eligible_fraction, seed=seed, tag="bench")
        conn.commit()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    vacuum_s = time.perf_counter() - t0
    return DataSet(name, leads, clients, campaigns, info.eligible, info.eligible_completed,
                   info.eligible_opted_out, round(build_s, 2), round(vacuum_s, 2), round(size / 2**20, 1))


# --------------------------------------------------------------------------- (a) the lower bound

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


# --------------------------------------------------------------------------- (b) the runner


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


def previous_run(dsn: str, code: Path, commit: str, batch_size: int) -> Measurement:
    """The previous release's `deenroll run --batch-size N` on this clone: its own `migrate` first
    (its functions back in place of this checkout's; not timed), then the run, like runner()."""
    setup = common.Child.start(dsn, "migrate", code=code).finish(timeout=600)
    if setup.code != 0:
        raise click.ClickException(f"`deenroll migrate` of {commit[:12]} exited {setup.code}: {setup.last_line}")
    child = common.Child.start(dsn, "run", "--json", "--max-runtime", str(RUNNER_MAX_RUNTIME_MS),
                               "--batch-size", str(batch_size), code=code).finish()
    report = child.report or {}
    totals = report.get("totals") or {}
    name = f"previous {commit[:7]}: run --batch-size {batch_size}"
    if child.code != 0 or totals.get("failed") or totals.get("partial"):
        raise click.ClickException(f"`{name}` exited {child.code} ({totals}); stderr: {child.stderr.strip()[-500:]}")
    n = totals["leads_de_enrolled"]
    return Measurement(name, n, round(child.wall_s, 3), round(n / child.wall_s) if child.wall_s else 0.0,
                       runner_ms=report["duration_ms"], peak_rss_mb=round(child.peak_rss_mb or 0.0, 1),
                       detail={"batches": totals["batches"], "clients": totals["clients"]})


def previous_release_commit() -> str:
    """The commit before the one that moved the run's loop into the database (added run_de_enrollment)."""
    repo = Path(__file__).resolve().parent.parent
    added = migrate_wait.git(repo, "log", "-1", "--diff-filter=A", "--format=%H", "--",
                             "functions/run_de_enrollment.sql").decode().strip()
    if not added:
        raise RuntimeError("no commit in this checkout's history added functions/run_de_enrollment.sql")
    return added + "^"


def summarize(attempts: list[Measurement], lower_wall: float | None) -> dict[str, Any]:
    """One row of the table: the median of the attempts (each on a fresh clone)."""
    walls = [m.wall_s for m in attempts]
    wall = statistics.median(walls)
    leads = attempts[0].leads
    runner_ms = [m.runner_ms for m in attempts if m.runner_ms is not None]
    rss = [m.peak_rss_mb for m in attempts if m.peak_rss_mb is not None]
    return {
        "name": attempts[0].name,
        "leads": leads,
        "wall_s": round(wall, 3),
        "walls_s": walls,
        "leads_per_s": round(leads / wall) if wall else 0,
        "ratio": round(wall / lower_wall, 2) if lower_wall else 1.0,
        "runner_ms": int(statistics.median(runner_ms)) if runner_ms else None,
        "peak_rss_mb": max(rss) if rss else None,
        "detail": attempts[-1].detail,
        "attempts": [asdict(m) for m in attempts],
    }


# --------------------------------------------------------------------------- checks and end state


def invariants(dsn: str) -> dict[str, Any]:
    """What must hold after a run, whoever made it: nothing due, counters exact, one log row per lead."""
    with psycopg.connect(dsn) as conn:
        due = conn.execute("SELECT coalesce(sum(completed + opted_out), 0)::bigint FROM count_leads_for_de_enrollment(NULL)").fetchone()[0]
        drift = conn.execute("SELECT count(*) FROM campaign_stats_drift").fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM campaign_stats_delta").fetchone()[0]
        de_enrolled = conn.execute("SELECT count(*) FROM leads WHERE campaign_history <> '[]'::jsonb").fetchone()[0]
        logged = conn.execute("SELECT count(*) FROM de_enrollment_lead_log").fetchone()[0]
        still_active = conn.execute("SELECT count(*) FROM leads WHERE is_active AND campaign_history <> '[]'::jsonb").fetchone()[0]
        not_success = conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status <> 'success'").fetchone()[0]
    ok = due == 0 and drift == 0 and pending == 0 and de_enrolled == logged and still_active == 0 and not_success == 0
    return {"ok": ok, "due_left": due, "drifting_campaigns": drift, "pending_deltas": pending,
            "de_enrolled_leads": de_enrolled, "log_rows": logged, "de_enrolled_but_active": still_active,
            "runs_not_success": not_success}


def end_state(dsn: str) -> dict[str, Any]:
    """The data a run leaves, without its timestamps and run ids: equal for equal work."""
    with psycopg.connect(dsn) as conn:
        leads = conn.execute(
            """SELECT count(*) FILTER (WHERE campaign_history <> '[]'::jsonb),
                      count(*) FILTER (WHERE campaign_history -> -1 ->> 'outcome' = 'completed'),
                      count(*) FILTER (WHERE campaign_history -> -1 ->> 'outcome' = 'opted_out'),
                      md5(string_agg(concat_ws('|', id, is_active, opted_out, booked, current_message_position,
                                               CASE WHEN campaign_history = '[]'::jsonb THEN completed_at::text
                                                    ELSE (completed_at IS NULL)::text END,
                                               jsonb_array_length(campaign_history),
                                               (campaign_history -> -1) - 'completed_at' - 'de_enrolled_at' - 'run_id'),
                                     ',' ORDER BY id))
                 FROM leads""").fetchone()
        log = conn.execute(
            """SELECT count(*), count(*) FILTER (WHERE outcome = 'completed'), count(*) FILTER (WHERE outcome = 'opted_out'),
                      md5(string_agg(concat_ws('|', lead_id, client_id, campaign_id, action, outcome,
                                               messages_received, total_messages, error_message),
                                     ',' ORDER BY lead_id, campaign_id))
                 FROM de_enrollment_lead_log""").fetchone()
        counters = conn.execute(
            """SELECT sum(active_leads_count), sum(completed_leads_count), sum(opted_out_count), sum(booked_count),
                      md5(string_agg(concat_ws('|', id, is_active, active_leads_count, completed_leads_count,
                                               opted_out_count, booked_count), ',' ORDER BY id))
                 FROM campaigns""").fetchone()
        runs = conn.execute(
            """SELECT count(*),
                      md5(string_agg(concat_ws('|', client_id, status, leads_evaluated, leads_de_enrolled,
                                               leads_completed, leads_opted_out), ',' ORDER BY client_id))
                 FROM de_enrollment_runs""").fetchone()
    return {
        "de_enrolled": leads[0], "completed": leads[1], "opted_out": leads[2], "leads_md5": leads[3],
        "log_rows": log[0], "log_completed": log[1], "log_opted_out": log[2], "log_md5": log[3],
        "active_leads_count": int(counters[0] or 0), "completed_leads_count": int(counters[1] or 0),
        "opted_out_count": int(counters[2] or 0), "booked_count": int(counters[3] or 0), "counters_md5": counters[4],
        "runs": runs[0], "run_totals_md5": runs[1],
    }


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{k}: {a[k]} vs {b.get(k)}" for k in a if a[k] != b.get(k)]


# --------------------------------------------------------------------------- idle runs


def idle(server: Server, data: DataSet, repeats: int, label: str, clone: str | None = None) -> dict[str, Any]:
    """De-enroll everything with a real run, VACUUM ANALYZE, then time runs with nothing eligible."""
    name = clone or server.create_db(f"idle_{label}", template=data.template)
    dsn = server.dsn(name)
    if clone is None:
        first = run_child(dsn, "--batch-size", "1000")
        if first.code != 0:
            raise click.ClickException(f"the de-enrolling run before the idle runs exited {first.code}")
    children = campaign_scaling.idle_runs(dsn, repeats, before=server.checkpoint)
    walls = [c.wall_s for c in children]
    runner_ms = [c.report["duration_ms"] for c in children]
    rss = [c.peak_rss_mb for c in children]
    with psycopg.connect(dsn) as conn:
        db_ms = _idle_sql_ms(conn)
    server.drop_db(name)
    return {"leads": data.leads, "runs": repeats, "median_wall_s": round(statistics.median(walls), 3),
            "median_runner_ms": int(statistics.median(runner_ms)), "walls_s": [round(w, 3) for w in walls],
            "peak_rss_mb": round(max(rss), 1), "sql_claim_ms_all_clients": db_ms}


def _idle_sql_ms(conn: psycopg.Connection) -> float:
    """Database time of the idle claim for every client (what an idle run asks the server), in ms."""
    t0 = time.perf_counter()
    for (client,) in conn.execute("SELECT client_id FROM de_enrollment_clients()").fetchall():
        conn.execute("SELECT count(*) FROM get_leads_for_de_enrollment(%s, 100)", (client,)).fetchone()
    ms = (time.perf_counter() - t0) * 1000
    conn.rollback()
    return round(ms, 1)


# --------------------------------------------------------------------------- trigger overhead

TRIGGER_CASES = {
    "position update (no counted column)": "UPDATE leads SET current_message_position = current_message_position + 1 WHERE id = v",
    "last message sent (campaign marked)": "UPDATE leads SET current_message_position = current_message_position + 100 WHERE id = v",
    "opted_out flip (counted column)": "UPDATE leads SET opted_out = NOT opted_out WHERE id = v",
}
CLIENT_CASES = {
    "position update (no counted column)": "UPDATE leads SET current_message_position = current_message_position + 1 WHERE id = %s",
    "last message sent (campaign marked)": "UPDATE leads SET current_message_position = current_message_position + 100 WHERE id = %s",
    "opted_out flip (counted column)": "UPDATE leads SET opted_out = NOT opted_out WHERE id = %s",
}


def _overhead(with_us: list[float], without_us: list[float]) -> dict[str, Any]:
    w, wo = statistics.median(with_us), statistics.median(without_us)
    return {"with_triggers_us": round(w, 1), "without_triggers_us": round(wo, 1), "overhead_us": round(w - wo, 1),
            "overhead_pct": round((w - wo) / wo * 100, 1) if wo else None,
            "rounds_with_us": [round(x, 1) for x in with_us], "rounds_without_us": [round(x, 1) for x in without_us]}


def trigger_overhead(server: Server, data: DataSet, statements: int, client_statements: int,
                     rounds: int = 5, client_rounds: int = 3) -> dict[str, Any]:
    """Per-statement cost of single-row lead UPDATEs with and without 0020's counter triggers.

    Rounds alternate with/without, medians are shown. Server loop: a DO block runs the
    statements one by one (each fires the statement-level trigger), in a transaction that
    is rolled back, so every round starts from the same data. Client: one autocommit
    transaction per statement over the socket, as an application sends them.
    """
    name = server.create_db("triggers", template=data.template)
    dsn = server.dsn(name)
    out: dict[str, Any] = {"statements": statements, "rounds": rounds, "client_statements": client_statements,
                           "client_rounds": client_rounds, "cases": {}}
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE bench_ids AS SELECT id FROM leads WHERE is_active AND NOT opted_out ORDER BY md5(id::text) LIMIT %s",
            (max(statements, client_statements),))
        conn.commit()
        for case, stmt in TRIGGER_CASES.items():
            per: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(rounds):
                for with_triggers in (True, False):
                    if not with_triggers:
                        conn.execute("ALTER TABLE leads DISABLE TRIGGER USER")
                    t0 = time.perf_counter()
                    conn.execute(
                        f"""DO $$
                            DECLARE v uuid;
                            BEGIN
                                FOREACH v IN ARRAY (SELECT array_agg(id) FROM (SELECT id FROM bench_ids LIMIT {int(statements)}) AS s) LOOP
                                    {stmt};
                                END LOOP;
                            END $$""")
                    per[with_triggers].append((time.perf_counter() - t0) / statements * 1e6)
                    conn.rollback()  # the updates and the DISABLE go away: every round starts equal
            out["cases"][case] = {"server_loop": _overhead(per[True], per[False])}
        ids = [r[0] for r in conn.execute("SELECT id FROM bench_ids LIMIT %s", (client_statements,)).fetchall()]
        conn.rollback()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for case, stmt in CLIENT_CASES.items():
            per = {True: [], False: []}
            for _ in range(client_rounds):
                for with_triggers in (True, False):
                    conn.execute(f"ALTER TABLE leads {'ENABLE' if with_triggers else 'DISABLE'} TRIGGER USER")
                    t0 = time.perf_counter()
                    for lead in ids:
                        conn.execute(stmt, (lead,), prepare=True)
                    per[with_triggers].append((time.perf_counter() - t0) / len(ids) * 1e6)
            conn.execute("ALTER TABLE leads ENABLE TRIGGER USER")
            out["cases"][case]["client_autocommit"] = _overhead(per[True], per[False])
    server.drop_db(name)
    return out


# --------------------------------------------------------------------------- report


def _n(x: float | int | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render(r: dict[str, Any]) -> str:
    m, s = r["machine"], r["server"]
    lines = [
        "deenroll benchmark",
        f"machine:  {m['nproc']} CPU(s), {m['cpu_model']}, {m['ram_gb']} GB RAM, Linux {m['kernel']}, Python {m['python']}; "
        f"load average {m['loadavg_start'][0]} at the start, {m.get('loadavg_end', ['?'])[0]} at the end",
        f"server:   PostgreSQL {s['version']} ({r['server_kind']}); "
        + ", ".join(f"{k}={v}" for k, v in s["settings"].items()),
    ]
    d = r["dataset"]
    lines.append(
        f"data set: {d['leads']:,} leads, {d['clients']} clients, {d['campaigns']} campaigns, {d['eligible']:,} eligible "
        f"({d['eligible_completed']:,} finished, {d['eligible_opted_out']:,} opted out); seed {r['options']['seed']!r}; "
        f"built in {d['build_s']} s, VACUUM ANALYZE {d['vacuum_s']} s, {d['size_mb']:,} MB")
    lines.append("")
    reps = r["options"]["repeats"]
    lines.append(f"(a) and (b): median of {reps} round(s), each on a fresh clone of the data set after a CHECKPOINT; "
                 "ratio = wall / lower-bound wall")
    head = f"{'measurement':<42}{'leads':>9}{'wall s':>9}{'leads/s':>9}{'ratio':>7}{'runner ms':>11}{'peak RSS MB':>13}  rounds (wall s)"
    lines += [head, "-" * len(head)]
    for row in r["measurements"]:
        lines.append(f"{row['name']:<42}{_n(row['leads']):>9}{row['wall_s']:>9.3f}{_n(row['leads_per_s']):>9}"
                     f"{_n(row['ratio'], 2):>7}{_n(row['runner_ms']):>11}{_n(row['peak_rss_mb'], 1):>13}  "
                     + ", ".join(f"{w:.2f}" for w in row["walls_s"]))
    lbs = [a["detail"] for a in r["measurements"][0]["attempts"]]
    med = {k: statistics.median(d[k] for d in lbs) for k in ("open_runs_s", "statement_s", "fold_s", "finish_commit_s")}
    lines.append(f"  lower bound, median steps: open runs {med['open_runs_s']:.3f} s, the statement {med['statement_s']:.3f} s, "
                 f"fold {med['fold_s']:.3f} s ({lbs[0]['delta_rows_folded']} delta rows), finish + commit {med['finish_commit_s']:.3f} s")
    for row in r["measurements"][1:]:
        lines.append(f"  {row['name']}: {row['detail']['batches']:,} batches over {row['detail']['clients']} clients; "
                     + ("one statement on an open connection, timed like the lower bound" if row["runner_ms"] is None else
                        f"process start and exit (wall - runner ms) {row['wall_s'] * 1000 - row['runner_ms']:,.0f} ms"))
    if r.get("in_database"):
        x = r["in_database"]
        lines.append(f"  in the database, one CALL as pg_cron sends it: ratio to the lower bound {x['call_100_ratio']:.2f} "
                     f"at batch 100 (target <= {TARGET_CALL_RATIO_100} at 1,000,000 leads), {x['call_1000_ratio']:.2f} "
                     f"at batch 1000; data set {d['leads']:,} leads")
        lines.append(f"  queued CALL run_de_enrollment() right after a complete run (nothing to do, a new session each): "
                     f"median {x['queued_median_ms']:.1f} ms, longest {x['queued_max_ms']:.1f} ms of {len(x['queued_ms'])} "
                     f"(target < {TARGET_QUEUED_MS:.0f} ms)")
    if r.get("previous_release"):
        x = r["previous_release"]
        lines.append("  previous release: n/a (" + x["error"] + ")" if "error" in x else
                     f"  deenroll run --batch-size {x['batch_size']}: this checkout {x['current_wall_s']:.3f} s, previous "
                     f"release {x['commit'][:12]} {x['previous_wall_s']:.3f} s (its own migrate first, untimed); "
                     f"ratio this / previous {x['ratio']:.2f} (target <= {TARGET_PREVIOUS_RATIO})")
    es = r["end_state"]
    ref = es["reference"]
    lines.append(f"end state: {'identical' if es['identical'] else 'DIFFERENT'} in all {len(es['states'])} measurements "
                 f"({ref['de_enrolled']:,} leads de-enrolled: {ref['completed']:,} completed, {ref['opted_out']:,} opted out; "
                 f"{ref['log_rows']:,} log rows; counters and run totals alike)")
    for name, diff in es["differences"].items():
        lines.append(f"  {name}: " + "; ".join(diff))
    broken = {n: inv for n, inv in r["invariants"].items() if not inv["ok"]}
    lines.append("invariants after every measurement (nothing due, counters exact, no pending deltas, one log row "
                 "per de-enrolled lead, runs success): " + ("ok" if not broken else "BROKEN " + json.dumps(broken)))
    if r.get("idle"):
        small, large = r["idle"]["small"], r["idle"]["large"]
        lines += ["", f"idle run (nothing eligible; everything de-enrolled first, VACUUM ANALYZE, 1 warm-up, median of {small['runs']}):"]
        for x in (small, large):
            lines.append(f"  {x['leads']:>10,} leads: wall {x['median_wall_s']:.3f} s (runs {x['walls_s']}), "
                         f"runner {x['median_runner_ms']} ms, claim queries {x['sql_claim_ms_all_clients']} ms, "
                         f"peak RSS {x['peak_rss_mb']} MB")
        lines.append(f"  ratio large/small: wall {r['idle']['wall_ratio']:.2f}, runner ms {r['idle']['runner_ratio']:.2f}")
    if r.get("triggers"):
        t = r["triggers"]
        lines += ["", "triggers of deenroll on leads (counter deltas, campaign marks), single-row UPDATEs of leads, µs per statement "
                  f"(medians; server loop: {t['rounds']} rounds of {t['statements']:,} statements in a DO block; "
                  f"client: {t['client_rounds']} rounds of {t['client_statements']:,} autocommit transactions):",
                  f"  {'':<38}{'server loop':>30}{'client autocommit':>36}",
                  f"  {'':<38}{'with':>9}{'without':>9}{'overhead':>12}{'with':>11}{'without':>9}{'overhead':>16}"]
        for case, v in t["cases"].items():
            a, b = v["server_loop"], v["client_autocommit"]
            lines.append(f"  {case:<38}{a['with_triggers_us']:>9.1f}{a['without_triggers_us']:>9.1f}"
                         f"{a['overhead_us']:>+7.1f} ({a['overhead_pct']:>+4.0f}%)"
                         f"{b['with_triggers_us']:>9.1f}{b['without_triggers_us']:>9.1f}"
                         f"{b['overhead_us']:>+9.1f} ({b['overhead_pct']:>+4.0f}%)")
    if "workers" in r:
        w = r["workers"]
        lines += ["", "workers at batch size 100 (ratio to the lower bound): "
                  + (f"1 worker {w['w1_ratio']:.2f}, 2 workers {w['w2_ratio']:.2f}" if w else
                     "1 worker see above, 2 workers n/a (`deenroll run --help` lists no --workers)")]
    if r.get("campaigns"):
        lines += [""] + campaign_scaling.render(r["campaigns"])
    if "migrate_wait" in r:
        lines += ["", "longest platform write wait during `deenroll migrate` (one UPDATE of a random lead every "
                  "5 ms from the baseline to the latest migration): "]
        for x in r["migrate_wait"]:
            lines.append(f"  {x['leads']:>12,} leads: longest {x['longest_wait_ms']} ms (p99 {x['p99_ms']} ms, "
                         f"{x['writes']:,} writes, {x['waits_at_or_over_target']} at or over {x['target_ms']:.0f} ms"
                         + (f", {x['failed_writes']} failed" if x.get("failed_writes") else "")
                         + f"), migrate {x['migrate_s']} s, load average {x['loadavg']}")
    if "migrate_upgrade" in r:
        lines += [""] + render_upgrade(r["migrate_upgrade"])
    lines += ["", "targets (information, not assertions):"]
    for t in r["targets"]:
        lines.append(f"  {t['name']:<52}{t['value']:>10}  {'<=':>2} {t['limit']:<6} {verdict(t['met'])}")
    lines.append(f"total benchmark time {r['total_s']:.0f} s")
    return "\n".join(lines)


def render_upgrade(u: dict[str, Any]) -> list[str]:
    """The upgrade during a run (bench/migrate_wait.py)."""
    head = "platform writes during an upgrade while a run works (one UPDATE of a random lead every 5 ms):"
    if "error" in u:
        return [head + f" n/a ({u['error']})"]
    m, run, c = u["migrate"], u["run"], u["checks"]
    totals = run["totals"] or {}

    def waits(w: dict[str, Any]) -> str:
        return (f"longest {w['longest_wait_ms']} ms (p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, {w['writes']:,} writes, "
                f"{w['waits_at_or_over_target']} at or over {u['target_ms']:.0f} ms, {w['failed_writes']} failed)")

    return [
        head,
        f"  {u['leads']:,} leads, {u['due_before']:,} due; `run --batch-size {u['batch_size']}` of {u['from']} "
        f"({u['previous_release_commit'][:12]}), then `migrate` to {u['to']} after {m['run_batches_before']} batches "
        f"({u['definitions_marked_changed']} definitions marked changed)",
        f"  migrate: exit {m['exit_code']} in {m['seconds']} s, {m['installed']} functions and views installed"
        + (f"; {m['stderr_last_line']}" if m["exit_code"] else ""),
        f"  run: exit {run['exit_code']} in {run['seconds']} s ({'still running' if run['outlasted_migrate'] else 'ended'} "
        f"when migrate ended), {totals.get('leads_de_enrolled', 0):,} de-enrolled, {totals.get('failed', 0)} clients failed"
        + (f"; {run['stderr_last_line']}" if run["exit_code"] else ""),
        f"  writes during the migrate: {waits(u['writes_during_migrate'])}",
        f"  writes during the run:     {waits(u['writes_during_run'])}",
        f"  after the run: {c['runs_left_running']} runs left running, {c['leads_logged_twice']} leads logged twice, "
        f"{c['leads_with_two_entries_of_ours']} with two history entries of ours for a campaign, {c['due_left']} due "
        f"({c['due_left_untouched_by_writer']} the writer never touched); load average {u['loadavg']}",
    ]


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    ms = {m["name"]: m for m in r["measurements"]}
    out = []
    for bs, limit in ((100, TARGET_RATIO_100), (1000, TARGET_RATIO_1000)):
        m = ms[f"deenroll run --batch-size {bs}"]
        out.append({"name": f"ratio run/lower bound at batch size {bs}", "value": f"{m['ratio']:.2f}",
                    "limit": limit, "met": m["ratio"] <= limit})
    if r.get("in_database"):
        x = r["in_database"]
        out.append({"name": "ratio one CALL/lower bound at batch size 100", "value": f"{x['call_100_ratio']:.2f}",
                    "limit": TARGET_CALL_RATIO_100, "met": x["call_100_ratio"] <= TARGET_CALL_RATIO_100})
        out.append({"name": "queued CALL with nothing to do, longest (ms)", "value": f"{x['queued_max_ms']:.1f}",
                    "limit": TARGET_QUEUED_MS, "met": x["queued_max_ms"] < TARGET_QUEUED_MS})
    if r.get("previous_release") and "error" not in r["previous_release"]:
        v = r["previous_release"]["ratio"]
        out.append({"name": "ratio run/previous release's run, batch size 100", "value": f"{v:.2f}",
                    "limit": TARGET_PREVIOUS_RATIO, "met": v <= TARGET_PREVIOUS_RATIO})
    if r.get("workers"):
        v = r["workers"]["w2_ratio"]
        out.append({"name": "ratio run/lower bound at batch size 100, 2 workers", "value": f"{v:.2f}",
                    "limit": TARGET_RATIO_100_W2, "met": v <= TARGET_RATIO_100_W2})
    if r.get("campaigns"):
        c = r["campaigns"]
        per = c["base_campaigns_per_client"] + c["extra_campaigns_per_client"]
        for what, key in (("run", "run_runner_ratio"), ("idle run", "idle_runner_ratio")):
            out.append({"name": f"{what} {per:,} / {c['base_campaigns_per_client']} campaigns per client (runner ms)",
                        "value": f"{c[key]:.2f}", "limit": TARGET_CAMPAIGN_RATIO, "met": c[key] <= TARGET_CAMPAIGN_RATIO})
    for x in r.get("migrate_wait") or []:
        out.append({"name": f"longest write wait, migrate at {x['leads']:,} leads (ms)", "value": f"{x['longest_wait_ms']}",
                    "limit": TARGET_MIGRATE_WAIT_MS,
                    "met": x["longest_wait_ms"] is not None and x["longest_wait_ms"] < TARGET_MIGRATE_WAIT_MS
                           and not x.get("failed_writes")})
    if r.get("migrate_upgrade") and "error" not in r["migrate_upgrade"]:
        u = r["migrate_upgrade"]
        w = u["writes_during_migrate"]
        out.append({"name": f"longest write wait, upgrade in a run, {u['leads']:,} (ms)",
                    "value": f"{w['longest_wait_ms']}", "limit": TARGET_MIGRATE_WAIT_MS,
                    "met": w["longest_wait_ms"] is not None and w["longest_wait_ms"] < TARGET_MIGRATE_WAIT_MS
                           and not w["failed_writes"]})
        out.append({"name": "exit code of that upgrade's migrate", "value": str(u["migrate"]["exit_code"]),
                    "limit": 0, "met": u["migrate"]["exit_code"] == 0})
    if r.get("idle"):
        v = r["idle"]["wall_ratio"]
        out.append({"name": f"idle run {r['idle']['large']['leads']:,} / {r['idle']['small']['leads']:,} leads (wall)",
                    "value": f"{v:.2f}", "limit": TARGET_IDLE_RATIO, "met": v <= TARGET_IDLE_RATIO})
    rss = max(m["peak_rss_mb"] for m in r["measurements"]
              if m["peak_rss_mb"] is not None and not m["name"].startswith("previous release"))
    out.append({"name": "runner peak RSS (MB)", "value": f"{rss:.1f}", "limit": TARGET_RSS_MB, "met": rss <= TARGET_RSS_MB})
    return out


# --------------------------------------------------------------------------- main


def benchmark(database_url: str | None, leads: int, clients: int, campaigns: int, eligible_fraction: float,
              seed: str, repeats: int, skip_idle: bool, idle_small_leads: int, idle_repeats: int,
              trigger_statements: int, client_statements: int, skip_triggers: bool,
              campaign_scaling_options: dict[str, Any] | None = None,
              migrate_wait_leads: tuple[int, ...] = (), migrate_upgrade_leads: int | None = None,
              skip_previous: bool = False, previous_release: str | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"options": {"leads": leads, "clients": clients, "campaigns": campaigns,
                                          "eligible_fraction": eligible_fraction, "seed": seed,
                                          "repeats": repeats},
                              "machine": machine_info()}
    with open_server(database_url) as server, ExitStack() as stack:
        result["server_kind"] = server.kind if server.kind == "embedded" else f"given: {redact(database_url or '')}"
        with server.admin() as conn:
            result["server"] = server_info(conn)
        say(f"PostgreSQL {result['server']['version']}; building {leads:,} leads, {clients} clients, {campaigns} campaigns")
        data = build_template(server, "tpl", leads, clients, campaigns, eligible_fraction, seed)
        result["dataset"] = asdict(data)
        say(f"data set built in {data.build_s} s ({data.eligible:,} eligible), VACUUM ANALYZE {data.vacuum_s} s")

        attempts: dict[str, list[Measurement]] = {"lower bound": [], "run 100": [], "run 1000": []}
        with_workers = workers_supported()
        if with_workers:
            attempts["run 100 w2"] = []
        attempts["call 100"], attempts["call 1000"] = [], []
        previous: tuple[Path, str] | None = None
        if not skip_previous:
            code = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deenroll-previous-release-")))
            try:
                previous = code, migrate_wait.code_at(previous_release or previous_release_commit(), code)
                attempts["previous 100"] = []
                say(f"previous release: {previous[1][:12]}, its code in {code}")
            except RuntimeError as exc:  # no git history to take it from
                result["previous_release"] = {"error": str(exc)}
        queued_ms: list[float] = []
        states: dict[str, dict[str, Any]] = {}
        checks: dict[str, dict[str, Any]] = {}
        keep_for_idle: str | None = None
        # Interleaved, each on a fresh clone after a CHECKPOINT: a drift of the machine
        # during the benchmark touches every side alike.
        for rep in range(1, repeats + 1):
            for key in attempts:
                name = server.create_db(key.replace(" ", "_"), template=data.template)
                dsn = server.dsn(name)
                server.checkpoint()
                say(f"round {rep}/{repeats}: {key}")
                batch = int(key.split()[1]) if key != "lower bound" else 0
                if key == "lower bound":
                    attempts[key].append(lower_bound(dsn))
                elif key.startswith("call"):
                    attempts[key].append(call_run(dsn, batch))
                elif key.startswith("previous"):
                    assert previous is not None
                    attempts[key].append(previous_run(dsn, previous[0], previous[1], batch))
                else:
                    attempts[key].append(runner(dsn, batch, 2 if key.endswith("w2") else 1))
                label = f"{key} #{rep}"
                checks[label] = invariants(dsn)
                states[label] = end_state(dsn)
                if key.startswith("call"):
                    queued_ms += queued_calls(dsn, QUEUED_CALLS)  # after the end state: it may add run rows
                if key == "run 1000" and rep == repeats and not skip_idle:
                    keep_for_idle = name  # everything is de-enrolled: the large idle data set
                else:
                    server.drop_db(name)

        lower_wall = statistics.median(m.wall_s for m in attempts["lower bound"])
        result["measurements"] = [summarize(a, None if k == "lower bound" else lower_wall) for k, a in attempts.items()]
        ratios = {m["name"]: m["ratio"] for m in result["measurements"]}
        result["workers"] = ({"w1_ratio": ratios["deenroll run --batch-size 100"],
                              "w2_ratio": ratios["deenroll run --batch-size 100 --workers 2"]} if with_workers else None)
        walls = {k: statistics.median(m.wall_s for m in a) for k, a in attempts.items()}
        result["in_database"] = {
            "call_100_ratio": round(walls["call 100"] / lower_wall, 2) if lower_wall else None,
            "call_1000_ratio": round(walls["call 1000"] / lower_wall, 2) if lower_wall else None,
            "queued_ms": queued_ms,
            "queued_median_ms": round(statistics.median(queued_ms), 2),
            "queued_max_ms": max(queued_ms),
        }
        if previous is not None:
            result["previous_release"] = {
                "commit": previous[1], "batch_size": 100,
                "previous_wall_s": round(walls["previous 100"], 3), "current_wall_s": round(walls["run 100"], 3),
                "ratio": round(walls["run 100"] / walls["previous 100"], 2),
            }
        ref_name = "lower bound #1"
        ref = states[ref_name]
        diffs = {n: differences(ref, st) for n, st in states.items() if differences(ref, st)}
        result["invariants"] = checks
        result["end_state"] = {"identical": not diffs, "reference": ref, "differences": diffs, "states": states}

        if not skip_idle:
            say(f"idle runs at {idle_small_leads:,} and {leads:,} leads")
            small_data = build_template(server, "tpl_small", idle_small_leads, clients, campaigns, eligible_fraction, seed)
            small = idle(server, small_data, idle_repeats, "small")
            large = idle(server, data, idle_repeats, "large", clone=keep_for_idle)
            server.drop_db(small_data.template)
            result["idle"] = {
                "small": small, "large": large,
                "wall_ratio": round(large["median_wall_s"] / small["median_wall_s"], 3),
                "runner_ratio": round(large["median_runner_ms"] / max(small["median_runner_ms"], 1), 3),
            }
        if not skip_triggers:
            say(f"trigger overhead: {trigger_statements:,} statements per case and variant")
            result["triggers"] = trigger_overhead(server, data, trigger_statements, client_statements)
        server.drop_db(data.template)
        if campaign_scaling_options is not None:
            say("campaign-count scaling")
            result["campaigns"] = campaign_scaling.measure(server, **campaign_scaling_options)
        if migrate_wait_leads:
            result["migrate_wait"] = []
            for n in migrate_wait_leads:
                say(f"platform writes while migrating {n:,} leads")
                name = server.create_db(f"mw_{n}")
                x = migrate_wait.measure(server.dsn(name), n)
                x["loadavg"] = round(os.getloadavg()[0], 2)
                result["migrate_wait"].append(x)
                server.drop_db(name)
        if migrate_upgrade_leads:
            say(f"platform writes while upgrading {migrate_upgrade_leads:,} leads during a run")
            name = server.create_db(f"mu_{migrate_upgrade_leads}")
            try:
                x = migrate_wait.measure_upgrade(server.dsn(name), migrate_upgrade_leads)
                x["loadavg"] = round(os.getloadavg()[0], 2)
            except RuntimeError as exc:  # no previous release to start from (no git history)
                x = {"error": str(exc)}
            result["migrate_upgrade"] = x
            server.drop_db(name)
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = targets(result)
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", help="A database on a server where this user may CREATE DATABASE; "
              "default: a private embedded PostgreSQL in a temporary directory.")
@click.option("--leads", type=click.IntRange(min=1), default=1_000_000, show_default=True)
@click.option("--clients", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--campaigns", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--eligible-fraction", type=click.FloatRange(0.0, 1.0), default=0.1, show_default=True,
              help="Share of the leads due for de-enrollment.")
@click.option("--seed", default="deenroll-bench", show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Rounds of (a), (b) 100 and (b) 1000, each on a fresh clone; the table shows medians.")
@click.option("--skip-idle", is_flag=True, help="Skip the idle-run measurement.")
@click.option("--idle-small-leads", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Size of the smaller idle data set (the larger one is --leads).")
@click.option("--idle-repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--skip-triggers", is_flag=True, help="Skip the trigger-overhead measurement.")
@click.option("--trigger-statements", type=click.IntRange(min=1), default=20_000, show_default=True)
@click.option("--client-statements", type=click.IntRange(min=1), default=2_000, show_default=True,
              help="Autocommit statements per case and variant in the client-side trigger measurement.")
@click.option("--skip-campaign-scaling", is_flag=True, help="Skip the campaign-count scaling measurement.")
@click.option("--cs-leads", type=click.IntRange(min=1), default=campaign_scaling.LEADS, show_default=True,
              help="Campaign-count scaling: leads of both data sets.")
@click.option("--cs-clients", type=click.IntRange(min=1), default=campaign_scaling.CLIENTS, show_default=True)
@click.option("--cs-base", type=click.IntRange(min=1), default=campaign_scaling.BASE_CAMPAIGNS, show_default=True,
              help="Campaign-count scaling: campaigns per client in both data sets.")
@click.option("--cs-extra", type=click.IntRange(min=1), default=campaign_scaling.EXTRA_CAMPAIGNS, show_default=True,
              help="Campaign-count scaling: finished campaigns per client added to the second data set.")
@click.option("--cs-eligible-fraction", type=click.FloatRange(0.0, 1.0), default=campaign_scaling.ELIGIBLE_FRACTION,
              show_default=True)
@click.option("--cs-repeats", type=click.IntRange(min=1), default=campaign_scaling.REPEATS, show_default=True)
@click.option("--migrate-wait-leads", type=click.IntRange(min=1), multiple=True, default=(2_000_000, 10_000_000),
              show_default=True, help="Sizes for the platform-write wait during migrate (repeat the option).")
@click.option("--migrate-upgrade-leads", type=click.IntRange(min=1000), default=2_000_000, show_default=True,
              help="Size for the platform-write wait during an upgrade while a run works.")
@click.option("--skip-migrate-upgrade", is_flag=True, help="Skip the upgrade during a run.")
@click.option("--skip-migrate-wait", is_flag=True, help="Skip the platform-write waits during migrate (both scenarios).")
@click.option("--skip-previous-release", "skip_previous", is_flag=True,
              help="Skip the previous release's `deenroll run` beside this checkout's.")
@click.option("--previous-release", metavar="REV",
              help="Git revision of the previous release; default: the commit before the one that added "
                   "functions/run_de_enrollment.sql.")
@click.option("--json-out", type=click.Path(dir_okay=False, writable=True), help="Also write the figures as JSON here.")
def main(database_url: str | None, leads: int, clients: int, campaigns: int, eligible_fraction: float, seed: str,
         repeats: int, skip_idle: bool, idle_small_leads: int, idle_repeats: int, skip_triggers: bool, trigger_statements: int,
         client_statements: int, skip_campaign_scaling: bool, cs_leads: int, cs_clients: int, cs_base: int,
         cs_extra: int, cs_eligible_fraction: float, cs_repeats: int, migrate_wait_leads: tuple[int, ...],
         migrate_upgrade_leads: int, skip_migrate_upgrade: bool, skip_migrate_wait: bool, skip_previous: bool,
         previous_release: str | None, json_out: str | None) -> None:
    """Benchmark `deenroll run` against a set-based lower bound (see the module docstring)."""
    if campaigns < clients:
        raise click.BadParameter("needs at least one campaign per client", param_hint="--campaigns")
    result = benchmark(database_url, leads, clients, campaigns, eligible_fraction, seed, repeats, skip_idle, idle_small_leads,
                       idle_repeats, trigger_statements, client_statements, skip_triggers,
                       None if skip_campaign_scaling else {
                           "leads": cs_leads, "clients": cs_clients, "base": cs_base, "extra": cs_extra,
                           "eligible_fraction": cs_eligible_fraction, "seed": seed, "repeats": cs_repeats,
                           "idle_repeats": idle_repeats},
                       () if skip_migrate_wait else tuple(migrate_wait_leads),
                       None if skip_migrate_wait or skip_migrate_upgrade else migrate_upgrade_leads,
                       skip_previous, previous_release)
    print(render(result), flush=True)
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2, default=str) + "\n")
        say(f"figures written to {json_out}")


if __name__ == "__main__":
    main()
