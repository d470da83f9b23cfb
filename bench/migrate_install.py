"""Platform writes while `deenroll migrate` installs deenroll: a database at the baseline taken to
the latest migration while a writer updates a random lead at a steady pace."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import psycopg

from bench import common
from bench.baseline import build
from bench.platform_writer import TARGET_MS, start_writer, stop_writer, waits_between
from deenroll.database import Target
from deenroll.migrate import commands

say = partial(common.say, "migrate-wait")


def measure(dsn: str, leads: int, clients: int = 20, campaigns: int = 200, interval_ms: float = 5.0) -> dict[str, Any]:
    """Build `leads` leads at the baseline in the empty database `dsn`, then migrate it to the
    latest migration while a writer updates a random lead every `interval_ms`; the writes' waits."""
    say(f"{leads:,} leads: building the baseline data set")
    build_s = build(dsn, leads, clients, campaigns)
    say(f"{leads:,} leads: built in {build_s:.1f} s; migrating while the platform writes")
    writer = start_writer(dsn, leads, interval_ms)
    started = time.perf_counter()
    result = commands.migrate(Target(dsn, "bench"))
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
