"""`deenroll run` on the client side: connections, workers, signals, progress and the report.

The run itself is the database's procedure deenroll.run_de_enrollment (functions/
run_de_enrollment.sql), the same one pg_cron calls: for each client it takes the lease,
opens the run row, commits each batch, stops at the deadline, retries a batch that lost a
lock race, folds the counters, closes the row and records a failure while going on. This
module only adds what a client process can:

  * one CALL per client on each worker's connection, with one deadline (on the database's
    clock) for all of them; with `--workers N`, N threads take clients from one queue and an
    idle worker helps the busiest run still open (deenroll.help_de_enrollment_run: batches
    under that run, SKIP LOCKED keeps the claims apart);
  * the progress display, fed by the INFO messages the procedure sends per batch;
  * a connection lost in the middle of a client: reconnect at once and call the procedure
    again for that client (the dead session's lease is taken over at once); a database
    that stays unreachable fails the client;
  * SIGTERM / SIGINT: the statement in flight is cancelled and the open run rows are closed
    'failed' with the signal's name;
  * the dry run (counts only), the final fold over every client, --json, exit codes, the
    alert webhook.

Nothing the runner needs outlives a transaction, so it works through a transaction-mode
connection pooler (PgBouncer, Supabase's pooler); a CALL keeps its server connection
until it returns. psycopg prepares no statement (database.connect); every name is
schema-qualified and every parameter typed, whatever search_path the login has.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from . import alerts, database, queries, schema
from .errors import UserError

log = logging.getLogger("deenroll.run")

INT_MAX = 2**31 - 1
MAX_WORKERS = 64
LEASE_MS = 30000  # how long a run's lease lasts past its last sign of life, by default
LEASE_RANGE_MS = (1000, 600000)
RECONNECTS = 3  # a client whose connection is lost is called again after reconnecting, this often at most
PROGRESS_PREFIX = "deenroll: "  # the procedure's progress messages: this, then a JSON object

# One batch in one statement (positional parameters: run id, client id, batch size): what the
# run's procedure does for each batch; kept for tests that drive batches by hand.
BATCH_SQL = queries.all_queries()["run_batch"]


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler of `deenroll run` (a scheduler's timeout): the run stops, recorded.

    A KeyboardInterrupt, so that psycopg cancels the statement in flight as it does on Ctrl-C.
    """


# --------------------------------------------------------------------------- options and results


@dataclass(frozen=True)
class RunOptions:
    client_id: str | None
    batch_size: int
    max_runtime_ms: int
    dry_run: bool = False
    workers: int = 1
    lease_ms: int = LEASE_MS


def validate(
    client_id: str | None,
    batch_size: int,
    max_runtime_ms: int,
    dry_run: bool = False,
    workers: int = 1,
    lease_ms: int = LEASE_MS,
) -> RunOptions:
    """Check the user's input before anything touches the database."""
    cid: str | None = None
    if client_id is not None:
        try:
            cid = str(uuid.UUID(client_id.strip()))
        except ValueError:
            raise UserError(f"--client-id: {client_id!r} is not a UUID") from None
    if batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer, got {batch_size}")
    if batch_size > INT_MAX:
        raise UserError(f"--batch-size must be at most {INT_MAX}, got {batch_size}")
    # 0 is refused too: a run with no time at all would only ever record 'partial'.
    if max_runtime_ms < 1:
        raise UserError(f"--max-runtime must be at least 1 millisecond, got {max_runtime_ms}")
    if max_runtime_ms > INT_MAX:
        raise UserError(f"--max-runtime must be at most {INT_MAX} milliseconds, got {max_runtime_ms}")
    if not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"--workers must be between 1 and {MAX_WORKERS}, got {workers}")
    low, high = LEASE_RANGE_MS
    if not low <= lease_ms <= high:
        raise UserError(f"--lease must be between {low} and {high} milliseconds, got {lease_ms}")
    return RunOptions(cid, batch_size, max_runtime_ms, dry_run, workers, lease_ms)


