"""The run on the client side: one CALL of the run's procedure per connection, and what the
calls report.

Every decision of the run (which clients, in what order, who takes which, helping the runs
still open, the final fold, the deadline) is the procedure's. Here: the connections, a run id
of this process that makes its calls share one run (p_run_group), the progress messages turned
into a report, reconnecting while a server restarts, stop signals (the runs cut short are
closed 'failed' with the signal's name), the dry run in one statement, the alert webhook.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

import psycopg
from psycopg import errors as pg_errors

from .. import alerts, database, queries, sqlfiles
from ..errors import UserError, one_line
from . import options as run_options
from .options import RunOptions, Terminated
from .report import ClientResult, LogObserver, Observer, RunReport, alert_payload, alert_summary, fill
from .session import Event, Session, reconnect_wait

log = logging.getLogger("deenroll.run")


def check_prerequisites(conn: psycopg.Connection) -> None:
    """One clear line when the schema is not there: every function and view file of this version
    must have its object in the database (the views cannot exist without the tables they read)."""
    defs = sqlfiles.definitions()
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


def _stop_message(stop: BaseException) -> str:
    if isinstance(stop, Terminated):
        return "terminated (SIGTERM) before finishing"
    if isinstance(stop, KeyboardInterrupt):
        return "interrupted (SIGINT) before finishing"
    return one_line(stop) if isinstance(stop, psycopg.Error) else f"{type(stop).__name__}: {one_line(stop)}"


class Run:
    """One invocation of `deenroll run`: its calls, and what they report, gathered."""

    def __init__(self, target: database.Target, options: RunOptions, observer: Observer) -> None:
        self.target = target
        self.options = options
        self.observer = observer
        self.group = str(uuid.uuid4())  # the calls of this run share its clients and its deadline
        self.reconnect_wait = reconnect_wait()
        self.lock = threading.Lock()
        self.results: dict[str, ClientResult] = {}  # by client, in the order they were reported
        self.by_run: dict[str, ClientResult] = {}
        self.open: dict[str, str] = {}  # client -> the run a call opened for it and has not reported
        self.counted = False
        self.stop: BaseException | None = None
        self.lost: str | None = None  # why a call could not go on: its database stayed out of reach
        self.crash: BaseException | None = None
        self.report = RunReport(options, datetime.now(timezone.utc))

    # -- what the procedure reports ----------------------------------------------

    def on_event(self, session: Session, event: Event) -> None:
        kind = event.get("event")
        with self.lock:
            if kind == "queue" and not self.counted:
                self.counted = True
                self.observer.clients_found(int(event.get("clients", 0)))
            elif kind == "started":
                client_id, run_id = str(event["client_id"]), str(event["run_id"])
                result = self.results.setdefault(client_id, ClientResult(client_id))
                result.run_id = run_id
                self.by_run[run_id] = result
                self.open[client_id] = run_id
                self.observer.client_started(client_id)
            elif kind == "batch" and self.by_run.get(str(event.get("run_id")), ClientResult("", status="")).status == "running":
                # progress only: the client's result, once reported, is its run row's
                result = self.by_run[str(event["run_id"])]
                completed, opted_out = int(event.get("completed", 0)), int(event.get("opted_out", 0))
                result.batches += 1
                result.completed += completed
                result.opted_out += opted_out
                result.leads_de_enrolled += completed + opted_out
                result.newly_held += int(event.get("held", 0))
                self.observer.batch_done(result, completed + opted_out)
            elif kind == "retry":
                log.warning("client %s: batch lost a lock race (%s), retrying", event.get("client_id"), event.get("error"))
            elif kind == "client":
                self._reported(event["result"], session.notices)
                session.notices = []

    def _reported(self, summary: dict, notices: list[str]) -> None:
        """A client's result, from the procedure (under the lock)."""
        client_id = str(summary["client_id"])
        result = self.results.setdefault(client_id, ClientResult(client_id))
        fill(result, summary)
        ours = set(self.by_run) - {result.run_id}  # this run's own dead runs, taken over after a reconnect
        notices = [n for n in notices if not any(run_id in n for run_id in ours)]
        if result.status == "skipped" and notices:
            result.error = notices[-1]  # the NOTICE names the run that holds the client's lease
        else:
            result.warnings.extend(notices)
        self.open.pop(client_id, None)
        self.observer.client_done(result)

    # -- the calls ---------------------------------------------------------------

    def call(self, session: Session) -> None:
        """One CALL of the procedure on this connection; again, for the same run, after a lost connection."""
        warned = False
        while True:
            try:
                (summary,) = queries.one(
                    session.conn, "run_call",
                    client_id=self.options.client_id, batch_size=self.options.batch_size,
                    max_runtime_ms=self.options.max_runtime_ms, lease_ms=self.options.lease_ms,
                    host=socket.gethostname(), pid=os.getpid(), login_pid=session.conn.info.backend_pid,
                    run_group=self.group,
                )
                break
            except pg_errors.InvalidParameterValue as exc:
                raise UserError(f"{exc.diag.message_primary} (check --client-id)") from None
            except (psycopg.OperationalError, UserError) as exc:
                if self.stop is not None or not session.lost:
                    raise
                problem = session.reconnect(self.reconnect_wait, lambda: self.stop is not None)
                if problem is not None:
                    with self.lock:
                        self.lost = (f"the connection to the database was lost ({one_line(exc)}) and could not "
                                     f"be made again within {self.reconnect_wait:g} s: {problem}")
                    return
                if not warned:
                    log.warning("the connection to the database was lost (%s); reconnected, going on with the run",
                                one_line(exc))
                    warned = True
        with self.lock:
            for client in summary["clients"]:  # reported already, unless a message went missing
                if self.results.get(str(client["client_id"]), ClientResult("")).status == "running":
                    self._reported(client, [])
            self.report.deltas_folded += int(summary.get("deltas_folded") or 0)
            self.report.fold_error = self.report.fold_error or summary.get("fold_error")

    def worker(self, session: Session, done: threading.Semaphore) -> None:
        try:
            self.call(session)
        except BaseException as exc:  # noqa: BLE001 - raised by the main thread once every call ended
            with self.lock:
                if self.stop is None:
                    self.crash = self.crash or exc
                    self.stop = exc
        finally:
            session.close()
            done.release()

    def calls(self, main: Session) -> None:
        """One call on the main connection, or one per worker thread."""
        if self.options.workers == 1:
            try:
                self.call(main)
            except BaseException as exc:
                self.stop = exc
                raise
            return
        main.close()
        sessions = [Session(self.target, self.on_event) for _ in range(self.options.workers)]
        done = threading.Semaphore(0)
        threads = [threading.Thread(target=self.worker, args=(s, done), name=f"deenroll-worker-{i + 1}")
                   for i, s in enumerate(sessions)]
        for t in threads:
            t.start()
        finished = 0
        try:
            # Waits on a semaphore, not in Thread.join(): a signal's exception raised inside join()
            # can leave a thread that still runs marked as finished.
            while finished < len(threads):
                if done.acquire(timeout=0.5):
                    finished += 1
        except BaseException as exc:  # a stop signal: every call is cancelled, then the run stops
            self.stop = exc
            for s in sessions:
                s.cancel()
            for t in threads:
                t.join()
            raise
        if self.crash is not None:
            raise self.crash

    def close_open_runs(self, main: Session) -> None:
        """Runs a call opened and could not report (a stop, a lost database): closed 'failed', truthfully."""
        main.abandon()
        message = _stop_message(self.stop) if self.stop is not None else self.lost or "its call ended without a word"
        for client_id, run_id in list(self.open.items()):
            result = self.results[client_id]
            result.status, result.error = "failed", message
            try:
                try:
                    rows = queries.rows(main.conn, "run_close_failed", run_id=run_id, message=message)
                except pg_errors.QueryCanceled:
                    # a stop's cancel request may land on this statement instead of the CALL: once more
                    main.abandon()
                    rows = queries.rows(main.conn, "run_close_failed", run_id=run_id, message=message)
                if rows:
                    fill(result, rows[0])
                    result.status = "failed"
            except (psycopg.Error, UserError) as exc:
                main.abandon()
                result.error = f"{message}; the run row could not be closed either: {one_line(exc)}"
            del self.open[client_id]
            self.observer.client_done(result)

    def dry_run(self, conn: psycopg.Connection) -> None:
        """What a run would do, per client, in one statement; nothing is changed."""
        try:
            rows = queries.rows(conn, "dry_run", client_id=self.options.client_id)
        except pg_errors.InvalidParameterValue as exc:
            raise UserError(f"{exc.diag.message_primary} (check --client-id)") from None
        self.observer.clients_found(len(rows))
        for r in rows:
            result = ClientResult(r["client_id"], status="dry_run", campaigns=r["campaigns"],
                                  invalid_campaigns=r["invalid_campaigns"],
                                  held={k: int(v) for k, v in sorted(r["held"].items())})
            result.completed = sum(int(c["completed"]) for c in result.campaigns)
            result.opted_out = sum(int(c["opted_out"]) for c in result.campaigns)
            self.results[result.client_id] = result
            self.observer.client_done(result)

    def execute(self) -> RunReport:
        t0 = time.monotonic()
        main = Session(self.target, self.on_event)
        try:
            check_prerequisites(main.conn)
            run_options.check(main.conn, self.options)
            if self.options.dry_run:
                self.dry_run(main.conn)
            else:
                try:
                    self.calls(main)
                finally:
                    if self.open:
                        self.close_open_runs(main)
        finally:
            main.close()
            self.report.clients = list(self.results.values())
        if self.lost and not self.report.fold_error:  # the call's last steps (help, fold) were cut
            self.report.fold_error = self.lost
        self.report.duration_ms = int((time.monotonic() - t0) * 1000)
        report = self.report
        if not self.options.dry_run and report.exit_code:
            report.alert = alerts.post_alert("run", alert_payload(report), summary=alert_summary(report, socket.gethostname()))
        return report


def run(target: database.Target, options: RunOptions, observer: Observer | None = None) -> RunReport:
    """Run (or dry-run) the de-enrollment for every client with work, or the one asked for."""
    return Run(target, options, observer or LogObserver()).execute()
