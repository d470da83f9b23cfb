"""The run's procedure on Debian's PostgreSQL 15 as Debian ships it (JIT on), beside the embedded
PostgreSQL 18, which has no JIT: the same data set in a private cluster; per round, on a fresh
clone each, one `CALL deenroll.run_de_enrollment(p_batch_size => 100)` and the queued CALLs
after it, once with the server's JIT on and once with `jit = off` set for the login (alternating)."""

from __future__ import annotations

import statistics
from functools import partial
from typing import Any

from psycopg import sql

from bench import common, servers
from bench.checks import invariants
from bench.common import checkpoint, new_db
from bench.measures import call_run, queued_calls
from bench.rounds import QUEUED_CALLS
from bench.templates import build_template

say = partial(common.say, "bench")


def measure(leads: int, clients: int, campaigns: int, eligible_fraction: float, seed: str,
            repeats: int) -> dict[str, Any]:
    if not (servers.DEBIAN_PG15 / "postgres").exists():
        return {"error": f"no Debian PostgreSQL 15 in {servers.DEBIAN_PG15} (apt-get install postgresql-15)"}
    started = servers.debian(on_start=lambda base: say(
        f"starting Debian's PostgreSQL 15 with its default settings in {base} (deleted at the end)"))
    with started as server:
        with server.admin() as conn:
            settings = {k: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(k))).fetchone()[0]
                        for k in ("jit", "jit_above_cost", "jit_inline_above_cost", "jit_optimize_above_cost")}
            version = conn.execute("SHOW server_version").fetchone()[0]
            user = conn.execute("SELECT current_user").fetchone()[0]
        say(f"PostgreSQL {version} (jit={settings['jit']}); building the same data set")
        data = build_template(server, "pg15_tpl", leads, clients, campaigns, eligible_fraction, seed)
        call_s: dict[str, list[float]] = {"on": [], "off": []}
        queued_ms: dict[str, list[float]] = {"on": [], "off": []}
        broken = []
        for rep in range(1, repeats + 1):
            for jit in ("on", "off"):
                name = new_db(server, f"pg15_jit_{jit}", data.template)
                dsn = server.dsn(name)
                if jit == "off":
                    with server.admin() as conn:
                        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET jit = off").format(
                            sql.Identifier(user), sql.Identifier(name)))
                checkpoint(server)
                say(f"PostgreSQL 15 round {rep}/{repeats}: call 100, jit {jit}")
                call = call_run(dsn, 100)
                if call.leads != data.eligible:
                    broken.append(f"jit {jit} #{rep}: {call.leads} of {data.eligible} de-enrolled")
                check = invariants(dsn)
                if not check["ok"]:
                    broken.append(f"jit {jit} #{rep}: {check}")
                call_s[jit].append(call.wall_s)
                queued_ms[jit] += queued_calls(dsn, QUEUED_CALLS)
                server.drop_db(name)
        server.drop_db(data.template)
    return {
        "version": version, "settings": settings, "leads": leads, "eligible": data.eligible, "rounds": repeats,
        "call_100_s": call_s, "queued_ms": queued_ms, "broken": broken,
        "call_100_median_s": {k: round(statistics.median(v), 3) for k, v in call_s.items()},
        "call_100_ratio_on_off": round(statistics.median(call_s["on"]) / statistics.median(call_s["off"]), 2),
        "queued_median_ms": {k: round(statistics.median(v), 2) for k, v in queued_ms.items()},
        "queued_max_ms": {k: max(v) for k, v in queued_ms.items()},
    }
