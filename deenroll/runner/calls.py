"""`deenroll run`: one CALL of the run's loop per connection (`--workers N`), sharing one run id
(p_run_group), and what the calls report; runs a stop signal cut are closed 'failed' after."""

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
from .report import ClientResult, Observer, RunReport, alert_payload, fill
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

    def __init__(self, target: database.Target, options: RunOptions, observer: Observer) -> None:
        self.target, self.options, self.observer = target, options, observer
        self.group = str(uuid.uuid4())
        self.reconnect_wait = database.env_seconds(RECONNECT_ENV, 60, 0)
        self.lock = threading.Lock()
        # by client, in the order they were reported; 'running': a run opened and not reported yet
        self.results: dict[str, ClientResult] = {}
        self.stop: BaseException | None = None  # a stop signal, or a call's error that ends the run
        self.lost: str | None = None  # why a call could not go on: its database stayed out of reach
        self.found: int | None = None  # clients in the run's queue
        self.report = RunReport(options, datetime.now(timezone.utc))

    def on_event(self, session: Session, event: Event) -> None:
        """A progress message of the procedure, from any connection."""
        kind, client_id = event["event"], str(event.get("client_id"))
        with self.lock:
            result = self.results.get(client_id)
            if kind == "queue" and self.found is None:  # the first call's queue is the run's
                self.found = int(event["clients"])
                self.observer.clients_found(self.found)
            elif kind == "started":
                result = self.results.setdefault(client_id, ClientResult(client_id))
                result.run_id = str(event["run_id"])
                self.observer.client_started(client_id)
            elif kind == "batch" and result and result.status == "running" and result.run_id == event["run_id"]:
                done = int(event["completed"]) + int(event["opted_out"])  # progress: the row's counts win
                result.batches, result.leads_de_enrolled = result.batches + 1, result.leads_de_enrolled + done
                result.completed += int(event["completed"])
                result.opted_out += int(event["opted_out"])
                result.newly_held += int(event["held"])
                self.observer.batch_done(result, done)
            elif kind == "retry":
                log.warning("client %s: batch lost a lock race (%s), retrying", client_id, event["error"])
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
        cut = {r.run_id: r for r in self.results.values() if r.status == "running"}
        stop = self.stop
        message = (self.lost or "its call ended without reporting it" if stop is None
                   else "terminated (SIGTERM) before finishing" if isinstance(stop, Terminated)
                   else "interrupted (SIGINT) before finishing" if isinstance(stop, KeyboardInterrupt)
                   else f"{type(stop).__name__}: {one_line(stop)}")
        for result in cut.values():
            result.status, result.error = "failed", message
        for attempt in (1, 2) if cut else ():  # a stop's cancel request may land on the first one
            try:
                for row in queries.rows(session.conn, "run_close_failed", run_ids=list(cut), message=message):
                    fill(cut[row["run_id"]], row)
                break
            except (psycopg.Error, UserError) as exc:
                session.close(unless_idle=True)
                if attempt == 2 or not isinstance(exc, pg_errors.QueryCanceled):
                    for result in cut.values():
                        result.error = f"{message}; the run row could not be closed either: {one_line(exc)}"
                    break
        for result in cut.values():
            result.status = "failed"
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


def run(target: database.Target, options: RunOptions, observer: Observer | None = None) -> RunReport:
    """Run (or dry-run) the de-enrollment for every client with work, or the one asked for."""
    return Run(target, options, observer or Observer()).execute()