@dataclass
class CampaignIssue:
    """A campaign whose messages is not a JSON array (from de_enrollment_invalid_campaigns)."""

    campaign_id: str
    campaign_name: str | None
    messages_type: str
    active_leads: int

    def describe(self) -> str:
        return (
            f"campaign {self.campaign_id} ({self.campaign_name}): messages is {self.messages_type}, "
            f"not a JSON array; its {self.active_leads} active leads were skipped"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id,
            "campaign_name": self.campaign_name,
            "messages_type": self.messages_type,
            "active_leads": self.active_leads,
        }


@dataclass
class ClientResult:
    client_id: str
    run_id: str | None = None
    status: str = "running"  # success | partial | failed | skipped | dry_run
    leads_evaluated: int = 0
    leads_de_enrolled: int = 0
    completed: int = 0
    opted_out: int = 0
    batches: int = 0
    duration_ms: int = 0
    error: str | None = None
    invalid_campaigns: list[CampaignIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    campaigns: list[dict[str, Any]] = field(default_factory=list)  # dry run only
    held: dict[str, int] = field(default_factory=dict)  # leads runs hold, by reason, after the run
    newly_held: int = 0  # of them, held by this run

    @property
    def leads_held(self) -> int:
        return sum(self.held.values())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "client_id": self.client_id,
            "run_id": self.run_id,
            "status": self.status,
            "leads_evaluated": self.leads_evaluated,
            "leads_de_enrolled": self.leads_de_enrolled,
            "completed": self.completed,
            "opted_out": self.opted_out,
            "batches": self.batches,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "invalid_campaigns": [c.to_json() for c in self.invalid_campaigns],
            "warnings": self.warnings,
            "leads_held": self.leads_held,
            "held": dict(self.held),
            "newly_held": self.newly_held,
        }
        if self.status == "dry_run":
            out["would_de_enroll"] = self.completed + self.opted_out
            out["campaigns"] = self.campaigns
        return out


@dataclass
class RunReport:
    options: RunOptions
    started_at: datetime
    clients: list[ClientResult] = field(default_factory=list)
    duration_ms: int = 0
    alert: alerts.AlertResult = field(default_factory=lambda: alerts.AlertResult(attempted=False))
    deltas_folded: int = 0  # after the clients: pending counter deltas of every other campaign
    fold_error: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for c in self.clients if c.status == status)

    @property
    def exit_code(self) -> int:
        """2 when a client (or the final fold) failed; 1 when one ended partial (or, dry run, would) or
        leads are held (they need someone's attention); else 0."""
        if self.count("failed") or self.fold_error:
            return 2
        if self.count("partial") or any(c.held for c in self.clients):
            return 1
        if self.options.dry_run and any(c.invalid_campaigns for c in self.clients):
            return 1
        return 0

    def totals(self) -> dict[str, int]:
        return {
            "clients": len(self.clients),
            "success": self.count("success"),
            "partial": self.count("partial"),
            "failed": self.count("failed"),
            "skipped": self.count("skipped"),
            "leads_evaluated": sum(c.leads_evaluated for c in self.clients),
            "leads_de_enrolled": sum(c.leads_de_enrolled for c in self.clients),
            "completed": sum(c.completed for c in self.clients),
            "opted_out": sum(c.opted_out for c in self.clients),
            "batches": sum(c.batches for c in self.clients),
            "leads_held": sum(c.leads_held for c in self.clients),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.options.dry_run,
            "batch_size": self.options.batch_size,
            "max_runtime_ms": self.options.max_runtime_ms,
            "started_at": self.started_at.isoformat(timespec="milliseconds"),
            "duration_ms": self.duration_ms,
            "clients": [c.to_json() for c in self.clients],
            "totals": self.totals(),
            "deltas_folded": self.deltas_folded,
            "fold_error": self.fold_error,
            "exit_code": self.exit_code,
            "alert": self.alert.to_json(),
        }


class Observer(Protocol):
    """Progress reporting (plain log lines or a rich display); the runner calls these."""

    def clients_found(self, count: int) -> None: ...
    def client_started(self, client_id: str) -> None: ...
    def batch_done(self, result: ClientResult, size: int) -> None: ...
    def client_done(self, result: ClientResult) -> None: ...


