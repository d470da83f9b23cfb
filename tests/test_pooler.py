"""Through PgBouncer in transaction mode: runners at once, a runner killed, the scheduler's commands.

The tests start Debian's PgBouncer on 127.0.0.1 and a free port, in front of the test server,
with a pool of two server connections per database: the runners' transactions share
server sessions, so anything a runner left in a session (a lock, a prepared statement, a
setting) would show up in another runner's transactions or after they end.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from conftest import Server, deenroll_exe, run_cli
from deenroll.database import Target
from deenroll.errors import UserError
from deenroll.pooler import require_session, server_session_kind
from engine_data import assert_exactly_once, de_enrolled, recount, stored
from processes import CALL_SCRIPT, due_now, make_clients, slow_batches, spawn, wait_until

PGBOUNCER = "/usr/sbin/pgbouncer"
SESSION_DB = "postgres_session_mode"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(PGBOUNCER).exists(), reason="PgBouncer is not installed (apt-get install pgbouncer)"),
]


@dataclass(frozen=True)
class Bouncer:
    port: int

    def url(self, direct_url: str) -> str:
        """The same database as `direct_url`, through PgBouncer."""
        params = conninfo.conninfo_to_dict(direct_url)
        return f"postgresql://{params.get('user', 'postgres')}@127.0.0.1:{self.port}/{params['dbname']}"

    def session_mode_url(self) -> str:
        """The server's maintenance database through the same PgBouncer, in pool_mode=session."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{SESSION_DB}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bouncer(pg_server: Server) -> Iterator[Bouncer]:
    """PgBouncer, pool_mode=transaction, two server connections per database, every database of the server."""
    params = conninfo.conninfo_to_dict(pg_server.admin_dsn)
    host = params.get("host") or "/var/run/postgresql"
    server = f"host={host} port={params.get('port') or 5432} user={params.get('user') or 'postgres'}"
    if params.get("password"):
        server += f" password={params['password']}"
    # PgBouncer refuses to run as root: run it as the owner of the server's socket directory
    # (the embedded server's user), who can reach that socket.
    user = None
    if os.geteuid() == 0:
        owner = os.stat(host).st_uid if host.startswith("/") else 0
        user = pwd.getpwuid(owner).pw_name if owner != 0 else "postgres"
    # its own directory right under the temporary root: pytest's are closed to other users
    with tempfile.TemporaryDirectory(prefix="deenroll-pgbouncer-") as tmp:
        yield from _run_bouncer(Path(tmp), server, user, pg_server)


