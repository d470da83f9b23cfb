"""The options of a run: what the user gave, checked before anything is written.

The bounds of the batch size, the runtime budget and the lease live in the database
(deenroll.de_enrollment_run_options); check() asks it and words its refusal as the option
the user typed. What only a client knows stays here: a UUID's syntax, the integer range of
a parameter, how many threads a process may start, and the defaults --help shows (the
run's procedure declares the same defaults; a test checks that they agree).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg

from .. import queries
from ..errors import UserError

INT_MAX = 2**31 - 1  # the parameters are PostgreSQL integers
MAX_WORKERS = 64
BATCH_SIZE = 100  # defaults shown by --help; the procedure's own are the same
MAX_RUNTIME_MS = 240000
LEASE_MS = 30000

# The database's words for each option (the start of its refusal), and the option's name here.
_OPTION_OF = {"batch size": "--batch-size", "max runtime": "--max-runtime", "lease": "--lease"}


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler of `deenroll run` (a scheduler's timeout): the run stops, recorded.

    A KeyboardInterrupt, so that psycopg cancels the statement in flight as it does on Ctrl-C.
    """


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
    """What can be checked before connecting; check() asks the database for the rest."""
    cid: str | None = None
    if client_id is not None:
        try:
            cid = str(uuid.UUID(client_id.strip()))
        except ValueError:
            raise UserError(f"--client-id: {client_id!r} is not a UUID") from None
    if batch_size > INT_MAX:
        raise UserError(f"--batch-size must be at most {INT_MAX}, got {batch_size}")
    if max_runtime_ms > INT_MAX:
        raise UserError(f"--max-runtime must be at most {INT_MAX} milliseconds, got {max_runtime_ms}")
    if not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"--workers must be between 1 and {MAX_WORKERS}, got {workers}")
    if lease_ms > INT_MAX:
        raise UserError(f"--lease must be at most {INT_MAX} milliseconds, got {lease_ms}")
    return RunOptions(cid, batch_size, max_runtime_ms, dry_run, workers, lease_ms)


def check(conn: psycopg.Connection, options: RunOptions) -> None:
    """The database's bounds of the options, before anything is written: its refusal, worded
    with the option's name (`--batch-size must be a positive integer, got 0`)."""
    try:
        queries.run(conn, "run_options_check", batch_size=options.batch_size,
                    max_runtime_ms=options.max_runtime_ms, lease_ms=options.lease_ms)
    except psycopg.errors.InvalidParameterValue as exc:
        said = exc.diag.message_primary or str(exc)
        for words, option in _OPTION_OF.items():
            if said.startswith(words):
                raise UserError(option + said[len(words):]) from None
        raise UserError(said) from None
