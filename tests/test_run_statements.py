"""What `deenroll run` sends to the database does not grow with the number of clients: the loop
over clients is the database's, so a run of 50 clients is as many statements as a run of 5.

Counted in the server's own log (log_statement = 'all', set for a login of this test only), on
the private servers of test_server_restart (Debian's PostgreSQL 15, the embedded 18), whose log
file is ours to read.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from conftest import run_cli
from processes import make_clients
from test_server_restart import PrivateServer, db_name, server  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow

# a simple query is logged as "statement: ...", one with parameters as "execute <unnamed>: ..."
STATEMENT = re.compile(r"\bLOG:  (?:statement|execute [^:]*): ")


@pytest.fixture
def counted_login(server: PrivateServer) -> Iterator[str]:  # noqa: F811
    """A login of the runner role whose every statement the server logs."""
    role = f"deenroll_counted_{uuid.uuid4().hex[:10]}"
    with server.admin() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE deenroll_runner")
        conn.execute(f"ALTER ROLE {role} SET log_statement = 'all'")
    yield role
    with server.admin() as conn:
        conn.execute(f"DROP ROLE {role}")


def _statements_of_a_run(server: PrivateServer, url: str) -> tuple[int, int]:
    """(statements, CALLs of the loop) one `deenroll run --workers 2` sent, as the server logged them
    (a statement's text, its comment first, runs over several lines of the log)."""
    log = server.home / "log"
    start = log.stat().st_size
    res = run_cli("run", "--workers", "2", "--json", db=url)
    assert res.code == 0, res.stderr
    with log.open(encoding="utf-8", errors="replace") as f:
        f.seek(start)
        text = f.read()
    return len(STATEMENT.findall(text)), text.count("CALL deenroll.run_de_enrollment_loop(")


def test_a_run_of_50_clients_sends_as_many_statements_as_a_run_of_5(
    server: PrivateServer, db_name: str, counted_login: str  # noqa: F811
) -> None:
    url = server.url(db_name)
    login_url = url.replace("postgresql://postgres@", f"postgresql://{counted_login}@")
    with psycopg.connect(url, autocommit=True) as conn:
        make_clients(conn, clients=5, campaigns=2, leads=30)
    five = _statements_of_a_run(server, login_url)
    with psycopg.connect(url, autocommit=True) as conn:
        make_clients(conn, clients=45, campaigns=2, leads=30)
    fifty = _statements_of_a_run(server, login_url)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(DISTINCT client_id) FROM de_enrollment_runs").fetchone()[0] == 50
    assert five == fifty
    assert fifty[1] == 2  # one CALL of the loop per worker, whatever the number of clients
