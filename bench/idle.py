"""Idle runs: `deenroll run` with nothing eligible, on a data set whose due leads a real run has
already de-enrolled."""

from __future__ import annotations

import statistics
import time
from typing import Any

import click
import psycopg

from bench import campaign_scaling
from bench.common import checkpoint, new_db, run_child
from bench.servers import Server
from bench.templates import DataSet


def idle(server: Server, data: DataSet, repeats: int, label: str, clone: str | None = None) -> dict[str, Any]:
    """De-enroll everything with a real run, VACUUM ANALYZE, then time runs with nothing eligible."""
    name = clone or new_db(server, f"idle_{label}", data.template)
    dsn = server.dsn(name)
    if clone is None:
        first = run_child(dsn, "--batch-size", "1000")
        if first.code != 0:
            raise click.ClickException(f"the de-enrolling run before the idle runs exited {first.code}")
    children = campaign_scaling.idle_runs(dsn, repeats, before=lambda: checkpoint(server))
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
