"""The platform's writes during a measurement: one thread that updates a random lead at a steady
pace, each UPDATE timed on the client, and the waits of a time window as figures."""

from __future__ import annotations

import random
import statistics
import threading
import time
from typing import Any

import psycopg

from bench.baseline import lead_id
from deenroll.errors import one_line

TARGET_MS = 200.0


class Writer(threading.Thread):
    """The platform: one UPDATE of a random lead every `interval` seconds, each timed."""

    def __init__(self, dsn: str, leads: int, interval: float) -> None:
        super().__init__(name="platform-writer", daemon=True)
        self.dsn, self.leads, self.interval = dsn, leads, interval
        self.waits: list[tuple[float, float]] = []  # (started, seconds), perf_counter clock
        self.touched: set[str] = set()  # the ids of the leads it updated
        self.failures: list[tuple[float, str]] = []  # (started, the error's first line)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            with psycopg.connect(self.dsn, autocommit=True, application_name="platform writer") as conn:
                tick = time.perf_counter()
                while not self.stop.is_set():
                    lead = lead_id(rng.randint(1, self.leads))
                    t0 = time.perf_counter()
                    try:
                        conn.execute(
                            """UPDATE leads SET current_message_position = current_message_position + 1,
                                                updated_at = now()
                                WHERE id = %s""",
                            (lead,),
                        )
                    except psycopg.DatabaseError as exc:  # the platform's write failed: counted, and on to the next
                        self.failures.append((t0, one_line(exc)))
                    self.waits.append((t0, time.perf_counter() - t0))
                    self.touched.add(lead)
                    tick += self.interval
                    pause = tick - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    else:
                        tick = time.perf_counter()  # behind: carry on from now, do not burst
        except BaseException as exc:  # reported by stop_writer()
            self.error = exc


def start_writer(dsn: str, leads: int, interval_ms: float) -> Writer:
    """A platform writer, up and warm (100 writes done)."""
    writer = Writer(dsn, leads, interval_ms / 1000)
    writer.start()
    deadline = time.monotonic() + 30
    while len(writer.waits) < 100 and writer.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return writer


def stop_writer(writer: Writer) -> None:
    writer.stop.set()
    writer.join(timeout=30)
    if writer.error is not None:
        raise RuntimeError(f"the platform writer failed: {writer.error}")


def waits_between(writer: Writer, start: float, end: float) -> dict[str, Any]:
    """The writes the writer began between `start` and `end` (perf_counter): count, longest, p50, p99."""
    window = [(t, w * 1000) for t, w in writer.waits if start <= t <= end]
    ms = sorted(w for _, w in window)
    longest_at = max(window, key=lambda x: x[1])[0] if window else start
    return {
        "writes": len(ms),
        "longest_wait_ms": round(ms[-1], 1) if ms else None,
        "longest_wait_at_s": round(longest_at - start, 2),
        "p50_ms": round(statistics.median(ms), 2) if ms else None,
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2) if ms else None,
        "waits_at_or_over_target": sum(1 for w in ms if w >= TARGET_MS),
        "failed_writes": sum(1 for t, _ in writer.failures if start <= t <= end),
        "failures": sorted({e for t, e in writer.failures if start <= t <= end}),
    }
