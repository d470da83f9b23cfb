"""The `run` command (the batch runner)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import click

from .runner import calls, options as run_options, report as run_report
from .cli_common import client_id_option, describe_held, print_json
from .errors import UserError

log = logging.getLogger("deenroll.run")
INT_MAX = 2**31 - 1  # the parameters are PostgreSQL integers
MAX_WORKERS = 64
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class LogObserver(run_report.Observer):
    """What the run reports as it goes, as plain log lines on the `deenroll.run` logger (the
    terminal's progress display is a subclass)."""

    def clients_found(self, count: int) -> None:
        log.info("%d client(s) to process", count)

    def client_started(self, client_id: str) -> None:
        log.debug("client %s: starting", client_id)

    def batch_done(self, result: run_report.ClientResult, size: int) -> None:
        log.debug("client %s: batch %d de-enrolled %d (run total %d)", result.client_id, result.batches, size,
                  result.leads_de_enrolled)

    def client_done(self, result: run_report.ClientResult) -> None:
        for warning in result.warnings:
            log.warning("client %s: %s", result.client_id, warning)
        level = {"failed": logging.ERROR, "partial": logging.WARNING, "skipped": logging.WARNING}.get(result.status, 20)
        log.log(level, "client %s: %s", result.client_id, describe_client(result))


def describe_client(r: run_report.ClientResult) -> str:
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
    if r.held and r.status != "partial":  # a partial run's error names them already, in the database's words
        text += f"; {describe_held(r.held)}"
    if r.invalid_campaigns:
        text += f"; {len(r.invalid_campaigns)} campaign(s) with invalid messages"
    if r.error and r.status not in ("dry_run", "success"):  # a success's details only repeat the held leads
        text += f"; {r.error}"
    return text


def summary_lines(report: run_report.RunReport) -> Iterable[str]:
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


def validate(client_id: str | None, batch_size: int, max_runtime_ms: int, dry_run: bool = False,
             workers: int = 1, lease_ms: int = run_options.LEASE_MS) -> run_options.RunOptions:
    """What can be checked before connecting (--client-id is checked as it is parsed): the integer
    range of a parameter, how many threads a process may start. The run checks the database's
    bounds (run_options.check)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"--workers must be between 1 and {MAX_WORKERS}, got {workers}")
    for option, value, unit in (("--batch-size", batch_size, ""), ("--max-runtime", max_runtime_ms, " milliseconds"),
                                ("--lease", lease_ms, " milliseconds")):
        if value > INT_MAX:
            raise UserError(f"{option} must be at most {INT_MAX}{unit}, got {value}")
    return run_options.RunOptions(client_id, batch_size, max_runtime_ms, dry_run, workers, lease_ms)


def _log_level() -> int:
    """LOG_LEVEL: debug, info, warning or error, in any case; unset or empty means info."""
    given = os.environ.get("LOG_LEVEL", "")
    if not given.strip():
        return logging.INFO
    level = LOG_LEVELS.get(given.strip().lower())
    if level is None:
        raise UserError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)} (got {given!r})")
    return level


def _timestamp(when: datetime) -> str:
    """ISO 8601 in the local time zone with its UTC offset, to the millisecond: 2026-11-30T10:15:02.123+00:00."""
    return when.astimezone().isoformat(timespec="milliseconds")


class _IsoFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(datetime.fromtimestamp(record.created))


class _RichObserver(LogObserver):
    """A live progress display on a terminal; log lines go through rich so they do not tear it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("de-enrolled {task.fields[done]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task: Any = None
        self.done = 0

    def __enter__(self) -> _RichObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def clients_found(self, count: int) -> None:
        super().clients_found(count)
        self.task = self.progress.add_task("clients", total=count, done=0)

    def client_started(self, client_id: str) -> None:
        super().client_started(client_id)
        self.progress.update(self.task, description=f"client {client_id[:8]}")

    def batch_done(self, result: run_report.ClientResult, size: int) -> None:
        super().batch_done(result, size)
        self.progress.update(self.task, done=self.done + result.leads_de_enrolled)

    def client_done(self, result: run_report.ClientResult) -> None:
        super().client_done(result)
        self.done += result.leads_de_enrolled
        self.progress.update(self.task, advance=1, done=self.done)


def _on_sigterm(signum: int, frame: object) -> None:
    raise run_options.Terminated()


def _catch_stop_signals() -> dict[int, Any]:
    """SIGTERM stops the run (recorded failed, exit 143); so does SIGINT (exit 130), unless SIGINT
    was ignored when the process started (a background job, nohup, some schedulers): then it
    stays ignored, as Unix programs do. Returns the previous handlers."""
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_sigterm)}
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
    return previous


