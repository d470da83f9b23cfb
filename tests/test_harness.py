"""The test harness itself: each test's database is real, fresh and migrated; the servers of
bench/servers.py (shared with the benchmark) clean up after themselves."""

import uuid
from pathlib import Path

import psycopg
import pytest

from bench import servers
from bench.servers import Server


def test_each_test_gets_a_fresh_migrated_database(db_url: str, pg_server) -> None:
    with psycopg.connect(db_url) as conn:
        names = {r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration")}
        assert "0021_add_de_enrollment_monitoring" in names
        assert conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 0
        conn.execute("INSERT INTO campaigns (client_id, name) VALUES (gen_random_uuid(), 'x')")
        conn.commit()


def test_databases_do_not_leak_between_tests(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM campaigns").fetchone()[0] == 0


def test_a_server_drops_what_it_created(pg_server) -> None:
    server = Server(pg_server.admin_dsn, "given")
    name = f"deenroll_t_harness_{uuid.uuid4().hex[:8]}"
    url = server.create_db(name)
    clone = server.create_db(name + "_clone", template=name, file_copy=True)
    for u in (url, clone):
        with psycopg.connect(u) as conn:
            assert conn.execute("SELECT current_database()").fetchone()[0] in (name, name + "_clone")
    server.drop_created(lambda n, exc: pytest.fail(f"{n}: {exc}"))
    assert server.created == []
    with pg_server.admin() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s", (name + "%",)).fetchone()[0] == 0


@pytest.mark.skipif(not (servers.DEBIAN_PG15 / "postgres").exists(), reason="Debian's PostgreSQL 15 is not installed")
def test_debian_server_is_postgresql_15_as_shipped_and_leaves_nothing() -> None:
    seen: list[Path] = []
    with servers.debian(on_start=seen.append) as server:
        with server.admin() as conn:
            assert conn.info.server_version // 10000 == 15
            assert conn.execute("SHOW jit").fetchone()[0] == "on"  # Debian's default, unlike the embedded 18
        assert server.kind == "debian" and seen[0].is_dir()
    assert not seen[0].exists()
