"""`deenroll demo`: migrate, load the synthetic data set, run, report.

Touches only the demo's own rows: the data set is tagged (deenroll.dataset) and the
runner is called client by client for the demo's clients only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from . import database, dataset, health, queries
from .errors import UserError
from .migrate import commands
from .runner import calls, options as run_options, report as run_report
from .cli_run import validate

CAMPAIGNS_PER_CLIENT = 4
ELIGIBLE_FRACTION = 0.1
MAX_LEADS = 5_000_000


@dataclass
class DemoResult:
    migrated: str  # what the demo's `migrate` did, one line ('' when nothing)
    info: dataset.DatasetInfo
    load_s: float
    run_s: float
    total_s: float
    reports: list[run_report.RunReport]
    report: health.HealthReport
    completed: int  # lead-log rows of the demo's clients, outcome completed
    opted_out: int
    stuck: int
    drifted: int
    duplicates: int

    def totals(self) -> dict[str, int]:
        keys = ("success", "partial", "failed", "skipped", "leads_de_enrolled")
        return {k: sum(r.totals()[k] for r in self.reports) for k in keys}

    @property
    def exact(self) -> bool:
        """Everything a run should achieve: all eligible leads de-enrolled once, counters exact."""
        return (
            self.completed == self.info.eligible_completed
            and self.opted_out == self.info.eligible_opted_out
            and self.stuck == 0
            and self.drifted == 0
            and self.duplicates == 0
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.exact and self.report.status == "ok" else 1

    def to_json(self) -> dict[str, Any]:
        i = self.info
        return {
            "migrated": self.migrated,
            "data_set": {
                "seed": i.seed, "clients": i.client_ids, "campaigns": i.campaigns, "leads": i.leads,
                "eligible_completed": i.eligible_completed, "eligible_opted_out": i.eligible_opted_out,
            },
            "run": self.totals(),
            "health": self.report.to_json(),
            "de_enrolled": {"completed": self.completed, "opted_out": self.opted_out},
            "checks": {"stuck": self.stuck, "drifted": self.drifted, "duplicates": self.duplicates, "exact": self.exact},
            "seconds": {"load": round(self.load_s, 3), "run": round(self.run_s, 3), "total": round(self.total_s, 3)},
        }

    def lines(self) -> list[str]:
        i, t = self.info, self.totals()
        out = [
            f"data set: {len(i.client_ids)} clients, {i.campaigns} campaigns, {i.leads:,} leads (seed {i.seed!r}); "
            f"{i.eligible:,} due: {i.eligible_completed:,} finished sequences, {i.eligible_opted_out:,} active opted out; "
            f"loaded in {self.load_s:.1f} s",
            f"run: {len(self.reports)} clients, {t['success']} success, {t['partial']} partial, {t['failed']} failed; "
            f"de-enrolled {t['leads_de_enrolled']:,} in {self.run_s:.1f} s",
            "health check:",
            *("  " + line for line in self.report.lines()),
            f"de-enrolled: {self.completed:,} completed, {self.opted_out:,} opted out "
            f"(expected {i.eligible_completed:,} and {i.eligible_opted_out:,})",
            f"checks: {self.stuck} stuck leads, {self.drifted} campaigns with counter drift, "
            f"{self.duplicates} duplicate de-enrollments: "
            + ("counters exact" if self.exact else "NOT as expected"),
            f"demo finished in {self.total_s:.1f} s",
        ]
        return out


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"{name} must be an integer, got {raw!r}") from None


def run_demo(target: database.Target, *, clients: int, leads: int, seed: str, force: bool) -> DemoResult:
    if clients < 1 or clients > 10_000:
        raise UserError(f"--clients must be between 1 and 10000, got {clients}")
    if leads < 0 or leads > MAX_LEADS:
        raise UserError(f"--leads must be between 0 and {MAX_LEADS:,}, got {leads}")
    if target.source != "embedded" and not force:
        raise UserError(
            f"the demo writes synthetic rows into {target.display()} (from {target.source}); "
            "it only uses the embedded database unless you pass --force"
        )
    options_for = lambda cid: validate(  # noqa: E731
        cid,
        _env_int("DE_ENROLLMENT_BATCH_SIZE", run_options.BATCH_SIZE),
        _env_int("DE_ENROLLMENT_MAX_RUNTIME", run_options.MAX_RUNTIME_MS),
    )
    start = time.monotonic()
    migrated = commands.migrate(target)

    t0 = time.monotonic()
    with database.connect(target) as conn:
        info = dataset.build_dataset(
            conn, clients, clients * CAMPAIGNS_PER_CLIENT, leads, ELIGIBLE_FRACTION, seed
        )
        conn.commit()
    load_s = time.monotonic() - t0

    t0 = time.monotonic()
    reports = [calls.run(target, options_for(cid)) for cid in info.client_ids]
    run_s = time.monotonic() - t0

    with database.connect(target, autocommit=True) as conn:
        ids = info.client_ids
        full = health.health(conn)
        report = health.HealthReport([c for c in full.clients if str(c["client_id"]) in set(ids)])
        completed, opted_out, stuck_n, drifted, dups = queries.one(conn, "demo_outcomes", client_ids=ids)
    return DemoResult(
        migrated=", ".join(
            part for part in (
                f"applied {', '.join(migrated.applied)}" if migrated.applied else "",
                f"installed {len(migrated.definitions)} functions and views" if migrated.definitions else "",
            ) if part
        ),
        info=info,
        load_s=load_s,
        run_s=run_s,
        total_s=time.monotonic() - start,
        reports=reports,
        report=report,
        completed=completed,
        opted_out=opted_out,
        stuck=stuck_n,
        drifted=drifted,
        duplicates=dups,
    )
