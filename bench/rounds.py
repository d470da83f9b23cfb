"""The measured rounds: every side of the comparison on a fresh clone of the data set after a
CHECKPOINT, interleaved round after round, each checked and its end state kept; then the table's
rows (medians) and the ratios drawn from them."""

from __future__ import annotations

import statistics
import tempfile
from contextlib import ExitStack
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from bench import common
from bench.checks import differences, end_state, invariants
from bench.common import checkpoint, new_db
from bench.measures import Measurement, call_run, lower_bound, previous_run, queued_calls, runner, workers_supported
from bench.release import code_at, previous_release_commit
from bench.servers import Server
from bench.templates import DataSet

QUEUED_CALLS = 3  # queued no-op CALLs after each complete CALL run, each on a new session

say = partial(common.say, "bench")

Previous = tuple[Path, str]  # the previous release's code directory and its commit


def measure_rounds(server: Server, data: DataSet, repeats: int, keep_for_idle: bool, skip_previous: bool,
                   previous_release: str | None) -> tuple[dict[str, Any], str | None]:
    """The rounds' figures, and the clone left after the last `run 1000` when `keep_for_idle`
    (everything de-enrolled: the large idle data set), else None."""
    figures: dict[str, Any] = {}
    attempts: dict[str, list[Measurement]] = {"lower bound": [], "run 100": [], "run 1000": []}
    with_workers = workers_supported()
    if with_workers:
        attempts["run 100 w2"] = []
    attempts["call 100"], attempts["call 1000"] = [], []
    with ExitStack() as stack:
        previous: Previous | None = None
        if not skip_previous:
            code = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deenroll-previous-release-")))
            try:
                previous = code, code_at(previous_release or previous_release_commit(), code)
                attempts["previous 100"] = []
                if with_workers:
                    attempts["previous 100 w2"] = []
                say(f"previous release: {previous[1][:12]}, its code in {code}")
            except RuntimeError as exc:  # no git history to take it from
                figures["previous_release"] = {"error": str(exc)}
        queued_ms: list[float] = []
        states: dict[str, dict[str, Any]] = {}
        checks: dict[str, dict[str, Any]] = {}
        kept: str | None = None
        # Interleaved, each on a fresh clone after a CHECKPOINT: a drift of the machine
        # during the benchmark touches every side alike.
        for rep in range(1, repeats + 1):
            for key in attempts:
                name = new_db(server, key.replace(" ", "_"), data.template)
                dsn = server.dsn(name)
                checkpoint(server)
                say(f"round {rep}/{repeats}: {key}")
                attempts[key].append(measure_side(key, dsn, previous))
                label = f"{key} #{rep}"
                checks[label] = invariants(dsn)
                states[label] = end_state(dsn)
                if key.startswith("call"):
                    queued_ms += queued_calls(dsn, QUEUED_CALLS)  # after the end state: it may add run rows
                if key == "run 1000" and rep == repeats and keep_for_idle:
                    kept = name
                else:
                    server.drop_db(name)
    figures |= summary(attempts, with_workers, queued_ms, previous)
    ref = states["lower bound #1"]
    diffs = {n: differences(ref, st) for n, st in states.items() if differences(ref, st)}
    figures["invariants"] = checks
    figures["end_state"] = {"identical": not diffs, "reference": ref, "differences": diffs, "states": states}
    return figures, kept


def measure_side(key: str, dsn: str, previous: Previous | None) -> Measurement:
    """One side of a round, named by its key ("lower bound", "run 100 w2", "call 1000", ...)."""
    if key == "lower bound":
        return lower_bound(dsn)
    batch = int(key.split()[1])
    if key.startswith("call"):
        return call_run(dsn, batch)
    if key.startswith("previous"):
        assert previous is not None
        return previous_run(dsn, previous[0], previous[1], batch, 2 if key.endswith("w2") else 1)
    return runner(dsn, batch, 2 if key.endswith("w2") else 1)


def summary(attempts: dict[str, list[Measurement]], with_workers: bool, queued_ms: list[float],
            previous: Previous | None) -> dict[str, Any]:
    """The table's rows and the ratios between them."""
    out: dict[str, Any] = {}
    lower_wall = statistics.median(m.wall_s for m in attempts["lower bound"])
    out["measurements"] = [summarize(a, None if k == "lower bound" else lower_wall) for k, a in attempts.items()]
    ratios = {m["name"]: m["ratio"] for m in out["measurements"]}
    out["workers"] = ({"w1_ratio": ratios["deenroll run --batch-size 100"],
                       "w2_ratio": ratios["deenroll run --batch-size 100 --workers 2"]} if with_workers else None)
    walls = {k: statistics.median(m.wall_s for m in a) for k, a in attempts.items()}
    out["in_database"] = {
        "call_100_ratio": round(walls["call 100"] / lower_wall, 2) if lower_wall else None,
        "call_1000_ratio": round(walls["call 1000"] / lower_wall, 2) if lower_wall else None,
        "queued_ms": queued_ms,
        "queued_median_ms": round(statistics.median(queued_ms), 2),
        "queued_max_ms": max(queued_ms),
    }
    if previous is not None:
        out["previous_release"] = {
            "commit": previous[1], "batch_size": 100,
            "previous_wall_s": round(walls["previous 100"], 3), "current_wall_s": round(walls["run 100"], 3),
            "ratio": round(walls["run 100"] / walls["previous 100"], 2),
            **({"previous_w2_wall_s": round(walls["previous 100 w2"], 3), "current_w2_wall_s": round(walls["run 100 w2"], 3),
                "w2_ratio": round(walls["run 100 w2"] / walls["previous 100 w2"], 2)} if "previous 100 w2" in walls else {}),
        }
    return out


def summarize(attempts: list[Measurement], lower_wall: float | None) -> dict[str, Any]:
    """One row of the table: the median of the attempts (each on a fresh clone)."""
    walls = [m.wall_s for m in attempts]
    wall = statistics.median(walls)
    leads = attempts[0].leads
    runner_ms = [m.runner_ms for m in attempts if m.runner_ms is not None]
    rss = [m.peak_rss_mb for m in attempts if m.peak_rss_mb is not None]
    return {
        "name": attempts[0].name,
        "leads": leads,
        "wall_s": round(wall, 3),
        "walls_s": walls,
        "leads_per_s": round(leads / wall) if wall else 0,
        "ratio": round(wall / lower_wall, 2) if lower_wall else 1.0,
        "runner_ms": int(statistics.median(runner_ms)) if runner_ms else None,
        "peak_rss_mb": max(rss) if rss else None,
        "detail": attempts[-1].detail,
        "attempts": [asdict(m) for m in attempts],
    }
