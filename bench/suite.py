"""The whole benchmark in order, on one server: the data set, the measured rounds, idle runs,
trigger overhead, campaign-count scaling and the platform's writes during migrate; one dict of
figures, judged against the targets."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from functools import partial
from typing import Any

import psycopg

from bench import campaign_scaling, common, debian, migrate_install, migrate_upgrade
from bench.common import machine_info, new_db, open_server
from bench.idle import idle
from bench.rounds import measure_rounds
from bench.targets import targets
from bench.templates import build_template
from bench.triggers import trigger_overhead
from deenroll.database import redact

say = partial(common.say, "bench")

SERVER_SETTINGS = ("shared_buffers", "work_mem", "max_wal_size", "fsync", "synchronous_commit",
                   "wal_sync_method", "full_page_writes", "checkpoint_timeout", "autovacuum")


def server_info(conn: psycopg.Connection) -> dict[str, Any]:
    version = conn.execute("SHOW server_version").fetchone()[0]
    settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in SERVER_SETTINGS}
    return {"version": version, "version_num": conn.info.server_version, "settings": settings}


def benchmark(database_url: str | None, leads: int, clients: int, campaigns: int, eligible_fraction: float,
              seed: str, repeats: int, skip_idle: bool, idle_small_leads: int, idle_repeats: int,
              trigger_statements: int, client_statements: int, skip_triggers: bool,
              campaign_scaling_options: dict[str, Any] | None = None,
              migrate_wait_leads: tuple[int, ...] = (), migrate_upgrade_leads: int | None = None,
              skip_previous: bool = False, previous_release: str | None = None,
              skip_debian: bool = False) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"options": {"leads": leads, "clients": clients, "campaigns": campaigns,
                                          "eligible_fraction": eligible_fraction, "seed": seed,
                                          "repeats": repeats},
                              "machine": machine_info()}
    with open_server(database_url) as server:
        result["server_kind"] = server.kind if server.kind == "embedded" else f"given: {redact(database_url or '')}"
        with server.admin() as conn:
            result["server"] = server_info(conn)
        say(f"PostgreSQL {result['server']['version']}; building {leads:,} leads, {clients} clients, {campaigns} campaigns")
        data = build_template(server, "tpl", leads, clients, campaigns, eligible_fraction, seed)
        result["dataset"] = asdict(data)
        say(f"data set built in {data.build_s} s ({data.eligible:,} eligible), VACUUM ANALYZE {data.vacuum_s} s")

        figures, keep_for_idle = measure_rounds(server, data, repeats, not skip_idle, skip_previous, previous_release)
        result |= figures

        if not skip_debian:
            result["debian_pg15"] = debian.measure(leads, clients, campaigns, eligible_fraction, seed, repeats)

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
                name = new_db(server, f"mw_{n}")
                x = migrate_install.measure(server.dsn(name), n)
                x["loadavg"] = round(os.getloadavg()[0], 2)
                result["migrate_wait"].append(x)
                server.drop_db(name)
        if migrate_upgrade_leads:
            say(f"platform writes while upgrading {migrate_upgrade_leads:,} leads during a run")
            name = new_db(server, f"mu_{migrate_upgrade_leads}")
            try:
                x = migrate_upgrade.measure(server.dsn(name), migrate_upgrade_leads)
                x["loadavg"] = round(os.getloadavg()[0], 2)
            except RuntimeError as exc:  # no previous release to start from (no git history)
                x = {"error": str(exc)}
            result["migrate_upgrade"] = x
            server.drop_db(name)
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = targets(result)
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result
