"""`deenroll demo`: migrate, load the synthetic data set, run, report.

Touches only the demo's own rows: the data set is tagged (deenroll.dataset) and the
runner is called client by client for the demo's clients only.
"""

from __future__ import annotations

import os
import time
from typing import Any

from . import database, dataset, health, queries
from .errors import UserError
from .migrate import commands
from .runner import calls, options as run_options
from .cli_run import validate

CAMPAIGNS_PER_CLIENT = 4
ELIGIBLE_FRACTION = 0.1
MAX_LEADS = 5_000_000
RUN_TOTALS = ("success", "partial", "failed", "skipped", "leads_de_enrolled")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"{name} must be an integer, got {raw!r}") from None


def run_demo(
    target: database.Target, *, clients: int, leads: int, seed: str, force: bool
) -> tuple[dict[str, Any], list[str], int]:
    """Migrate, (re)load the data set, run its clients, check: the --json document (without its exit
    code), the lines, and the exit code: 0 when every due lead was de-enrolled once, the counters are
    exact and every demo client is healthy, else 1."""
    if clients < 1 or clients > 10_000:
        raise UserError(f"--clients must be between 1 and 10000, got {clients}")
    if leads < 0 or leads > MAX_LEADS:
        raise UserError(f"--leads must be between 0 and {MAX_LEADS:,}, got {leads}")
    if target.source != "embedded" and not force:
        raise UserError(
            f"the demo writes synthetic rows into {target.display()} (from {target.source}); "
            "it only uses the embedded database unless you pass --force"
        )
    start = time.monotonic()
    migrated = commands.migrate(target)

    t0 = time.monotonic()
    with database.connect(target) as conn:
        i = dataset.build_dataset(conn, clients, clients * CAMPAIGNS_PER_CLIENT, leads, ELIGIBLE_FRACTION, seed)
        conn.commit()
    load_s = time.monotonic() - t0

    batch_size = _env_int("DE_ENROLLMENT_BATCH_SIZE", run_options.BATCH_SIZE)
    max_runtime = _env_int("DE_ENROLLMENT_MAX_RUNTIME", run_options.MAX_RUNTIME_MS)
    t0 = time.monotonic()
    runs = [calls.run(target, validate(cid, batch_size, max_runtime)).totals() for cid in i.client_ids]
    run_s = time.monotonic() - t0
    t = {k: sum(r[k] for r in runs) for k in RUN_TOTALS}

    with database.connect(target, autocommit=True) as conn:
        ids = set(i.client_ids)
        report = health.HealthReport([c for c in health.health(conn).clients if str(c["client_id"]) in ids])
        o = queries.rows(conn, "demo_outcomes", client_ids=i.client_ids)[0]
    exact = (o["completed"], o["opted_out"], o["stuck"], o["drifted"], o["duplicates"]) == (
        i.eligible_completed, i.eligible_opted_out, 0, 0, 0)
    total_s = time.monotonic() - start
    doc = {
        "migrated": ", ".join(part for part in (
            f"applied {', '.join(migrated.applied)}" if migrated.applied else "",
            f"installed {len(migrated.definitions)} functions and views" if migrated.definitions else "",
        ) if part),
        "data_set": {
            "seed": i.seed, "clients": i.client_ids, "campaigns": i.campaigns, "leads": i.leads,
            "eligible_completed": i.eligible_completed, "eligible_opted_out": i.eligible_opted_out,
        },
        "run": t,
        "health": report.to_json(),
        "de_enrolled": {"completed": o["completed"], "opted_out": o["opted_out"]},
        "checks": {"stuck": o["stuck"], "drifted": o["drifted"], "duplicates": o["duplicates"], "exact": exact},
        "seconds": {"load": round(load_s, 3), "run": round(run_s, 3), "total": round(total_s, 3)},
    }
    lines = [
        f"data set: {len(i.client_ids)} clients, {i.campaigns} campaigns, {i.leads:,} leads (seed {i.seed!r}); "
        f"{i.eligible:,} due: {i.eligible_completed:,} finished sequences, {i.eligible_opted_out:,} active opted "
        f"out; loaded in {load_s:.1f} s",
        f"run: {len(runs)} clients, {t['success']} success, {t['partial']} partial, {t['failed']} failed; "
        f"de-enrolled {t['leads_de_enrolled']:,} in {run_s:.1f} s",
        "health check:",
        *("  " + line for line in report.lines()),
        f"de-enrolled: {o['completed']:,} completed, {o['opted_out']:,} opted out "
        f"(expected {i.eligible_completed:,} and {i.eligible_opted_out:,})",
        f"checks: {o['stuck']} stuck leads, {o['drifted']} campaigns with counter drift, "
        f"{o['duplicates']} duplicate de-enrollments: " + ("counters exact" if exact else "NOT as expected"),
        f"demo finished in {total_s:.1f} s",
    ]
    return doc, lines, 0 if exact and report.status == "ok" else 1
