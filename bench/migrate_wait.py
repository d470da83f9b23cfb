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

The measurements are bench/migrate_install.py and bench/migrate_upgrade.py (bench/benchmark.py
runs them too, each on an empty database it created); this file is their command line.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import click
import psycopg

if __package__ in (None, ""):  # run as a file: the package `bench` is the checkout's
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench import common, migrate_install, migrate_upgrade, servers  # noqa: E402
from bench.servers import Server  # noqa: E402

say = partial(common.say, "migrate-wait")


def machine() -> dict[str, Any]:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.lower().startswith("model name")), platform.processor() or "unknown")
    mem = next((int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
                if l.startswith("MemTotal:")), 0)
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_model": cpu, "ram_gb": round(mem / 1024 / 1024, 1),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


@contextmanager
def databases(database_url: str | None) -> Iterator[tuple[str, Callable[[str], str]]]:
    """(admin DSN, make(name) -> DSN of a new empty database); everything dropped at the end."""
    started = (nullcontext(Server(database_url, "given")) if database_url else servers.embedded(
        "deenroll-migrate-wait-", lambda base: say(f"starting a private embedded PostgreSQL in {base} (deleted at the end)")))
    with started as server:

        def make(name: str) -> str:
            server.drop_db(name)
            server.create_db(name)
            return server.dsn(name)

        try:
            yield server.admin_dsn, make
        finally:
            for name in list(server.created):
                server.drop_db(name)


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
                report["runs"].append(migrate_install.measure(dsn, n, clients, campaigns, interval_ms))
                say(json.dumps(report["runs"][-1]))
        if scenario in ("upgrade", "both"):
            dsn = make(f"deenroll_migrate_upgrade_{upgrade_leads}")
            report["upgrade"] = migrate_upgrade.measure(dsn, upgrade_leads, clients, campaigns, interval_ms, run_batch_size)
            say(json.dumps(report["upgrade"]))
    report["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if json_out:
        json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
