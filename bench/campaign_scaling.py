#!/usr/bin/env python3
"""Campaign-count scaling of `deenroll run`: the same leads and the same due leads, with few
campaigns per client or with thousands of finished ones piled up beside them.

    .venv/bin/python bench/campaign_scaling.py [--database-url URL] [--leads N] ...

Two data sets, built once each as a template:
  few:  deenroll.dataset.build_dataset with --base-campaigns campaigns per client.
  many: a copy of `few`, plus --extra-campaigns deactivated campaigns per client (sequences of
        10 messages, finished long ago). Into each go one lead that stalled mid-sequence
        (active, never finished, never due) and one lead that finished earlier (inactive),
        both taken from the `few` campaigns' leads that are not due. Same leads, same due
        leads; only where the undue ones sit differs.
Measured on fresh clones, rounds interleaved: `deenroll run --batch-size 100` (a run that
de-enrolls every due lead) and, on the result, idle runs (nothing due; one warm-up, median of
--idle-repeats). Ratios are many / few, of the wall time (process start included) and of the
runner's own duration_ms. bench/benchmark.py prints this figure too; this script is the
quick way to get it alone.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import click
import psycopg

if __package__ in (None, ""):  # run as a file: the package `bench` is the checkout's
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.common import Finished, checkpoint, machine_info, new_db, open_server, run_child  # noqa: E402
from bench.servers import Server  # noqa: E402
from deenroll.database import Target  # noqa: E402
from deenroll.dataset import build_dataset  # noqa: E402
from deenroll.migrate.commands import migrate  # noqa: E402

# The defaults of this measurement, alone or inside bench/benchmark.py.
LEADS = 200_000
CLIENTS = 5
BASE_CAMPAIGNS = 10
EXTRA_CAMPAIGNS = 10_000
ELIGIBLE_FRACTION = 0.05
REPEATS = 3

_say = partial(common.say, "campaigns")


def _due(dsn: str) -> tuple[int, int]:
    """(due leads by the full scan of every campaign, campaigns)."""
    with psycopg.connect(dsn) as conn:
        due = conn.execute(
            "SELECT coalesce(sum(completed + opted_out), 0)::bigint FROM count_leads_for_de_enrollment(NULL)").fetchone()[0]
        campaigns = conn.execute("SELECT count(*) FROM campaigns").fetchone()[0]
    return int(due), int(campaigns)


def build_pair(server: Server, leads: int, clients: int, base: int, extra: int, eligible_fraction: float,
               seed: str) -> dict[str, Any]:
    """The two templates; returns their names and what they hold."""
    few = new_db(server, "cs_few")
    dsn = server.dsn(few)
    migrate(Target(dsn, "benchmark"))
    with psycopg.connect(dsn) as conn:
        build_dataset(conn, clients=clients, campaigns=clients * base, leads=leads,
                      eligible_fraction=eligible_fraction, seed=seed, tag="bench")
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    many = new_db(server, "cs_many", few)
    with psycopg.connect(server.dsn(many)) as conn:
        conn.execute(
            """INSERT INTO campaigns (id, client_id, name, messages, is_active, deactivated_at, created_at)
               SELECT md5('finished:' || k.client_id || ':' || j)::uuid, k.client_id, '[bench] finished ' || j,
                      (SELECT jsonb_agg(jsonb_build_object('position', m, 'body', 'Message ' || m) ORDER BY m)
                         FROM generate_series(1, 10) AS m),
                      false, now() - interval '400 days', now() - interval '800 days' - j * interval '1 hour'
                 FROM (SELECT DISTINCT client_id FROM campaigns) AS k, generate_series(1, %s) AS j""",
            (extra,))
        moved = conn.execute(
            """WITH cand AS (
                   SELECT l.id, l.client_id,
                          row_number() OVER (PARTITION BY l.client_id, l.is_active ORDER BY l.id) AS rn
                     FROM leads AS l JOIN campaigns AS c ON c.id = l.campaign_link_id
                    WHERE (l.is_active AND l.opted_out IS NOT TRUE
                           AND l.current_message_position < jsonb_array_length(c.messages))
                       OR l.is_active IS NOT TRUE)
               UPDATE leads AS l SET campaign_link_id = md5('finished:' || cand.client_id || ':' || cand.rn)::uuid
                 FROM cand
                WHERE cand.id = l.id AND cand.rn <= %s""",
            (extra,)).rowcount
        conn.execute("SELECT apply_campaign_stats_deltas()")
        conn.commit()
    with psycopg.connect(server.dsn(many), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    few_due, few_campaigns = _due(dsn)
    many_due, many_campaigns = _due(server.dsn(many))
    if few_due != many_due:
        raise click.ClickException(f"the two data sets differ in due leads: {few_due} vs {many_due}")
    return {"few": few, "many": many, "leads": leads, "clients": clients, "due": few_due,
            "campaigns_few": few_campaigns, "campaigns_many": many_campaigns, "leads_moved": moved}


def idle_runs(dsn: str, repeats: int, before: Callable[[], object] = lambda: None) -> list[Finished]:
    """VACUUM ANALYZE, `before()` (a CHECKPOINT, say), one warm-up run (caches, the first visit of
    the index entries the last run killed), then `repeats` runs that must find nothing due."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    before()
    run_child(dsn)
    children = []
    for _ in range(repeats):
        child = run_child(dsn)
        if child.code != 0 or child.report["totals"]["leads_de_enrolled"] != 0:
            raise click.ClickException(f"an idle run exited {child.code} or de-enrolled leads: {child.report['totals']}")
        children.append(child)
    return children