class LogObserver:
    """Plain log lines on the `deenroll.run` logger."""

    def clients_found(self, count: int) -> None:
        log.info("%d client(s) to process", count)

    def client_started(self, client_id: str) -> None:
        log.debug("client %s: starting", client_id)

    def batch_done(self, result: ClientResult, size: int) -> None:
        log.debug(
            "client %s: batch %d de-enrolled %d (run total %d)",
            result.client_id, result.batches, size, result.leads_de_enrolled,
        )

    def client_done(self, result: ClientResult) -> None:
        for warning in result.warnings:
            log.warning("client %s: %s", result.client_id, warning)
        level = {"failed": logging.ERROR, "partial": logging.WARNING, "skipped": logging.WARNING}.get(
            result.status, logging.INFO
        )
        log.log(level, "client %s: %s", result.client_id, describe_client(result))


def describe_client(r: ClientResult) -> str:
    """One human line for a client's outcome."""
    if r.status == "skipped":
        return f"skipped: {r.error}"
    if r.status == "dry_run":
        text = f"would de-enroll {r.completed + r.opted_out} (completed {r.completed}, opted out {r.opted_out})"
    else:
        text = (
            f"{r.status}: de-enrolled {r.leads_de_enrolled} (completed {r.completed}, "
            f"opted out {r.opted_out}) in {r.batches} batch{'es' if r.batches != 1 else ''}, {r.duration_ms} ms"
        )
    if r.held:
        text += f"; {describe_held(r.held)}"
    if r.invalid_campaigns:
        text += f"; {len(r.invalid_campaigns)} campaign(s) with invalid messages"
    if r.error and r.status not in ("dry_run", "success"):  # a success's details only repeat the held leads
        text += f"; {r.error}"
    return text


def describe_held(held: dict[str, int]) -> str:
    """'held 3 (check_violation 2, refused_by_trigger 1)'."""
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(held.items()))
    return f"held {sum(held.values())} ({reasons})"


# --------------------------------------------------------------------------- the run


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        msg = exc.diag.message_primary or str(exc)
    else:
        msg = str(exc) or type(exc).__name__
    lines = [line.strip() for line in msg.strip().splitlines() if line.strip()]
    return database.redact(lines[0] if lines else type(exc).__name__)


def check_prerequisites(conn: psycopg.Connection) -> None:
    """One clear line when the schema is not there: every function and view file of this version
    must have its object in the database (the views cannot exist without the tables they read)."""
    defs = schema.definitions()
    missing = [
        what for (what,) in queries.run(
            conn, "run_missing_definitions",
            kinds=[d.kind for d in defs], schemas=[d.schema for d in defs], names=[d.name for d in defs],
        ).fetchall()
    ]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UserError(f"the database is not ready for de-enrollment ({shown} missing): run `deenroll migrate` first")
    blind = queries.run(conn, "rls_blind_spots").fetchall()
    if blind:
        raise UserError(
            "row-level security hides leads from deenroll: " + "; ".join(r[0] for r in blind)
            + " (grant BYPASSRLS to that role or make it the tables' owner, then run again)"
        )


def _clients(conn: psycopg.Connection, only: str | None) -> list[str]:
    if only is not None:
        if not queries.value(conn, "run_client_exists", client_id=only):
            raise UserError(f"client {only} has no campaigns and no leads: nothing to de-enroll (check --client-id)")
        return [only]
    return [r[0] for r in queries.run(conn, "run_clients").fetchall()]


def _invalid_campaigns(conn: psycopg.Connection, client_id: str) -> list[CampaignIssue]:
    rows = queries.run(conn, "invalid_campaigns", client_id=client_id).fetchall()
    return [CampaignIssue(str(r[0]), r[1], r[2], int(r[3])) for r in rows]


def _held(conn: psycopg.Connection, client_id: str) -> dict[str, int]:
    """The client's held leads (the ones a run skips), counted by reason."""
    rows = queries.run(conn, "held_by_reason", client_id=client_id).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


Event = dict[str, Any]