def _run_bouncer(workdir: Path, server: str, user: str | None, pg_server: Server) -> Iterator[Bouncer]:
    port = _free_port()
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
{SESSION_DB} = {server} dbname=postgres pool_mode=session
* = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
pidfile = {workdir}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
"""
    )
    if user:
        shutil.chown(workdir, user)
        for f in workdir.iterdir():
            shutil.chown(f, user)
    # its log goes to a file: a pipe nobody reads would fill up and stop it
    log = open(workdir / "pgbouncer.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([PGBOUNCER, str(workdir / "pgbouncer.ini")], user=user, stdout=log, stderr=subprocess.STDOUT)
    bouncer = Bouncer(port)
    probe = bouncer.url(pg_server.dsn("postgres"))

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited: {(workdir / 'pgbouncer.log').read_text(errors='replace')[-2000:]}")
        try:
            with psycopg.connect(probe, connect_timeout=2, prepare_threshold=None) as c:
                return c.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False

    try:
        wait_until(answers, timeout=30, every=0.1)
        yield bouncer
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def leftovers(conn: psycopg.Connection) -> dict[str, int]:
    """Whatever a run could leave behind: leases, runs still 'running', advisory locks, prepared statements."""
    return {
        "leases": conn.execute("SELECT count(*) FROM deenroll.client_leases").fetchone()[0],
        "running": conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status = 'running'").fetchone()[0],
        "advisory": conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()[0],  # this database's: other tests' runs hold their own
    }


def session_settings(url: str) -> set[tuple[str, str]]:
    """search_path, lock_timeout and synchronous_commit as every pooled server session has them now."""
    seen: set[tuple[str, str]] = set()
    conns = [psycopg.connect(url, prepare_threshold=None) for _ in range(2)]  # both server connections of the pool
    try:
        for c in conns:  # each holds a transaction open: each on a server session of its own
            seen.add(tuple(c.execute(
                "SELECT current_setting('search_path') || ' | ' || current_setting('lock_timeout'), "
                "current_setting('synchronous_commit')"
            ).fetchone()))
    finally:
        for c in conns:
            c.close()
    return seen


def test_three_runners_at_once_through_pgbouncer(bouncer: Bouncer, db_url: str, conn: psycopg.Connection) -> None:
    default = session_settings(db_url)  # a direct session: the server's defaults
    make_clients(conn, clients=6, campaigns=3, leads=100)
    expected = due_now(conn)
    assert len(expected) > 500
    pooled = bouncer.url(db_url)
    procs = [
        spawn(pooled, "--json", "--batch-size", "5"),
        spawn(pooled, "--json", "--batch-size", "7"),
        spawn(pooled, "--json", "--batch-size", "5", "--workers", "3"),
    ]
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode in (0, 1), err[-3000:]
        assert "Traceback" not in err and "prepared statement" not in err
        docs.append(json.loads(out))
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    statuses = [c["status"] for d in docs for c in d["clients"]]
    assert set(statuses) <= {"success", "skipped"}
    done = sum(c["leads_de_enrolled"] for d in docs for c in d["clients"])
    assert done == len(expected) == conn.execute("SELECT sum(leads_de_enrolled) FROM de_enrollment_runs").fetchone()[0]
    assert leftovers(conn) == {"leases": 0, "running": 0, "advisory": 0}
    # the pooled server sessions kept no setting of the runners'
    assert session_settings(pooled) == default

    # a later run, direct or pooled, skips nothing and finds nothing left
    for url in (db_url, pooled):
        res = subprocess.run([deenroll_exe(), "--database-url", url, "run", "--json"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        doc = json.loads(res.stdout)
        assert {c["status"] for c in doc["clients"]} == {"success"} and doc["totals"]["leads_de_enrolled"] == 0
    assert leftovers(conn) == {"leases": 0, "running": 0, "advisory": 0}


def test_a_runner_killed_through_pgbouncer_leaves_nothing_that_skips_a_client(
    bouncer: Bouncer, db_url: str, conn: psycopg.Connection
) -> None:
    [client] = make_clients(conn, clients=1, campaigns=2, leads=150)
    expected = due_now(conn)
    slow_batches(conn, 0.3)
    pooled = bouncer.url(db_url)
    # a short lease (2 s past its last batch), whatever its budget (the default 4 minutes)
    proc = spawn(pooled, "--batch-size", "4", "--lease", "2000")
    wait_until(lambda: (conn.execute("SELECT max(batches) FROM de_enrollment_runs").fetchone()[0] or 0) >= 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # PgBouncer keeps the server session; the batch in flight ends there, committed or not
    wait_until(lambda: conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'deenroll run' AND state <> 'idle' "
        "AND datname = current_database()"
    ).fetchone()[0] == 0)
    dead_id, done = conn.execute("SELECT id, leads_de_enrolled FROM de_enrollment_runs WHERE status = 'running'").fetchone()
    assert 0 < done < len(expected)
    assert_exactly_once(conn)
    conn.execute("DROP TRIGGER zz_slow ON leads")
    # behind the pooler the server session is the pooler's: nothing about it was recorded
    assert conn.execute("SELECT count(*) FROM deenroll.lease_sessions").fetchone()[0] == 0

    # once the lease has expired, a pooled run takes the client over and finishes it
    wait_until(lambda: conn.execute(
        "SELECT count(*) FROM deenroll.client_leases WHERE expires_at >= clock_timestamp()"
    ).fetchone()[0] == 0, timeout=60)
    res = subprocess.run([deenroll_exe(), "--database-url", pooled, "run", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    [c] = json.loads(res.stdout)["clients"]
    assert c["client_id"] == client and c["status"] == "success"
    assert any(str(dead_id) in w for w in c["warnings"])
    status, details = conn.execute("SELECT status, error_details FROM de_enrollment_runs WHERE id = %s", (dead_id,)).fetchone()
    assert status == "failed" and f"pid {proc.pid}" in details and "its lease expired" in details
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    assert leftovers(conn) == {"leases": 0, "running": 0, "advisory": 0}
    # and a direct run right after skips nothing
    res = subprocess.run([deenroll_exe(), "--database-url", db_url, "run", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and [c["status"] for c in json.loads(res.stdout)["clients"]] == ["success"]


def test_the_scheduler_commands_work_through_pgbouncer(bouncer: Bouncer, db_url: str, conn: psycopg.Connection) -> None:
    make_clients(conn, clients=3, campaigns=2, leads=30)
    expected = due_now(conn)
    pooled = bouncer.url(db_url)
    env = {"DEENROLL_EMBEDDED": "never"}
    for args in (
        ("run", "--dry-run", "--json"),
        ("run", "--dry-run", "--workers", "2"),
        ("run", "--json", "--batch-size", "10"),
        ("health-check",),
        ("health-check", "--json"),
        ("stuck",),
        ("stats", "drift"),
        ("stats", "recalculate"),
        ("maintenance", "cleanup"),
        ("run", "--json", "--workers", "2"),
    ):
        # each command twice: a second client on a pooled session the first one used
        for _ in range(2):
            result = run_cli(*args, db=pooled, env=env)
            assert result.code in (0, 1), (args, result.code, result.stderr[-2000:])
            assert "Traceback" not in result.stderr and "prepared statement" not in result.stderr, args
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert leftovers(conn) == {"leases": 0, "running": 0, "advisory": 0}


def test_a_transaction_mode_pooler_is_told_from_a_direct_connection_and_a_session_pooler(
    bouncer: Bouncer, db_url: str
) -> None:
    direct, pooled, session = (Target(u, "test") for u in (db_url, bouncer.url(db_url), bouncer.session_mode_url()))
    assert server_session_kind(direct) == "direct"
    assert server_session_kind(pooled) == "transaction"
    assert server_session_kind(session) == "session"
    require_session(direct, "migrate")
    require_session(session, "migrate")
    with pytest.raises(UserError) as refused:
        require_session(pooled, "migrate")
    assert "migrate needs a database session of its own" in str(refused.value)
    assert "\n" not in str(refused.value) and "port 5432" in str(refused.value)


def test_session_commands_refuse_a_transaction_pooler_in_one_line(bouncer: Bouncer, db_url: str, cli) -> None:
    """migrate, rollback and uninstall need a session: through a transaction pooler they say so and change nothing."""
    pooled = bouncer.url(db_url)
    with psycopg.connect(db_url) as c:
        before = c.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0]
    for args in (("migrate",), ("rollback", "--to", "0020"), ("uninstall", "--yes")):
        result = cli(*args, db=pooled, env={"DEENROLL_EMBEDDED": "never"})
        assert result.code == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "transaction-mode pooler" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT count(*) FROM _yoyo_migration").fetchone()[0] == before


def test_the_runs_procedure_called_through_pgbouncer(bouncer: Bouncer, db_url: str, conn: psycopg.Connection) -> None:
    """Two `CALL deenroll.run_de_enrollment()` at once through a transaction pooler: each CALL keeps
    its server connection while its batches commit inside; nothing is left in the pooled sessions."""
    default = session_settings(db_url)
    make_clients(conn, clients=6, campaigns=2, leads=80)
    expected = due_now(conn)
    pooled = bouncer.url(db_url)
    procs = [
        subprocess.Popen([sys.executable, "-c", CALL_SCRIPT, pooled, "5", "240000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        assert json.loads(out)["fold_error"] is None
    assert de_enrolled(conn) == expected
    assert_exactly_once(conn)
    assert stored(conn) == recount(conn)
    assert leftovers(conn) == {"leases": 0, "running": 0, "advisory": 0}
    assert session_settings(pooled) == default
