"""`deenroll run`: one CALL of the run's procedure per connection, and what the calls report.

Every decision of the run (which clients, in what order, which call takes which, helping the
runs in progress, the final fold, the deadline) is the procedure's. Here: the connections, a
run id that makes the calls of this process one run (p_run_group), the progress messages
gathered into a report, reconnecting while a server restarts, stop signals (the runs they cut
are closed 'failed' with the signal's name), the dry run, the alert webhook.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from .. import alerts, database, queries, sqlfiles
from ..errors import UserError, one_line
from . import options as run_options
from .options import RunOptions, Terminated
from .report import ClientResult, LogObserver, RunReport, alert_payload, fill
from .session import Event, Session

log = logging.getLogger("deenroll.run")
RECONNECT_ENV = "DEENROLL_RECONNECT_WAIT"  # seconds a lost connection is tried again (a restart)


def check_prerequisites(conn: psycopg.Connection) -> None:
    """One clear line when the schema is not there (every function and view file of this version
    has its object in the database) or row-level security hides leads from us."""
    defs = sqlfiles.definitions()
    missing = [what for (what,) in queries.run(conn, "run_missing_definitions", kinds=[d.kind for d in defs],
                                                schemas=[d.schema for d in defs], names=[d.name for d in defs])]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise UserError(f"the database is not ready for de-enrollment ({shown} missing): run `deenroll migrate` first")
    blind = [r[0] for r in queries.run(conn, "rls_blind_spots")]
    if blind:
        raise UserError("row-level security hides leads from deenroll: " + "; ".join(blind)
                        + " (grant BYPASSRLS to that role or make it the tables' owner, then run again)")


def _client_error(exc: pg_errors.InvalidParameterValue) -> UserError:
    return UserError(f"{exc.diag.message_primary} (check --client-id)")


class Run:
    """One invocation of `deenroll run`: its calls, and what they report, gathered under a lock."""

    def __init__(self, target: database.Target, options: RunOptions, observer: LogObserver) -> None:
        self.target, self.options, self.observer = target, options, observer
        self.group = str(uuid.uuid4())
        self.reconnect_wait = database.env_seconds(RECONNECT_ENV, 60, 0)
        self.lock = threading.Lock()
        self.results: dict[str, ClientResult] = {}  # by client, in the order they were reported
        self.by_run: dict[str, ClientResult] = {}  # every run a call opened
        self.open: dict[str, str] = {}  # client -> its run, opened and not reported yet
        self.stop: BaseException | None = None  # a stop signal, or a call's error that ends the run
        self.lost: str | None = None  # why a call could not go on: its database stayed out of reach
        self.counted = False  # the first call's queue is the run's
        self.report = RunReport(options, datetime.now(timezone.utc))

    def on_event(self, session: Session, event: Event) -> None:
        """A progress message of the procedure, from any connection."""
        kind = event["event"]
        with self.lock:
            if kind == "queue" and not self.counted:
                self.counted = True
                self.observer.clients_found(int(event["clients"]))
            elif kind == "started":
                client_id = str(event["client_id"])
                result = self.results.setdefault(client_id, ClientResult(client_id))
                result.run_id = self.open[client_id] = str(event["run_id"])
                self.by_run[result.run_id] = result
                self.observer.client_started(client_id)
            elif kind == "batch" and self.by_run.get(event["run_id"], ClientResult("", status="")).status == "running":
                result = self.by_run[event["run_id"]]  # progress only: a result, once reported, is its row's
                result.batches += 1
                for key in ("completed", "opted_out"):
                    setattr(result, key, getattr(result, key) + int(event[key]))
                    result.leads_de_enrolled += int(event[key])
                result.newly_held += int(event["held"])
                self.observer.batch_done(result, int(event["completed"]) + int(event["opted_out"]))
            elif kind == "retry":
                log.warning("client %s: batch lost a lock race (%s), retrying", event["client_id"], event["error"])
            elif kind == "client":
                self._reported(event["result"], session.notices)
                session.notices = []

    def _reported(self, summary: dict[str, Any], notices: list[str]) -> None:
        """A client's result as the procedure reported it (under the lock)."""
        result = self.results.setdefault(str(summary["client_id"]), ClientResult(str(summary["client_id"])))
        fill(result, summary)
        if result.status == "skipped" and notices:
            result.error = notices[-1]  # the NOTICE names the run that holds the client's lease
        else:
            result.warnings.extend(notices)
        self.open.pop(result.client_id, None)
        self.observer.client_done(result)

    def call(self, session: Session) -> None:
        """One CALL of the procedure on this connection; again, for the same run, after a lost connection."""
        warned = False
        while True:
            try:
                (summary,) = queries.one(
                    session.conn, "run_call", client_id=self.options.client_id, batch_size=self.options.batch_size,
                    max_runtime_ms=self.options.max_runtime_ms, lease_ms=self.options.lease_ms,
                    host=socket.gethostname(), pid=os.getpid(), login_pid=session.conn.info.backend_pid,
                    run_group=self.group,
                )
                break
            except pg_errors.InvalidParameterValue as exc:
                raise _client_error(exc) from None
            except (psycopg.OperationalError, UserError) as exc:
                if self.stop is not None or not session.lost:
                    raise
                problem = session.reconnect(self.reconnect_wait, lambda: self.stop is not None)
                if problem is not None:
                    self.lost = (f"the connection to the database was lost ({one_line(exc)}) and could not be made "
                                 f"again within {self.reconnect_wait} s: {problem}")
                    return
                if not warned:
                    log.warning("the connection to the database was lost (%s); reconnected, going on with it",
                                one_line(exc))
                    warned = True
        with self.lock:
            for client in summary["clients"]:  # each reported already, unless a message went missing
                if self.results.get(str(client["client_id"]), ClientResult("")).status == "running":
                    self._reported(client, [])
            self.report.deltas_folded += int(summary["deltas_folded"] or 0)
            self.report.fold_error = self.report.fold_error or summary["fold_error"]

    def calls(self) -> None:
        """One call per worker, each on a connection of its own, until every call has returned."""
        sessions = [Session(self.target, self.on_event) for _ in range(self.options.workers)]
        pool = ThreadPoolExecutor(len(sessions), thread_name_prefix="deenroll-worker")
        futures = [pool.submit(self.call, s) for s in sessions]
        try:
            while True:  # short waits, not one long one: a stop signal is raised in this thread between them
                done, pending = wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
                if not pending or any(f.exception() for f in done):
                    break  # a call that failed lets the others finish theirs
        except BaseException as exc:
            self.stop = exc
            raise
        finally:
            if self.stop is not None:  # every call is cancelled: its runs are closed after
                for s in sessions:
                    s.cancel()
            pool.shutdown(wait=True)
            for s in sessions:
                s.close()
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            self.stop = errors[0]
            raise errors[0]

    def close_open_runs(self, session: Session) -> None:
        """Runs a call opened and could not report (a stop, a lost database): closed 'failed', truthfully."""
        stop = self.stop
        message = (self.lost or "its call ended without reporting it" if stop is None
                   else "terminated (SIGTERM) before finishing" if isinstance(stop, Terminated)
                   else "interrupted (SIGINT) before finishing" if isinstance(stop, KeyboardInterrupt)
                   else f"{type(stop).__name__}: {one_line(stop)}")
        for client_id, run_id in list(self.open.items()):
            result = self.results[client_id]
            result.status, result.error = "failed", message
            for attempt in (1, 2):  # a stop's cancel request may land on the first one
                try:
                    fill(result, queries.rows(session.conn, "run_close_failed", run_id=run_id, message=message)[0])
                    break
                except (psycopg.Error, UserError, IndexError) as exc:  # IndexError: the row is gone
                    session.close(unless_idle=True)
                    if attempt == 2 or not isinstance(exc, pg_errors.QueryCanceled):
                        result.error = f"{message}; the run row could not be closed either: {one_line(exc)}"
                        break
            result.status = "failed"
            del self.open[client_id]
            self.observer.client_done(result)

    def dry_run(self, conn: psycopg.Connection) -> None:
        """What a run would do, per client, in one statement; nothing is changed."""
        try:
            rows = queries.rows(conn, "dry_run", client_id=self.options.client_id)
        except pg_errors.InvalidParameterValue as exc:
            raise _client_error(exc) from None
        self.observer.clients_found(len(rows))
        for r in rows:
            result = self.results[r["client_id"]] = ClientResult(
                r["client_id"], status="dry_run", campaigns=r["campaigns"], invalid_campaigns=r["invalid_campaigns"],
                held=dict(sorted(r["held"].items())),
                completed=sum(c["completed"] for c in r["campaigns"]), opted_out=sum(c["opted_out"] for c in r["campaigns"]))
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
                main.close()
                try:
                    self.calls()
                finally:
                    self.close_open_runs(main)
        finally:
            main.close()
            self.report.clients = list(self.results.values())
        report = self.report
        report.fold_error = report.fold_error or self.lost  # a lost call's last steps (help, fold) were cut
        report.exit_code = 2  # unless the database says otherwise: one out of reach fails the run
        if not self.lost:
            try:
                report.exit_code = queries.value(
                    main.conn, "run_exit_code", clients=Jsonb([c.to_json() for c in report.clients]),
                    fold_error=report.fold_error, dry_run=self.options.dry_run)
            except (psycopg.Error, UserError) as exc:
                report.fold_error = report.fold_error or f"the run's exit status could not be read: {one_line(exc)}"
            finally:
                main.close()
        report.duration_ms = int((time.monotonic() - t0) * 1000)
        if not self.options.dry_run and report.exit_code:
            report.alert = alerts.post_alert(
                lambda: alerts.run_document(self.target, alert_payload(report), socket.gethostname()), kind="run")
        return report


def run(target: database.Target, options: RunOptions, observer: LogObserver | None = None) -> RunReport:
    """Run (or dry-run) the de-enrollment for every client with work, or the one asked for."""
    return Run(target, options, observer or LogObserver()).execute()
