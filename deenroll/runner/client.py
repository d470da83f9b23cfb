"""The run on the client side: one CALL of the run's procedure per client on each worker's
connection, reconnecting, stop signals, the dry run and the final fold."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from .. import alerts, database, queries, sqlfiles
from ..errors import UserError, one_line
from . import options as run_options
from .options import RunOptions, Terminated
from .report import (
    CampaignIssue, ClientResult, LogObserver, Observer, RunReport, alert_payload, alert_summary, fill,
)
from .session import Event, Session
from .workers import ClientRun, Scheduler, Task

log = logging.getLogger("deenroll.run")

RECONNECTS = 3  # a client whose connection is lost is called again after reconnecting, this often at most


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


def _clients(conn: psycopg.Connection, only: str | None) -> list[str]:
    if only is not None:
        if not queries.value(conn, "run_client_exists", client_id=only):
            raise UserError(f"client {only} has no campaigns and no leads: nothing to de-enroll (check --client-id)")
        return [only]
    return [r[0] for r in queries.run(conn, "run_clients").fetchall()]


def _invalid_campaigns(conn: psycopg.Connection, client_id: str) -> list[CampaignIssue]:
    return [
        CampaignIssue(str(r["campaign_id"]), r["campaign_name"], r["messages_type"], int(r["active_leads"]))
        for r in queries.rows(conn, "invalid_campaigns", client_id=client_id)
    ]


def _held(conn: psycopg.Connection, client_id: str) -> dict[str, int]:
    """The client's held leads (the ones a run skips), counted by reason."""
    return {str(r["reason"]): int(r["leads"]) for r in queries.rows(conn, "held_by_reason", client_id=client_id)}


class Runner:
    """One invocation of `deenroll run`."""

    def __init__(self, target: database.Target, options: RunOptions, observer: Observer | None = None) -> None:
        self.target = target
        self.options = options
        self.observer: Observer = observer or LogObserver()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.main = Session(target)
        self.deadline: datetime | None = None  # on the database's clock

    # -- the run ---------------------------------------------------------------

    def run(self) -> RunReport:
        report = RunReport(self.options, datetime.now(timezone.utc))
        t0 = time.monotonic()
        try:
            conn = self.main.conn
            check_prerequisites(conn)
            run_options.check(conn, self.options)
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
            report.alert = alerts.post_alert("run", alert_payload(report), summary=alert_summary(report, self.host))
        return report

    def _work(self, clients: list[str]) -> dict[str, ClientResult]:
        """Every client, by one worker (this thread, on the main connection) or by several threads."""
        workers = self.options.workers
        if not clients:
            workers = 1
        elif self.options.dry_run:
            workers = min(workers, len(clients))  # a dry run only counts: one client per worker
        sched = Scheduler(clients, workers, self.observer)
        results: dict[str, ClientResult] = {}
        if workers == 1:
            self._worker(self.main, sched, results)
            return results
        self.main.close()  # the workers have their own; the final fold reconnects
        sessions = [Session(self.target) for _ in range(workers)]
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

    def _worker(self, session: Session, sched: Scheduler, results: dict[str, ClientResult]) -> None:
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

    def _work_loop(self, session: Session, sched: Scheduler, results: dict[str, ClientResult]) -> None:
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
            report.fold_error = f"folding the remaining counter deltas failed: {one_line(exc)}"
            log.error(report.fold_error)

    def _dry_run_client(self, session: Session, client_id: str) -> ClientResult:
        t0 = time.monotonic()
        result = ClientResult(client_id, status="dry_run")
        conn = session.conn
        counts = queries.rows(conn, "dry_run_counts", client_id=client_id)
        result.invalid_campaigns = _invalid_campaigns(conn, client_id)
        result.held = _held(conn, client_id)
        for c in counts:
            result.campaigns.append(
                {
                    "campaign_id": str(c["campaign_id"]),
                    "campaign_name": c["campaign_name"],
                    "total_messages": c["total_messages"],
                    "completed": int(c["completed"]),
                    "opted_out": int(c["opted_out"]),
                }
            )
            result.completed += int(c["completed"])
            result.opted_out += int(c["opted_out"])
        result.duration_ms = int((time.monotonic() - t0) * 1000)
        return result

    def _events(self, sched: Scheduler, result: ClientResult, runs: list[ClientRun]) -> Callable[[Event], None]:
        """What the procedure reports while it runs a client: its run opening, its batches, its retries."""

        def on_event(event: Event) -> None:
            kind = event.get("event")
            if kind == "started":
                run = ClientRun(result)
                result.run_id = str(event["run_id"])
                runs.append(run)
                sched.opened(run)
            elif kind == "batch" and runs:
                sched.record(runs[-1], event)
            elif kind == "retry":
                log.warning("client %s: batch lost a lock race (%s), retrying", result.client_id, event.get("error"))

        return on_event

    def _run_client(self, session: Session, sched: Scheduler, client_id: str) -> ClientResult:
        """One CALL of the run's procedure for this client; again after a lost connection."""
        t0 = time.monotonic()
        result = ClientResult(client_id)
        runs: list[ClientRun] = []
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
                    for run in runs:  # the dead session's run: the next CALL takes it over
                        sched.closed(run)
                    log.warning(
                        "client %s: the connection to the database was lost (%s); reconnected, going on with it",
                        client_id, one_line(exc),
                    )
        except Exception as exc:  # noqa: BLE001 - one client's failure never stops the others
            self._record_failure(session, sched, result, runs, exc)
        except BaseException as exc:  # interrupted: leave a truthful row behind, then stop
            sched.stopped(exc)
            self._record_failure(session, sched, result, runs, exc)
            raise
        else:
            [mine] = summary["clients"]
            fill(result, mine)
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
    def _reconnect(session: Session) -> bool:
        """A new connection after a lost one; False when the database cannot be reached."""
        session.close()
        try:
            session.conn
        except UserError:
            return False
        return True

    def _help(self, session: Session, sched: Scheduler, run: ClientRun) -> None:
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
            log.warning("client %s: a helping worker stopped: %s", result.client_id, one_line(exc))
        finally:
            session.on_event = lambda event: None
            sched.helper_done(run)

    def _record_failure(
        self, session: Session, sched: Scheduler, result: ClientResult, runs: list[ClientRun], exc: BaseException
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
            result.error = f"could not start a run: {one_line(exc)}"
            return
        result.error = message
        try:
            try:
                rows = queries.rows(session.conn, "run_close_failed", run_id=result.run_id, message=message)
            except pg_errors.QueryCanceled:
                # a stop's cancel request, sent from another thread, may land on this statement
                # instead of the one it was meant for: it is sent once, so once more is enough
                session.abandon()
                rows = queries.rows(session.conn, "run_close_failed", run_id=result.run_id, message=message)
            if not rows:
                raise RuntimeError(f"run {result.run_id} vanished")
            fill(result, rows[0])
            result.status = "failed"
        except (psycopg.Error, UserError, RuntimeError) as second:
            session.abandon()
            result.error = f"{message}; the run row could not be closed either: {one_line(second)}"



def _describe(exc: BaseException) -> str:
    return one_line(exc) if isinstance(exc, psycopg.Error) else f"{type(exc).__name__}: {one_line(exc)}"


def run(target: database.Target, options: RunOptions, observer: Observer | None = None) -> RunReport:
    """Run (or dry-run) the de-enrollment for every active client, or the one asked for."""
    return Runner(target, options, observer).run()