def measure(server: Server, leads: int, clients: int, base: int, extra: int,
            eligible_fraction: float, seed: str, repeats: int, idle_repeats: int) -> dict[str, Any]:
    """Both data sets, `repeats` interleaved rounds of a full run then idle runs; medians and ratios."""
    t0 = time.perf_counter()
    pair = build_pair(server, leads, clients, base, extra, eligible_fraction, seed)
    _say(f"built: {pair['campaigns_few']:,} vs {pair['campaigns_many']:,} campaigns, {pair['due']:,} due "
         f"({time.perf_counter() - t0:.0f} s)")
    out: dict[str, Any] = {k: v for k, v in pair.items() if k not in ("few", "many")}
    out |= {"base_campaigns_per_client": base, "extra_campaigns_per_client": extra, "repeats": repeats,
            "idle_repeats": idle_repeats}
    sides: dict[str, dict[str, list]] = {k: {"run_s": [], "run_ms": [], "idle_s": [], "idle_ms": [], "load": []}
                                         for k in ("few", "many")}
    for rep in range(1, repeats + 1):
        for side in ("few", "many"):
            name = new_db(server, f"cs_{side}_run", pair[side])
            dsn = server.dsn(name)
            checkpoint(server)
            _say(f"round {rep}/{repeats}: {side}, load average {os.getloadavg()[0]:.2f}")
            sides[side]["load"].append(round(os.getloadavg()[0], 2))
            child = run_child(dsn, "--batch-size", "100")
            totals = child.report["totals"]
            if child.code != 0 or totals["leads_de_enrolled"] != pair["due"]:
                raise click.ClickException(f"the run on '{side}' exited {child.code}: {totals}")
            sides[side]["run_s"].append(round(child.wall_s, 3))
            sides[side]["run_ms"].append(child.report["duration_ms"])
            idle = idle_runs(dsn, idle_repeats)
            sides[side]["idle_s"].append(round(statistics.median(c.wall_s for c in idle), 3))
            sides[side]["idle_ms"].append(int(statistics.median(c.report["duration_ms"] for c in idle)))
            server.drop_db(name)
    for side in ("few", "many"):
        s = sides[side]
        out[side] = s | {"run_wall_s": statistics.median(s["run_s"]), "run_runner_ms": statistics.median(s["run_ms"]),
                         "idle_wall_s": statistics.median(s["idle_s"]), "idle_runner_ms": statistics.median(s["idle_ms"])}
    f, m = out["few"], out["many"]
    out["run_wall_ratio"] = round(m["run_wall_s"] / f["run_wall_s"], 2)
    out["run_runner_ratio"] = round(m["run_runner_ms"] / max(f["run_runner_ms"], 1), 2)
    out["idle_wall_ratio"] = round(m["idle_wall_s"] / f["idle_wall_s"], 2)
    out["idle_runner_ratio"] = round(m["idle_runner_ms"] / max(f["idle_runner_ms"], 1), 2)
    for side in ("few", "many"):
        server.drop_db(pair[side])
    out["total_s"] = round(time.perf_counter() - t0, 1)
    return out


