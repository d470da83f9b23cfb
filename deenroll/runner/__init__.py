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

from .client import Runner, check_prerequisites, run
from .options import BATCH_SIZE, INT_MAX, LEASE_MS, MAX_RUNTIME_MS, MAX_WORKERS, RunOptions, Terminated, validate
from .report import (
    CampaignIssue, ClientResult, LogObserver, Observer, RunReport, describe_client, describe_held, summary_lines,
)
from .. import queries

# One batch in one statement (positional parameters: run id, client id, batch size): what the
# run's procedure does for each batch; kept for tests that drive batches by hand.
BATCH_SQL = queries.all_queries()["run_batch"]

__all__ = [
    "BATCH_SIZE", "BATCH_SQL", "CampaignIssue", "ClientResult", "INT_MAX", "LEASE_MS", "LogObserver",
    "MAX_RUNTIME_MS", "MAX_WORKERS", "Observer", "RunOptions", "RunReport", "Runner", "Terminated",
    "check_prerequisites", "describe_client", "describe_held", "run", "summary_lines", "validate",
]
