"""The batch runner behind `deenroll run`: orders the SQL, times it, gathers the report.

Every decision about data is made by the functions in functions/ (see their
headers); this module only calls them in order, for each client:

  start_de_enrollment_run     takes the client's lease, opens its run row
  de_enrollment_invalid_campaigns   campaigns to report (their leads are skipped)
  process_de_enrollment_batch(get_leads_for_de_enrollment(...)), preceded by
  de_enrollment_heartbeat     one round trip and one short transaction per batch, until a
                              batch comes back short or the time budget is spent
  apply_campaign_stats_deltas folds what the platform changed meanwhile
  finish_de_enrollment_run    closes the run row, gives the lease back

Nothing the runner needs outlives a transaction, so it works the same through a
transaction-mode connection pooler (PgBouncer, Supabase's pooler): the lease is a row
(deenroll.client_leases), renewed by the batches, that a dead runner's successor takes
over once it has expired; the settings (lock_timeout, synchronous_commit) are set by the
functions for their own transaction; psycopg prepares no statement (database.connect);
no session setting is made, so every name below is schema-qualified and every parameter
typed, whatever search_path the login has.

Connections are in autocommit mode and every step above is one statement, hence its own
transaction: a batch (heartbeat, claim and process in one statement) commits as that
statement ends, with no extra round trip.

With `--workers N`, N threads each hold a connection of their own. They take clients
from one queue; when none is left to start, an idle worker helps the busiest client still
running by claiming batches under that client's run (same run row, same lease): SKIP
LOCKED keeps the workers' claims apart. A client's run is closed by the worker that
started it, once its helpers have stopped.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from . import alerts, database, schema
from .errors import UserError

log = logging.getLogger("deenroll.run")

INT_MAX = 2**31 - 1
BATCH_RETRIES = 3  # a batch that loses a deadlock or serialization race, or a lock wait, is tried this often
LOCK_WAIT_FLOOR_MS = 5000  # lock_timeout of statements outside a run's lease: max(budget, this)
MAX_WORKERS = 64
LEASE_MS = 30000  # how long a run's lease lasts past its last sign of life, by default
LEASE_RANGE_MS = (1000, 600000)


# The heartbeat comes first (the batch takes its run id from it): it refuses a run that lost
# its lease, renews the lease, and sets lock_timeout and synchronous_commit for this
# transaction only.
BATCH_SQL = (
    "SELECT b.lead_id, b.campaign_id, b.outcome, b.messages_received, b.held_reason "
    "FROM public.de_enrollment_heartbeat(%s::uuid) AS h (run_id) "
    "CROSS JOIN LATERAL public.process_de_enrollment_batch(h.run_id, "
    "ARRAY(SELECT g.lead_id FROM public.get_leads_for_de_enrollment(%s::uuid, %s::integer) AS g)) AS b"
)


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
        what for (what,) in conn.execute(
            """SELECT o.kind || ' public.' || o.name
                 FROM ROWS FROM (pg_catalog.unnest(%s::text[]), pg_catalog.unnest(%s::text[])) WITH ORDINALITY AS o (kind, name, n)
                WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_proc AS p
                                   WHERE o.kind = 'function' AND p.proname = o.name
                                     AND p.pronamespace = 'public'::pg_catalog.regnamespace)
                  AND NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c
                                   WHERE o.kind = 'view' AND c.relname = o.name AND c.relkind = 'v'
                                     AND c.relnamespace = 'public'::pg_catalog.regnamespace)
                ORDER BY o.n""",
            ([d.kind for d in defs], [d.name for d in defs]),
        ).fetchall()
    ]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UserError(f"the database is not ready for de-enrollment ({shown} missing): run `deenroll migrate` first")
    blind = conn.execute("SELECT reason FROM public.de_enrollment_rls_blind_spots()").fetchall()
    if blind:
        raise UserError(
            "row-level security hides leads from deenroll: " + "; ".join(r[0] for r in blind)
            + " (grant BYPASSRLS to that role or make it the tables' owner, then run again)"
        )


def _clients(conn: psycopg.Connection, only: str | None) -> list[str]:
    if only is not None:
        known = conn.execute("SELECT public.de_enrollment_client_exists(%s::uuid)", (only,)).fetchone()
        if not known or not known[0]:
            raise UserError(f"client {only} has no campaigns and no leads: nothing to de-enroll (check --client-id)")
        return [only]
    rows = conn.execute("SELECT client_id FROM public.de_enrollment_clients()").fetchall()
    return [str(r[0]) for r in rows]


def _invalid_campaigns(conn: psycopg.Connection, client_id: str) -> list[CampaignIssue]:
    rows = conn.execute(
        "SELECT campaign_id, campaign_name, messages_type, active_leads FROM public.de_enrollment_invalid_campaigns(%s::uuid)",
        (client_id,),
    ).fetchall()
    return [CampaignIssue(str(r[0]), r[1], r[2], int(r[3])) for r in rows]


def _held(conn: psycopg.Connection, client_id: str) -> dict[str, int]:
    """The client's held leads (the ones a run skips), counted by reason."""
    rows = conn.execute(
        "SELECT h.reason, pg_catalog.count(*) FROM public.de_enrollment_held_leads(%s::uuid) AS h "
        "GROUP BY h.reason ORDER BY h.reason",
        (client_id,),
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


class _Session:
    """One connection of the runner (one per worker thread), reopened when it broke."""

    def __init__(self, target: database.Target) -> None:
        self.target = target
        self._conn: psycopg.Connection | None = None
        self.notices: list[str] = []
        self._unreachable: str | None = None

    def _on_notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized in ("WARNING", "NOTICE") and diag.message_primary:
            self.notices.append(diag.message_primary)

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
                pass  # the statement ends anyway; the worker sees the stop before its next batch

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _ClientRun:
    """A client's run shared by the worker that started it and the workers helping it."""

    def __init__(self, result: ClientResult) -> None:
        self.result = result
        self.open = True  # helpers may join until a batch comes back short (or the run stops)
        self.stopping = False  # helpers stop after their batch in flight (the run failed or is stopped)
        self.helpers = 0
        self.out_of_time = False  # a helper stopped at the budget with due leads maybe left
        self.helper_error: str | None = None


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

    def next_task(self, dry_run: bool) -> tuple[str, Any] | None:
        """('start', client_id), ('help', run) or None when there is nothing left for this worker.

        With no client left to start, an idle worker waits until a run opens for help or
        every client is done."""
        with self.cond:
            while True:
                if self.stop is not None:
                    return None
                if self.pending:
                    self.active += 1
                    return ("start", self.pending.popleft())
                if dry_run or self.workers == 1:
                    return None
                runs = [r for r in self.open_runs if r.open and r.helper_error is None]
                if runs:
                    # the run with the fewest helpers, then the one with the most batches done (the biggest)
                    run = min(runs, key=lambda r: (r.helpers, -r.result.batches))
                    run.helpers += 1
                    return ("help", run)
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
            self.open_runs.append(run)
            self.cond.notify_all()

    def close(self, run: _ClientRun) -> None:
        with self.cond:
            run.open = False

    def helper_done(self, run: _ClientRun) -> None:
        with self.cond:
            run.helpers -= 1
            self.cond.notify_all()

    def wait_for_helpers(self, run: _ClientRun, *, stop_them: bool) -> None:
        """Close the run to new helpers and wait until its helpers have left (after their batch in
        flight when `stop_them`, else when their batches come back short)."""
        with self.cond:
            run.open = False
            run.stopping = run.stopping or stop_them
            if run in self.open_runs:
                self.open_runs.remove(run)
            while run.helpers:
                self.cond.wait()

    def record(self, run: _ClientRun, rows: list[tuple]) -> None:
        """A batch's rows into the run's result (any worker's)."""
        result = run.result
        completed = sum(1 for r in rows if r[2] == "completed")
        opted_out = sum(1 for r in rows if r[2] == "opted_out")
        with self.cond:
            result.batches += 1
            result.leads_de_enrolled += completed + opted_out
            result.completed += completed
            result.opted_out += opted_out
            result.newly_held += sum(1 for r in rows if r[2] == "held")
        self.notify("batch_done", result, completed + opted_out)


def _more_may_be_due(rows: list[tuple], size: int) -> bool:
    """Whether the client may have more due leads after this batch.

    Held and deferred leads fill a batch too, so a full batch means more may be due; and a
    batch that ran out of its subtransaction budget returns the leads it did not get to as
    'deferred' (untouched): the next batch, a new transaction, takes them.
    """
    return len(rows) >= size or any(r[2] == "deferred" for r in rows)


class Runner:
    """One invocation of `deenroll run`."""

    def __init__(self, target: database.Target, options: RunOptions, observer: Observer | None = None) -> None:
        self.target = target
        self.options = options
        self.observer: Observer = observer or LogObserver()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.main = _Session(target)

    # -- the run ---------------------------------------------------------------

    def run(self) -> RunReport:
        report = RunReport(self.options, datetime.now(timezone.utc))
        t0 = time.monotonic()
        deadline = t0 + self.options.max_runtime_ms / 1000.0
        try:
            conn = self.main.conn
            check_prerequisites(conn)
            clients = _clients(conn, self.options.client_id)
            self.observer.clients_found(len(clients))
            results = self._work(clients, deadline)
            report.clients.extend(results[c] for c in clients if c in results)
            if not self.options.dry_run and self.options.client_id is None:
                self._fold_everything(report)
        finally:
            self.main.close()
        report.duration_ms = int((time.monotonic() - t0) * 1000)
        if not self.options.dry_run and report.exit_code:
            report.alert = alerts.post_alert("run", _alert_payload(report), summary=_alert_summary(report, self.host))
        return report

    def _work(self, clients: list[str], deadline: float) -> dict[str, ClientResult]:
        """Every client, by one worker (this thread, on the main connection) or by several threads."""
        workers = self.options.workers
        if not clients:
            workers = 1
        elif self.options.dry_run:
            workers = min(workers, len(clients))  # a dry run only counts: one client per worker
        sched = _Scheduler(clients, workers, self.observer)
        results: dict[str, ClientResult] = {}
        if workers == 1:
            self._worker(self.main, sched, deadline, results)
            return results
        self.main.close()  # the workers have their own; the final fold reconnects
        sessions = [_Session(self.target) for _ in range(workers)]
        threads = [
            threading.Thread(target=self._worker, args=(s, sched, deadline, results), name=f"deenroll-worker-{i + 1}")
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

    def _worker(self, session: _Session, sched: _Scheduler, deadline: float, results: dict[str, ClientResult]) -> None:
        try:
            self._work_loop(session, sched, deadline, results)
        except BaseException as exc:
            if threading.current_thread() is threading.main_thread():
                raise
            sched.stopped(exc, crash=True)  # a worker thread's error ends the run, in the main thread
        finally:
            if session is not self.main:
                session.close()
            sched.worker_done()

    def _work_loop(
        self, session: _Session, sched: _Scheduler, deadline: float, results: dict[str, ClientResult]
    ) -> None:
        while True:
            task = sched.next_task(self.options.dry_run)
            if task is None:
                return
            kind, what = task
            if kind == "help":
                self._help(session, sched, what, deadline)
                continue
            try:
                sched.notify("client_started", what)
                if self.options.dry_run:
                    result = self._dry_run_client(session, what)
                else:
                    result = self._run_client(session, sched, what, deadline)
                with sched.cond:
                    results[what] = result
            finally:
                sched.client_done()
            sched.notify("client_done", result)

    def _fold_everything(self, report: RunReport) -> None:
        """Fold the deltas of campaigns no client run touched (clients without an active campaign)."""
        try:
            conn = self.main.conn
            report.deltas_folded = conn.execute(
                "WITH s AS MATERIALIZED (SELECT pg_catalog.set_config('lock_timeout', %s::text, true)) "
                "SELECT public.apply_campaign_stats_deltas() FROM s",
                (f"{max(self.options.max_runtime_ms, LOCK_WAIT_FLOOR_MS)}ms",),
            ).fetchone()[0]
        except (psycopg.Error, UserError) as exc:
            self.main.abandon()
            report.fold_error = f"folding the remaining counter deltas failed: {_first_line(exc)}"
            log.error(report.fold_error)

    def _dry_run_client(self, session: _Session, client_id: str) -> ClientResult:
        t0 = time.monotonic()
        result = ClientResult(client_id, status="dry_run")
        conn = session.conn
        rows = conn.execute(
            "SELECT campaign_id, campaign_name, total_messages, completed, opted_out "
            "FROM public.count_leads_for_de_enrollment(%s::uuid)",
            (client_id,),
        ).fetchall()
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

    def _run_client(self, session: _Session, sched: _Scheduler, client_id: str, deadline: float) -> ClientResult:
        t0 = time.monotonic()
        result = ClientResult(client_id)
        session.notices.clear()
        try:
            conn = session.conn
            # The pid the server announced at login: the session's own on a direct connection,
            # a pooler's invention behind a pooler (the database tells them apart).
            row = conn.execute(
                "SELECT public.start_de_enrollment_run(%s::uuid, %s::integer, %s::integer, %s::text, %s::integer, "
                "%s::integer, %s::integer)",
                (client_id, self.options.batch_size, self.options.max_runtime_ms, self.host, self.pid,
                 conn.info.backend_pid, self.options.lease_ms),
            ).fetchone()
        except (psycopg.Error, UserError) as exc:
            session.abandon()
            result.status = "failed"
            result.error = f"could not start a run: {_first_line(exc)}"
            result.duration_ms = int((time.monotonic() - t0) * 1000)
            return result
        run_id = row[0] if row else None
        if run_id is None:
            result.status = "skipped"
            # the NOTICE names the run that holds the client's lease
            result.error = session.notices[-1] if session.notices else "another deenroll run is processing this client"
            result.duration_ms = int((time.monotonic() - t0) * 1000)
            return result
        result.warnings.extend(session.notices)
        result.run_id = str(run_id)
        run = _ClientRun(result)

        try:
            status, details = self._process(session, sched, run, deadline)
            conn.execute(
                "SELECT public.apply_client_stats_deltas(%s::uuid) FROM public.de_enrollment_heartbeat(%s::uuid)",
                (client_id, result.run_id),
            )
            self._finish(session, result, status, details)
        except Exception as exc:  # noqa: BLE001 - one client's failure never stops the others
            sched.wait_for_helpers(run, stop_them=True)
            self._record_failure(session, sched, result, exc)
        except BaseException as exc:  # interrupted: leave a truthful row behind, then stop
            sched.stopped(exc)
            sched.wait_for_helpers(run, stop_them=True)
            self._record_failure(session, sched, result, exc)
            raise
        result.duration_ms = result.duration_ms or int((time.monotonic() - t0) * 1000)
        return result

    def _process(self, session: _Session, sched: _Scheduler, run: _ClientRun, deadline: float) -> tuple[str, str | None]:
        """The batch loop of the worker that started the run; returns the status to record and the details."""
        result = run.result
        conn = session.conn
        invalid = _invalid_campaigns(conn, result.client_id)
        result.invalid_campaigns = invalid
        problems = [c.describe() for c in invalid]
        size = self.options.batch_size
        sched.opened(run)
        out_of_time = False
        while True:
            if sched.stop is not None:
                raise _Stopped()
            if run.helper_error is not None:
                raise _HelperFailed(run.helper_error)
            if time.monotonic() >= deadline:
                out_of_time = True
                break
            rows = self._batch(session, result.run_id, result.client_id, size)
            sched.record(run, rows)
            if not _more_may_be_due(rows, size):
                break
        sched.wait_for_helpers(run, stop_them=False)
        if sched.stop is not None:
            raise _Stopped()
        if run.helper_error is not None:
            raise _HelperFailed(run.helper_error)
        if out_of_time or run.out_of_time:
            problems.insert(
                0,
                f"runtime budget of {self.options.max_runtime_ms} ms ran out after "
                f"{result.batches} batch{'es' if result.batches != 1 else ''}; due leads may remain for the next run",
            )
        result.held = _held(conn, result.client_id)
        status = "partial" if problems else "success"
        if result.held:
            # Held leads alone leave the run a success (it did all it could); they are reported.
            problems.append(f"{describe_held(result.held)}: `deenroll stuck` lists them")
        return status, ("; ".join(problems) or None)

    def _help(self, session: _Session, sched: _Scheduler, run: _ClientRun, deadline: float) -> None:
        """Claim batches of another worker's client under its run until they come back short."""
        result = run.result
        size = self.options.batch_size
        try:
            while not run.stopping and sched.stop is None:
                if time.monotonic() >= deadline:
                    run.out_of_time = True
                    break
                rows = self._batch(session, result.run_id, result.client_id, size)
                sched.record(run, rows)
                if not _more_may_be_due(rows, size):
                    break
        except Exception as exc:  # noqa: BLE001 - the run's own worker records it
            session.abandon()
            with sched.cond:
                if run.helper_error is None:
                    run.helper_error = f"a helping worker failed: {_describe(exc)}"
        finally:
            sched.close(run)
            sched.helper_done(run)

    def _batch(self, session: _Session, run_id: str | None, client_id: str, size: int) -> list[tuple]:
        """One heartbeat-claim-and-process statement, its own transaction; a lost deadlock or a lock wait
        that ran out (lock_timeout) is retried: the batch was rolled back whole."""
        for attempt in range(1, BATCH_RETRIES + 1):
            try:
                return session.conn.execute(BATCH_SQL, (run_id, client_id, size)).fetchall()
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.LockNotAvailable) as exc:
                if attempt == BATCH_RETRIES:
                    raise
                log.warning("client %s: batch lost a lock race (%s), retrying", client_id, _first_line(exc))
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def _finish(self, session: _Session, result: ClientResult, status: str, details: str | None) -> None:
        row = session.conn.execute(
            "SELECT status, leads_evaluated, leads_de_enrolled, leads_completed, leads_opted_out, batches, "
            "duration_ms, error_details FROM public.finish_de_enrollment_run(%s::uuid, %s::text, %s::text)",
            (result.run_id, status, details),
        ).fetchone()
        if row is None:
            raise RuntimeError(f"run {result.run_id} vanished")
        (result.status, result.leads_evaluated, result.leads_de_enrolled, result.completed,
         result.opted_out, result.batches, duration, result.error) = row
        result.duration_ms = duration or 0

    def _record_failure(self, session: _Session, sched: _Scheduler, result: ClientResult, exc: BaseException) -> None:
        """Roll back the current batch and close the run as failed, on a fresh connection if need be."""
        stop = sched.stop if sched.stop is not None else exc
        if isinstance(exc, _HelperFailed):
            message = str(exc)
        elif isinstance(stop, Terminated):
            message = "terminated (SIGTERM) before finishing"
        elif isinstance(stop, KeyboardInterrupt):
            message = "interrupted (SIGINT) before finishing"
        else:
            message = _describe(exc)
        session.abandon()
        result.status = "failed"
        result.error = message
        try:
            try:
                self._finish(session, result, "failed", message)
            except pg_errors.QueryCanceled:
                # a stop's cancel request, sent from another thread, may land on this statement
                # instead of the one it was meant for: it is sent once, so once more is enough
                session.abandon()
                self._finish(session, result, "failed", message)
            result.status = "failed"
        except (psycopg.Error, UserError) as second:
            session.abandon()
            result.error = f"{message}; the run row could not be closed either: {_first_line(second)}"
            result.status = "failed"


class _Stopped(Exception):
    """A worker's client interrupted by the stop signal another thread received."""


class _HelperFailed(Exception):
    """A worker helping this client failed: the client's run fails with its message."""


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
