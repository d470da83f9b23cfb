"""Helpers of the tests that start real `deenroll run` processes: spawning one with chosen
signal dispositions, clients to work on, slow batches, waiting on a condition."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psycopg

from conftest import deenroll_exe


# Starts a command with SIGINT set to sys.argv[1] (SIG_DFL or SIG_IGN) and SIGINT and SIGTERM
# unblocked, whatever the test runner's own dispositions are (a background job or nohup ignores
# SIGINT), then becomes that command (exec keeps the pid and an ignored signal).
WITH_SIGINT = (
    "import os, signal, sys; "
    "signal.signal(signal.SIGINT, getattr(signal, sys.argv[1])); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM}); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


# A CALL of the procedure in a process of its own, as pg_cron makes one: prints its summary.
CALL_SCRIPT = (
    "import json, sys, psycopg\n"
    "with psycopg.connect(sys.argv[1], autocommit=True, application_name='pg_cron test') as c:\n"
    "    (summary,) = c.execute('CALL deenroll.run_de_enrollment(p_batch_size => %s, p_max_runtime_ms => %s)',\n"
    "                           (int(sys.argv[2]), int(sys.argv[3]))).fetchone()\n"
    "    print(json.dumps(summary))\n"
)


def spawn(db_url: str, *args: str, sigint: str = "SIG_DFL", env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """`deenroll run ARGS` in its own process, with SIGINT as `sigint` says (SIG_DFL or SIG_IGN)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DE_ENROLLMENT_")}
    env.pop("DATABASE_URL", None)
    env.update(env_extra or {})
    return subprocess.Popen(
        [sys.executable, "-c", WITH_SIGINT, sigint, deenroll_exe(), "--database-url", db_url, "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def due_now(conn: psycopg.Connection) -> dict[str, str]:
    """What a run must de-enroll (finished the sequence, or opted out, while active), computed here independently of our functions."""
    rows = conn.execute(
        """SELECT l.id, CASE WHEN l.completed_at IS NULL AND l.current_message_position >= jsonb_array_length(c.messages)
                             THEN 'completed' ELSE 'opted_out' END
             FROM leads l JOIN campaigns c ON c.id = l.campaign_link_id
            WHERE l.is_active
              AND ((l.completed_at IS NULL AND l.current_message_position >= jsonb_array_length(c.messages)) OR l.opted_out)"""
    ).fetchall()
    return {str(r[0]): r[1] for r in rows}


def make_clients(conn: psycopg.Connection, clients: int, campaigns: int, leads: int) -> list[str]:
    """Clients with `campaigns` campaigns of 3 messages and `leads` leads each, about a third of them due."""
    ids = [str(uuid.uuid4()) for _ in range(clients)]
    conn.execute(
        """INSERT INTO campaigns (client_id, name, messages)
           SELECT cl, 'camp ' || k, '["a", "b", "c"]'::jsonb FROM unnest(%s::uuid[]) cl, generate_series(1, %s) k""",
        (ids, campaigns),
    )
    conn.execute(
        """INSERT INTO leads (client_id, campaign_link_id, current_message_position, opted_out, booked)
           SELECT c.client_id, c.id, g %% 5, g %% 11 = 0, g %% 4 = 0
             FROM campaigns c, generate_series(1, %s) g WHERE c.client_id = ANY (%s::uuid[])""",
        (leads, ids),
    )
    return ids


def slow_batches(conn: psycopg.Connection, seconds: float) -> None:
    """A platform-side trigger that makes every UPDATE of leads take `seconds` longer (after the rows changed)."""
    conn.execute(
        f"""CREATE FUNCTION zz_slow() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
            CREATE TRIGGER zz_slow AFTER UPDATE ON leads FOR EACH STATEMENT EXECUTE FUNCTION zz_slow();"""
    )


def wait_until(predicate, timeout: float = 30.0, every: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(every)


def fault(conn: psycopg.Connection, name: str, table: str, timing: str, condition: str, sqlstate: str) -> None:
    """A platform trigger that raises `sqlstate` on `table` when `condition` holds (plpgsql, NEW in scope)."""
    conn.execute(
        f"""CREATE FUNCTION public.{name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF {condition} THEN
                    RAISE EXCEPTION 'injected fault %', TG_NAME USING ERRCODE = '{sqlstate}';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER {name} {timing} ON public.{table} FOR EACH ROW EXECUTE FUNCTION public.{name}()"""
    )


def wait_for_a_batch(conn: psycopg.Connection, proc: subprocess.Popen) -> None:
    """Until a run has committed a batch (the process must still be running then)."""
    wait_until(
        lambda: conn.execute("SELECT coalesce(max(batches), 0) FROM de_enrollment_runs").fetchone()[0] >= 1
        or proc.poll() is not None,
        timeout=60,
    )
    assert proc.poll() is None, proc.communicate()[1]
