"""The options of a run, and the database's bounds of them (deenroll.de_enrollment_run_options):
its refusal is worded as the option the user typed. The defaults are the run procedure's own (a
test checks that they agree); `deenroll run` checks the rest before it connects."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from .. import queries
from ..errors import UserError

BATCH_SIZE = 100
MAX_RUNTIME_MS = 240000
LEASE_MS = 30000

# The database's words for each option (the start of its refusal), and the option's name here.
_OPTION_OF = {"batch size": "--batch-size", "max runtime": "--max-runtime", "lease": "--lease"}


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler of `deenroll run` (a scheduler's timeout): the run stops, recorded.
    A KeyboardInterrupt, so that psycopg cancels the statement in flight as it does on Ctrl-C."""


@dataclass(frozen=True)
class RunOptions:
    client_id: str | None  # a UUID
    batch_size: int = BATCH_SIZE
    max_runtime_ms: int = MAX_RUNTIME_MS
    dry_run: bool = False
    workers: int = 1
    lease_ms: int = LEASE_MS


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