def render(r: dict[str, Any]) -> list[str]:
    f, m = r["few"], r["many"]
    return [
        f"campaign-count scaling: {r['leads']:,} leads, {r['due']:,} due, {r['clients']} clients; "
        f"{r['base_campaigns_per_client']} vs {r['base_campaigns_per_client'] + r['extra_campaigns_per_client']:,} "
        f"campaigns per client ({r['campaigns_few']:,} vs {r['campaigns_many']:,}; the extra ones finished and "
        f"deactivated, each holding one stalled active lead and one finished lead); median of {r['repeats']} round(s)",
        f"  run --batch-size 100: wall {f['run_wall_s']:.3f} s vs {m['run_wall_s']:.3f} s, ratio {r['run_wall_ratio']:.2f}; "
        f"runner {f['run_runner_ms']:.0f} ms vs {m['run_runner_ms']:.0f} ms, ratio {r['run_runner_ratio']:.2f}",
        f"  idle run:             wall {f['idle_wall_s']:.3f} s vs {m['idle_wall_s']:.3f} s, ratio {r['idle_wall_ratio']:.2f}; "
        f"runner {f['idle_runner_ms']:.0f} ms vs {m['idle_runner_ms']:.0f} ms, ratio {r['idle_runner_ratio']:.2f}",
        f"  load average at each round: few {f['load']}, many {m['load']}",
    ]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", help="A server where this user may CREATE DATABASE; default: a private embedded one.")
@click.option("--leads", type=click.IntRange(min=1), default=LEADS, show_default=True)
@click.option("--clients", type=click.IntRange(min=1), default=CLIENTS, show_default=True)
@click.option("--base-campaigns", type=click.IntRange(min=1), default=BASE_CAMPAIGNS, show_default=True,
              help="Campaigns per client in both data sets.")
@click.option("--extra-campaigns", type=click.IntRange(min=1), default=EXTRA_CAMPAIGNS, show_default=True,
              help="Finished campaigns per client added in the second data set.")
@click.option("--eligible-fraction", type=click.FloatRange(0.0, 1.0), default=ELIGIBLE_FRACTION, show_default=True)
@click.option("--seed", default="deenroll-bench", show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=REPEATS, show_default=True)
@click.option("--idle-repeats", type=click.IntRange(min=1), default=5, show_default=True)
def main(database_url: str | None, leads: int, clients: int, base_campaigns: int, extra_campaigns: int,
         eligible_fraction: float, seed: str, repeats: int, idle_repeats: int) -> None:
    """Campaign-count scaling of `deenroll run` alone (see the module docstring)."""
    with open_server(database_url) as server:
        result = measure(server, leads, clients, base_campaigns, extra_campaigns,
                         eligible_fraction, seed, repeats, idle_repeats)
    result["machine"] = machine_info()
    print("\n".join(render(result)), flush=True)
    print(json.dumps({k: result[k] for k in ("run_wall_ratio", "run_runner_ratio", "idle_wall_ratio",
                                              "idle_runner_ratio")}), flush=True)


if __name__ == "__main__":
    main()