class _Session:
    """One connection of the runner (one per worker thread), reopened when it broke.

    The procedure's progress messages go to `on_event`; other notices and warnings (a dead
    run taken over, a client another run holds) are kept in `notices`."""

    def __init__(self, target: database.Target) -> None:
        self.target = target
        self._conn: psycopg.Connection | None = None
        self.notices: list[str] = []
        self.on_event: Callable[[Event], None] = lambda event: None
        self._unreachable: str | None = None

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if diag.severity_nonlocalized == "INFO" and text.startswith(PROGRESS_PREFIX):
            try:
                event = json.loads(text[len(PROGRESS_PREFIX):])
            except ValueError:
                return
            self.on_event(event)
        elif diag.severity_nonlocalized in ("WARNING", "NOTICE") and text:
            self.notices.append(text)

    @property
    def conn(self) -> psycopg.Connection:
        """The connection, reopened when it broke; once the database is unreachable, fail fast."""
        if self._unreachable is not None:
            raise UserError(self._unreachable)
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            try:
                conn = database.connect(self.target, autocommit=True, app="deenroll run")
            except UserError as exc:
                self._unreachable = str(exc)
                raise
            conn.add_notice_handler(self._on_notice)
            self._conn = conn
        return self._conn

    @property
    def lost(self) -> bool:
        """Whether the connection broke (the server ended the session, or the network went)."""
        return self._conn is not None and (self._conn.closed or self._conn.broken)

    def abandon(self) -> None:
        """After a failure: drop the connection unless it is idle and usable (the next use reconnects)."""
        if self._conn is None:
            return
        if self._conn.closed or self._conn.broken or self._conn.info.transaction_status != TransactionStatus.IDLE:
            self.close()

    def cancel(self) -> None:
        """Cancel the statement in flight, from another thread (a stop signal)."""
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.cancel_safe(timeout=5)
            except (psycopg.Error, OSError):
                pass  # the statement ends anyway; the worker sees the stop before its next call

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _ClientRun:
    """A client's run, as the procedure announced it, shared by its worker and the workers helping it."""

    def __init__(self, result: ClientResult) -> None:
        self.result = result
        self.open = False  # helpers may join between the procedure's 'started' and its return
        self.helpers = 0


@dataclass(frozen=True)
class _Task:
    """What a worker does next: start a client's run, or help one that is open."""

    client_id: str | None = None
    help: _ClientRun | None = None


class _Scheduler:
    """What the workers share: the clients to start, the runs open for help, the stop reason."""

    def __init__(self, clients: list[str], workers: int, observer: Observer) -> None:
        self.pending: deque[str] = deque(clients)
        self.workers = workers
        self.open_runs: list[_ClientRun] = []
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

    def next_task(self, dry_run: bool) -> _Task | None:
        """A client to start, a run to help, or None when there is nothing left for this worker.

        With no client left to start, an idle worker waits until a run opens for help or
        every client is done."""
        with self.cond:
            while True:
                if self.stop is not None:
                    return None
                if self.pending:
                    self.active += 1
                    return _Task(client_id=self.pending.popleft())
                if dry_run or self.workers == 1:
                    return None
                runs = [r for r in self.open_runs if r.open]
                if runs:
                    # the run with the fewest helpers, then the one with the most batches done (the biggest)
                    run = min(runs, key=lambda r: (r.helpers, -r.result.batches))
                    run.helpers += 1
                    return _Task(help=run)
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

    def opened(self, run: _ClientRun) -> None:
        with self.cond:
            run.open = True
            self.open_runs.append(run)
            self.cond.notify_all()

    def closed(self, run: _ClientRun) -> None:
        with self.cond:
            run.open = False
            if run in self.open_runs:
                self.open_runs.remove(run)

    def helper_done(self, run: _ClientRun) -> None:
        with self.cond:
            run.helpers -= 1
            self.cond.notify_all()

    def record(self, run: _ClientRun, event: Event) -> None:
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