def _setup_logging(level: int, tty: bool) -> logging.Handler:
    logger = logging.getLogger("deenroll")
    logger.setLevel(level)
    logger.propagate = False
    handler: logging.Handler
    if tty:
        from rich.logging import RichHandler
        from rich.text import Text

        handler = RichHandler(show_path=False, markup=False, log_time_format=lambda when: Text(_timestamp(when)))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_IsoFormatter("%(asctime)s deenroll[%(process)d] %(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    return handler


@click.command("run")
@client_id_option("Process only this client (default: every active client).")
@click.option(
    "--batch-size",
    type=int,
    default=run_options.BATCH_SIZE,
    show_default=True,
    envvar="DE_ENROLLMENT_BATCH_SIZE",
    show_envvar=True,
    help="Leads claimed and de-enrolled per transaction.",
)
@click.option(
    "--max-runtime",
    "max_runtime",
    type=int,
    default=run_options.MAX_RUNTIME_MS,
    show_default=True,
    envvar="DE_ENROLLMENT_MAX_RUNTIME",
    show_envvar=True,
    metavar="MS",
    help="Time budget of the whole run in milliseconds (at least 1); when it runs out the run stops "
    "between batches and the client is recorded 'partial'.",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    envvar="DE_ENROLLMENT_WORKERS",
    show_envvar=True,
    metavar="N",
    help="Connections working at once (1 to 64): different clients, then batches of the clients still "
    "running. Each is a database connection and a share of a core.",
)
@click.option(
    "--lease",
    "lease",
    type=int,
    default=run_options.LEASE_MS,
    show_default=True,
    envvar="DE_ENROLLMENT_LEASE",
    show_envvar=True,
    metavar="MS",
    help="How long a client stays reserved for this run after its last batch (the database sets its bounds). "
    "Matters only when a runner dies behind a connection pooler: on a direct connection, or "
    "after a server restart, the next run takes a dead run's clients over at once.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be de-enrolled per client; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of the summary.")
@click.pass_obj
def run(
    obj: Any,
    client_id: str | None,
    batch_size: int,
    max_runtime: int,
    workers: int,
    lease: int,
    dry_run: bool,
    as_json: bool,
) -> int:
    """De-enroll finished and opted-out leads, client by client, in batches.

    Each client is processed in isolation under its own lease (a client another run is
    working on is skipped and reported), with its own de_enrollment_runs row.
    Alerts go to DE_ENROLLMENT_ALERT_WEBHOOK when a client fails or ends partial; log
    lines on stderr follow LOG_LEVEL (debug, info, warning or error; default info), each
    stamped with the local time and its UTC offset (ISO 8601).

    Exit status: 0 every client succeeded (or was skipped), 1 some ended partial or
    leads are held (attention: `deenroll stuck` lists them), 2 some failed or the
    input was bad.
    """
    level = _log_level()
    options = validate(client_id, batch_size, max_runtime, dry_run, workers, lease)
    tty = sys.stderr.isatty()
    _setup_logging(level, tty)
    previous = _catch_stop_signals()
    try:
        if tty:
            with _RichObserver() as observer:
                report = calls.run(obj.target, options, observer)
        else:
            report = calls.run(obj.target, options, LogObserver())
    except run_options.Terminated:
        # The client being processed was recorded 'failed'; later clients were not started.
        raise UserError("terminated (SIGTERM); the client in progress was recorded failed", 143) from None
    except KeyboardInterrupt:
        raise UserError("interrupted (SIGINT); the client in progress was recorded failed", 130) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    if report.alert.attempted and not report.alert.delivered:
        click.echo(f"deenroll: warning: {report.alert.describe()}", err=True)
    elif report.alert.attempted:
        logging.getLogger("deenroll.run").info(report.alert.describe())

    if as_json:
        print_json(obj, report.to_json())
    else:
        for line in summary_lines(report):
            click.echo(line)
    return report.exit_code


