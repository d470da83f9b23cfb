"""A Supabase-like PostgreSQL 15 with pg_cron in its default mode, for the tests of `deenroll
schedule` that need jobs connecting over TCP (tests/test_schedule_default_mode.py).

The cluster is Debian's PostgreSQL 15 as shipped (JIT on, pg_cron 1.4.2 in its default mode:
each job connects to cron.host, localhost, over TCP), in a temporary directory, listening on
127.0.0.1 at a free port with scram-sha-256 for TCP; the tests themselves connect over its Unix
socket. As on Supabase, the superuser is not `postgres`: `postgres` is a non-superuser owner
with CREATEROLE and BYPASSRLS that holds USAGE on the schema cron WITH GRANT OPTION, and
deenroll is migrated by it in pg_cron's database, postgres.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import conninfo

PG15 = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "supabase_admin"
OWNER = "postgres"
SCHEDULER = "deenroll_scheduler"
CRON_DATABASE = "postgres"


def missing() -> str | None:
    """Why the cluster cannot be started here, or None."""
    if not (PG15 / "postgres").exists():
        return "Debian's PostgreSQL 15 is not installed (/usr/lib/postgresql/15/bin)"
    if not Path("/usr/lib/postgresql/15/lib/pg_cron.so").exists():
        return "pg_cron for PostgreSQL 15 is not installed (postgresql-15-cron)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no operating-system user postgres to run the server"
    return None


def server_os_user() -> pwd.struct_passwd:
    """The operating-system user the server runs as (postgres when the tests run as root)."""
    return pwd.getpwnam("postgres") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())


def _as_server_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str) -> None:
    done = subprocess.run([*_as_server_user(), *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{args[0]} failed: {done.stdout}{done.stderr}"


@dataclass(frozen=True)
class Cluster:
    socket_dir: str
    port: int
    data: Path

    def dsn(self, user: str = SUPERUSER, dbname: str = CRON_DATABASE) -> str:
        return conninfo.make_conninfo(host=self.socket_dir, port=str(self.port), user=user, dbname=dbname)

    def url(self, user: str, dbname: str = CRON_DATABASE) -> str:
        return f"postgresql://{user}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def admin(self, dbname: str = CRON_DATABASE) -> psycopg.Connection:
        return psycopg.connect(self.dsn(SUPERUSER, dbname), autocommit=True)


@contextmanager
def cluster() -> Iterator[Cluster]:
    """A new cluster, stopped and deleted afterwards: superuser supabase_admin, the owner postgres
    (password pw-postgres) and pg_cron created in database postgres."""
    home = Path(tempfile.mkdtemp(prefix="deenroll-cron-default-"))
    data = home / "data"
    port = _free_port()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
    try:
        _run(str(PG15 / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth-local=trust",
             "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off "
                   f"-c shared_preload_libraries=pg_cron -c cron.database_name={CRON_DATABASE}")
        _run(str(PG15 / "pg_ctl"), "start", "-D", str(data), "-l", str(home / "log"), "-w", "-o", options)
        try:
            c = Cluster(str(home), port, data)
            with c.admin() as conn:
                conn.execute("CREATE EXTENSION pg_cron")
                conn.execute(f"CREATE ROLE {OWNER} LOGIN CREATEROLE CREATEDB BYPASSRLS PASSWORD 'pw-{OWNER}'")
                conn.execute(f"ALTER DATABASE {CRON_DATABASE} OWNER TO {OWNER}")
                conn.execute(f"GRANT USAGE ON SCHEMA cron TO {OWNER} WITH GRANT OPTION")
            yield c
        finally:
            subprocess.run([*_as_server_user(), str(PG15 / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate"],
                           capture_output=True, timeout=60)
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def pgpass_line(line: str) -> Iterator[Path]:
    """The server's OS user's ~/.pgpass with `line` first, for the duration; afterwards exactly
    what was there (content, mode, owner), or no file. One test at a time on this machine."""
    user = server_os_user()
    path = Path(user.pw_dir) / ".pgpass"
    with open(os.path.join(tempfile.gettempdir(), "deenroll-test-pgpass.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = path.read_bytes() if path.exists() else None
        stat = path.stat() if before is not None else None
        try:
            path.write_bytes(line.encode() + b"\n" + (before or b""))
            os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(path, 0o600)
            yield path
        finally:
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(before)
                os.chown(path, stat.st_uid, stat.st_gid)
                os.chmod(path, stat.st_mode & 0o7777)


def wait_for_job_run(c: Cluster, jobid: int, after_runid: int = 0, timeout: float = 130) -> dict:
    """The first finished run of the job after run `after_runid` (a one-minute schedule fires
    within 60 s), as a dict of cron.job_run_details."""
    end = time.monotonic() + timeout
    with c.admin() as conn:
        while True:
            row = conn.execute(
                """SELECT runid, status, return_message, start_time FROM cron.job_run_details
                    WHERE jobid = %s AND runid > %s AND status IN ('succeeded', 'failed')
                    ORDER BY runid LIMIT 1""", (jobid, after_runid)).fetchone()
            if row:
                return dict(zip(("runid", "status", "return_message", "start_time"), row))
            assert time.monotonic() < end, f"pg_cron did not run job {jobid} in {timeout} s"
            time.sleep(0.5)