def _fill(result: ClientResult, summary: dict[str, Any]) -> None:
    """A client's result from the procedure's summary of it."""
    result.run_id = summary.get("run_id")
    result.status = summary["status"]
    result.error = summary.get("error")
    result.duration_ms = int(summary.get("duration_ms") or 0)
    for key in ("leads_evaluated", "leads_de_enrolled", "completed", "opted_out", "batches", "newly_held"):
        setattr(result, key, int(summary.get(key) or 0))
    result.invalid_campaigns = [
        CampaignIssue(c["campaign_id"], c.get("campaign_name"), c["messages_type"], int(c["active_leads"]))
        for c in summary.get("invalid_campaigns") or []
    ]
    result.held = {str(k): int(v) for k, v in sorted((summary.get("held") or {}).items())}


class Runner:
    """One invocation of `deenroll run`."""

    def __init__(self, target: database.Target, options: RunOptions, observer: Observer | None = None) -> None:
        self.target = target
        self.options = options
        self.observer: Observer = observer or LogObserver()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.main = _Session(target)
        self.deadline: datetime | None = None  # on the database's clock

    # -- the run ---------------------------------------------------------------

    def run(self) -> RunReport:
        report = RunReport(self.options, datetime.now(timezone.utc))
        t0 = time.monotonic()
        try:
            conn = self.main.conn
            check_prerequisites(conn)
            clients = _clients(conn, self.options.client_id)
            self.deadline = queries.value(conn, "run_deadline", max_runtime_ms=self.options.max_runtime_ms)
            self.observer.clients_found(len(clients))
            results = self._work(clients)
            report.clients.extend(results[c] for c in clients if c in results)
            if not self.options.dry_run and self.options.client_id is None:
                self._fold_everything(report)
        finally:
            self.main.close()
        report.duration_ms = int((time.monotonic() - t0) * 1000)
        if not self.options.dry_run and report.exit_code:
            report.alert = alerts.post_alert("run", _alert_payload(report), summary=_alert_summary(report, self.host))
        return report

    def _work(self, clients: list[str]) -> dict[str, ClientResult]:
        """Every client, by one worker (this thread, on the main connection) or by several threads."""
        workers = self.options.workers
        if not clients:
            workers = 1
        elif self.options.dry_run:
            workers = min(workers, len(clients))  # a dry run only counts: one client per worker
        sched = _Scheduler(clients, workers, self.observer)
        results: dict[str, ClientResult] = {}
        if workers == 1:
            self._worker(self.main, sched, results)
            return results
        self.main.close()  # the workers have their own; the final fold reconnects
        sessions = [_Session(self.target) for _ in range(workers)]
        threads = [
            threading.Thread(target=self._worker, args=(s, sched, results), name=f"deenroll-worker-{i + 1}")
            for i, s in enumerate(sessions)
        ]
        for t in threads:
            t.start()
        try:
            # Waits on an event, not in Thread.join(): a signal's exception raised inside join() can
            # leave a thread that still runs marked as finished, and the process would end under it.
            while not sched.all_done.wait(0.5):
                pass
        except BaseException as exc:  # a stop signal: every worker records its client failed, then stops
            sched.stopped(exc)
            for s in sessions:
                s.cancel()
            sched.all_done.wait()
            raise
        for t in threads:
            t.join()
        if sched.crash is not None:
            raise sched.crash
        return results

    def _worker(self, session: _Session, sched: _Scheduler, results: dict[str, ClientResult]) -> None:
        try:
            self._work_loop(session, sched, results)
        except BaseException as exc:
            if threading.current_thread() is threading.main_thread():
                raise
            sched.stopped(exc, crash=True)  # a worker thread's error ends the run, in the main thread
        finally:
            if session is not self.main:
                session.close()
            sched.worker_done()

    def _work_loop(self, session: _Session, sched: _Scheduler, results: dict[str, ClientResult]) -> None:
        while True:
            task = sched.next_task(self.options.dry_run)
            if task is None:
                return
            if task.help is not None:
                self._help(session, sched, task.help)
                continue
            client_id = task.client_id
            assert client_id is not None
            try:
                sched.notify("client_started", client_id)
                if self.options.dry_run:
                    result = self._dry_run_client(session, client_id)
                else:
                    result = self._run_client(session, sched, client_id)
                with sched.cond:
                    results[client_id] = result
            finally:
                sched.client_done()
            sched.notify("client_done", result)

    def _fold_everything(self, report: RunReport) -> None:
        """Fold the deltas of campaigns no client run touched (clients without an active campaign)."""
        try:
            report.deltas_folded = queries.value(
                self.main.conn, "run_fold_remaining", max_runtime_ms=self.options.max_runtime_ms
            )
        except (psycopg.Error, UserError) as exc:
            self.main.abandon()
            report.fold_error = f"folding the remaining counter deltas failed: {_first_line(exc)}"
            log.error(report.fold_error)

    def _dry_run_client(self, session: _Session, client_id: str) -> ClientResult:
        t0 = time.monotonic()
        result = ClientResult(client_id, status="dry_run")
        conn = session.conn
        rows = queries.run(conn, "dry_run_counts", client_id=client_id).fetchall()
        result.invalid_campaigns = _invalid_campaigns(conn, client_id)
        result.held = _held(conn, client_id)
        for campaign_id, name, total, completed, opted_out in rows:
            result.campaigns.append(
                {
                    "campaign_id": str(campaign_id),
                    "campaign_name": name,
                    "total_messages": total,
                    "completed": int(completed),
                    "opted_out": int(opted_out),
                }
            )
            result.completed += int(completed)
            result.opted_out += int(opted_out)
        result.duration_ms = int((time.monotonic() - t0) * 1000)
        return result

    def _events(self, sched: _Scheduler, result: ClientResult, runs: list[_ClientRun]) -> Callable[[Event], None]:
        """What the procedure reports while it runs a client: its run opening, its batches, its retries."""

        def on_event(event: Event) -> None:
            kind = event.get("event")
            if kind == "started":
                run = _ClientRun(result)
                result.run_id = str(event["run_id"])
                runs.append(run)
                sched.opened(run)
            elif kind == "batch" and runs:
                sched.record(runs[-1], event)
            elif kind == "retry":
                log.warning("client %s: batch lost a lock race (%s), retrying", result.client_id, event.get("error"))

        return on_event

    def _run_client(self, session: _Session, sched: _Scheduler, client_id: str) -> ClientResult:
        """One CALL of the run's procedure for this client; again after a lost connection."""
        t0 = time.monotonic()
        result = ClientResult(client_id)
        runs: list[_ClientRun] = []
        session.on_event = self._events(sched, result, runs)
        session.notices.clear()
        reconnects = 0
        try:
            while True:
                try:
                    (summary,) = queries.one(
                        session.conn, "run_client",
                        client_id=client_id, batch_size=self.options.batch_size,
                        max_runtime_ms=self.options.max_runtime_ms, lease_ms=self.options.lease_ms,
                        deadline=self.deadline, host=self.host, pid=self.pid,
                        login_pid=session.conn.info.backend_pid,
                    )
                    break
                except psycopg.OperationalError as exc:
                    if sched.stop is not None or not session.lost or reconnects >= RECONNECTS or not self._reconnect(session):
                        raise
                    reconnects += 1
                    log.warning(
                        "client %s: the connection to the database was lost (%s); reconnected, going on with it",
                        client_id, _first_line(exc),
                    )
        except Exception as exc:  # noqa: BLE001 - one client's failure never stops the others
            self._record_failure(session, sched, result, runs, exc)
        except BaseException as exc:  # interrupted: leave a truthful row behind, then stop
            sched.stopped(exc)
            self._record_failure(session, sched, result, runs, exc)
            raise
        else:
            [mine] = summary["clients"]
            _fill(result, mine)
            if result.status == "skipped":
                # the NOTICE names the run that holds the client's lease
                result.error = session.notices[-1] if session.notices else result.error
            else:
                result.warnings.extend(session.notices)
        finally:
            session.on_event = lambda event: None
            for run in runs:
                sched.closed(run)
        result.duration_ms = result.duration_ms or int((time.monotonic() - t0) * 1000)
        return result

    @staticmethod
    def _reconnect(session: _Session) -> bool:
        """A new connection after a lost one; False when the database cannot be reached."""
        session.close()
        try:
            session.conn
        except UserError:
            return False
        return True

    def _help(self, session: _Session, sched: _Scheduler, run: _ClientRun) -> None:
        """Claim batches of another worker's client under its run until they come back short."""
        result = run.result
        session.on_event = lambda event: sched.record(run, event) if event.get("event") == "batch" else None
        try:
            queries.one(
                session.conn, "run_help",
                run_id=result.run_id, client_id=result.client_id,
                batch_size=self.options.batch_size, deadline=self.deadline,
            )
        except Exception as exc:  # noqa: BLE001 - the run's own worker goes on and reports it
            session.abandon()
            log.warning("client %s: a helping worker stopped: %s", result.client_id, _first_line(exc))
        finally:
            session.on_event = lambda event: None
            sched.helper_done(run)

    def _record_failure(
        self, session: _Session, sched: _Scheduler, result: ClientResult, runs: list[_ClientRun], exc: BaseException
    ) -> None:
        """The procedure did not return (a stop signal, a lost connection): close its run 'failed'."""
        stop = sched.stop if sched.stop is not None else exc
        if isinstance(stop, Terminated):
            message = "terminated (SIGTERM) before finishing"
        elif isinstance(stop, KeyboardInterrupt):
            message = "interrupted (SIGINT) before finishing"
        else:
            message = _describe(exc)
        session.abandon()
        result.status = "failed"
        if not runs:
            result.error = f"could not start a run: {_first_line(exc)}"
            return
        result.error = message
        try:
            try:
                row = queries.one(session.conn, "run_close_failed", run_id=result.run_id, message=message)
            except pg_errors.QueryCanceled:
                # a stop's cancel request, sent from another thread, may land on this statement
                # instead of the one it was meant for: it is sent once, so once more is enough
                session.abandon()
                row = queries.one(session.conn, "run_close_failed", run_id=result.run_id, message=message)
            if row is None:
                raise RuntimeError(f"run {result.run_id} vanished")
            (_, result.leads_evaluated, result.leads_de_enrolled, result.completed, result.opted_out,
             result.batches, duration, result.error) = row
            result.duration_ms = duration or 0
        except (psycopg.Error, UserError, RuntimeError) as second:
            session.abandon()
            result.error = f"{message}; the run row could not be closed either: {_first_line(second)}"


