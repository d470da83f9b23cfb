"""What the worker threads of one run share: the clients to start, the runs open for help, the stop."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from .report import ClientResult, Observer
from .session import Event


class ClientRun:
    """A client's run, as the procedure announced it, shared by its worker and the workers helping it."""

    def __init__(self, result: ClientResult) -> None:
        self.result = result
        self.open = False  # helpers may join between the procedure's 'started' and its return
        self.helpers = 0


@dataclass(frozen=True)
class Task:
    """What a worker does next: start a client's run, or help one that is open."""

    client_id: str | None = None
    help: ClientRun | None = None


class Scheduler:
    """What the workers share: the clients to start, the runs open for help, the stop reason."""

    def __init__(self, clients: list[str], workers: int, observer: Observer) -> None:
        self.pending: deque[str] = deque(clients)
        self.workers = workers
        self.open_runs: list[ClientRun] = []
        self.active = 0  # clients started and not done yet
        self.working = workers  # worker threads not finished yet
        self.all_done = threading.Event()
        self.cond = threading.Condition()
        self.stop: BaseException | None = None  # the signal that stops the run
        self.crash: BaseException | None = None  # an error no client's row could take: raised by the run
        self._observer = observer
        self._observer_lock = threading.Lock()

    def notify(self, method: str, *args: Any) -> None:
        with self._observer_lock:
            getattr(self._observer, method)(*args)

    def next_task(self, dry_run: bool) -> Task | None:
        """A client to start, a run to help, or None when there is nothing left for this worker.

        With no client left to start, an idle worker waits until a run opens for help or
        every client is done."""
        with self.cond:
            while True:
                if self.stop is not None:
                    return None
                if self.pending:
                    self.active += 1
                    return Task(client_id=self.pending.popleft())
                if dry_run or self.workers == 1:
                    return None
                runs = [r for r in self.open_runs if r.open]
                if runs:
                    # the run with the fewest helpers, then the one with the most batches done (the biggest)
                    run = min(runs, key=lambda r: (r.helpers, -r.result.batches))
                    run.helpers += 1
                    return Task(help=run)
                if self.active == 0:
                    return None
                self.cond.wait()

    def worker_done(self) -> None:
        with self.cond:
            self.working -= 1
            if self.working == 0:
                self.all_done.set()

    def client_done(self) -> None:
        with self.cond:
            self.active -= 1
            self.cond.notify_all()

    def stopped(self, exc: BaseException, *, crash: bool = False) -> None:
        with self.cond:
            self.stop = self.stop or exc
            if crash:
                self.crash = self.crash or exc
            self.cond.notify_all()

    def opened(self, run: ClientRun) -> None:
        with self.cond:
            run.open = True
            self.open_runs.append(run)
            self.cond.notify_all()

    def closed(self, run: ClientRun) -> None:
        with self.cond:
            run.open = False
            if run in self.open_runs:
                self.open_runs.remove(run)

    def helper_done(self, run: ClientRun) -> None:
        with self.cond:
            run.helpers -= 1
            self.cond.notify_all()

    def record(self, run: ClientRun, event: Event) -> None:
        """A batch's counts (from any worker) into the run's result, for the progress display."""
        result = run.result
        completed, opted_out = int(event.get("completed", 0)), int(event.get("opted_out", 0))
        with self.cond:
            result.batches += 1
            result.leads_de_enrolled += completed + opted_out
            result.completed += completed
            result.opted_out += opted_out
            result.newly_held += int(event.get("held", 0))
        self.notify("batch_done", result, completed + opted_out)

