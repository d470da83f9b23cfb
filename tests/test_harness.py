"""The test harness itself: each test's database is real, fresh and migrated."""

import psycopg


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
