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
   (e) On Debian's PostgreSQL 15 as Debian ships it (JIT on; bench/debian.py), in a private
   cluster started for it with the same data set: per round one CALL at batch size 100 and
   the queued CALLs after it, with the server's JIT on and with `jit = off` set for the login
   (--skip-debian-pg15).
6. Workers: (b) at batch size 100 with `--workers 2` too, in the same rounds, when
   `deenroll run --help` lists --workers ("n/a" otherwise).
7. Campaign-count scaling (bench/campaign_scaling.py): the same leads and due leads with
   --cs-base campaigns per client, or with --cs-extra finished campaigns per client
   added; a full run at batch size 100 and idle runs on each; ratios many / few.
8. Migrations while the platform writes (bench/migrate_install.py and
   bench/migrate_upgrade.py): the longest single-row UPDATE wait while `migrate` takes a
   baseline database of --migrate-wait-leads leads to the latest migration; and
   while `migrate` upgrades a database of --migrate-upgrade-leads leads from the previous
   release (every function and view re-created) during a `run` of that release, with the
   exit codes of both and the end state after the run.

Figures are printed as a table with each target's pass/fail (information, not an
assertion); --json-out writes them as JSON. The server's durability settings are
left as they are (fsync, synchronous_commit): both sides pay them alike.

The parts: templates.py (the data set), measures.py and rounds.py (the timed sides and their
rounds), debian.py (Debian's PostgreSQL 15), checks.py (invariants and end states), idle.py,
triggers.py, campaign_scaling.py, migrate_install.py and migrate_upgrade.py, suite.py (all of them in order), targets.py and
report.py (the figures judged and printed); this file is the command line.
"""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path

import click

if __package__ in (None, ""):  # run as a file: the package `bench` is the checkout's
    sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench import campaign_scaling, common  # noqa: E402
from bench.report import render  # noqa: E402
from bench.suite import benchmark  # noqa: E402

say = partial(common.say, "bench")  # progress on stderr (the figures go to stdout)


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
@click.option("--skip-debian-pg15", "skip_debian", is_flag=True,
              help="Skip the CALLs on Debian's PostgreSQL 15 as shipped (JIT on).")
@click.option("--json-out", type=click.Path(dir_okay=False, writable=True), help="Also write the figures as JSON here.")
def main(database_url: str | None, leads: int, clients: int, campaigns: int, eligible_fraction: float, seed: str,
         repeats: int, skip_idle: bool, idle_small_leads: int, idle_repeats: int, skip_triggers: bool, trigger_statements: int,
         client_statements: int, skip_campaign_scaling: bool, cs_leads: int, cs_clients: int, cs_base: int,
         cs_extra: int, cs_eligible_fraction: float, cs_repeats: int, migrate_wait_leads: tuple[int, ...],
         migrate_upgrade_leads: int, skip_migrate_upgrade: bool, skip_migrate_wait: bool, skip_previous: bool,
         previous_release: str | None, skip_debian: bool, json_out: str | None) -> None:
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
                       skip_previous, previous_release, skip_debian)
    print(render(result), flush=True)
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2, default=str) + "\n")
        say(f"figures written to {json_out}")


if __name__ == "__main__":
    main()