def _describe(exc: BaseException) -> str:
    return _first_line(exc) if isinstance(exc, psycopg.Error) else f"{type(exc).__name__}: {_first_line(exc)}"


def _alert_payload(report: RunReport) -> dict[str, Any]:
    return {
        "command": "run",
        "exit_code": report.exit_code,
        "totals": report.totals(),
        "clients": [c.to_json() for c in report.clients if c.status in ("failed", "partial") or c.held],
        "fold_error": report.fold_error,
    }


def _alert_summary(report: RunReport, host: str) -> str:
    held = sum(c.leads_held for c in report.clients)
    return (
        f"deenroll run on {host}: {report.count('failed')} failed, {report.count('partial')} partial "
        f"of {len(report.clients)} client(s)" + (f", {held} lead(s) held" if held else "")
    )


def run(target: database.Target, options: RunOptions, observer: Observer | None = None) -> RunReport:
    """Run (or dry-run) the de-enrollment for every active client, or the one asked for."""
    return Runner(target, options, observer).run()


def summary_lines(report: RunReport) -> Iterable[str]:
    """The short human summary printed on stdout."""
    for c in report.clients:
        yield f"{c.client_id}  {describe_client(c)}"
    t = report.totals()
    if report.options.dry_run:
        yield (
            f"dry run: {t['clients']} client(s), would de-enroll {t['completed'] + t['opted_out']} "
            f"(completed {t['completed']}, opted out {t['opted_out']}), held {t['leads_held']}; nothing was changed"
        )
    else:
        yield (
            f"{t['clients']} client(s): {t['success']} success, {t['partial']} partial, {t['failed']} failed, "
            f"{t['skipped']} skipped; de-enrolled {t['leads_de_enrolled']} (completed {t['completed']}, "
            f"opted out {t['opted_out']}), held {t['leads_held']} in {report.duration_ms} ms; exit {report.exit_code}"
        )
