"""--json on every command: one JSON document on stdout naming the database; errors as one JSON object."""

from __future__ import annotations

import json
import socket

import pytest
from psycopg import conninfo


def _one_document(res) -> dict:
    """stdout is exactly one JSON object (json.loads refuses anything after it)."""
    doc = json.loads(res.stdout)
    assert isinstance(doc, dict), res.stdout
    return doc


def _expected_database(db_url: str) -> dict:
    p = conninfo.conninfo_to_dict(db_url)
    return {"host": p["host"], "port": int(p.get("port") or 5432), "dbname": p["dbname"], "user": p["user"],
            "source": "--database-url"}


# Run in this order on one database: each leaves what the next needs.
COMMANDS = [
    (["migrate"], 0),
    (["status"], 0),
    (["verify"], 0),
    (["db", "url"], 0),
    (["health-check"], 0),
    (["stuck"], 0),
    (["stats", "drift"], 0),
    (["stats", "recalculate"], 0),
    (["backup", "create", "--date", "20241104"], 0),
    (["backup", "list"], 0),
    (["backup", "restore", "--date", "20241104"], 0),
    (["maintenance", "cleanup", "--dry-run"], 0),
    (["rollback", "--to", "0020"], 0),
]


def test_every_command_prints_one_json_document_with_the_database(db_url, cli) -> None:
    expected = _expected_database(db_url)
    for args, code in COMMANDS:
        res = cli(*args, "--json", db=db_url)
        assert res.code == code, (args, res.stdout, res.stderr)
        doc = _one_document(res)
        assert doc["database"] == expected, args
        assert doc["exit_code"] == code, args
        assert "error" not in doc, args


def test_documents_carry_what_the_text_says(db_url, cli) -> None:
    status = _one_document(cli("status", "--json", db=db_url))
    assert status["migrations"] and all(m["applied"] for m in status["migrations"])
    assert {d["kind"] for d in status["definitions"]} == {"function", "view"}
    verify = _one_document(cli("verify", "--json", db=db_url))
    assert verify["failed"] == 0 and verify["passed"] == len(verify["checks"]) > 0
    url = _one_document(cli("db", "url", "--json", db=db_url))["url"]
    assert url == cli("db", "url", db=db_url).stdout.strip()
    made = _one_document(cli("backup", "create", "--date", "20240101", "--json", db=db_url))
    assert [t["backup"] for t in made["tables"]] == ["leads_backup_20240101", "campaigns_backup_20240101"]
    rolled = _one_document(cli("rollback", "--to", "0020", "--json", db=db_url))
    assert rolled["rolled_back"][-1].startswith("0021") and rolled["kept"].startswith("0020")
    again = _one_document(cli("migrate", "--json", db=db_url))
    assert again["applied"][0].startswith("0021") and again["exit_code"] == 0


def test_demo_json(db_url, cli) -> None:
    res = cli("demo", "--force", "--clients", "1", "--leads", "50", "--json", db=db_url)
    doc = _one_document(res)
    assert doc["database"] == _expected_database(db_url)
    assert doc["exit_code"] == res.code
    assert doc["data_set"]["leads"] == 50 and len(doc["data_set"]["clients"]) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", [["status"], ["run"], ["health-check"], ["migrate"], ["backup", "list"]])
def test_an_unreachable_database_is_one_json_error_without_the_password(cli, command) -> None:
    port = _closed_port()
    url = f"postgresql://someone:s3cr3t-pw@127.0.0.1:{port}/platform"
    res = cli("--database-url", url, *command, "--json")
    assert res.code == 2
    doc = _one_document(res)
    assert set(doc) == {"error", "exit_code", "database"}
    assert doc["exit_code"] == 2 and "cannot connect" in doc["error"]
    assert doc["database"] == {"host": "127.0.0.1", "port": port, "dbname": "platform", "user": "someone",
                               "source": "--database-url"}
    assert "s3cr3t-pw" not in res.stdout + res.stderr
    assert res.stderr.startswith("deenroll: error: cannot connect") and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["stuck", "--client-id", "not-a-uuid", "--json"], 2, "malformed client id"),
        (["stuck", "--json", "--limit", "many"], 2, "'many' is not a valid integer"),
        (["--json", "status"], 2, "No such option '--json'"),
        (["nonsense", "--json"], 2, "No such command 'nonsense'"),
        (["backup", "restore", "--date", "20241399", "--json"], 2, "no such day"),
        (["maintenance", "cleanup", "--runs-days", "7", "--json"], 2, "must be >= --logs-days"),
        (["health-check", "--json", "--prometheus"], 2, "exclude each other"),
    ],
)
def test_bad_input_with_json_anywhere_is_one_json_error(db_url, cli, args, code, says) -> None:
    res = cli(*args, db=db_url)
    assert res.code == code, res.stderr
    doc = _one_document(res)
    assert set(doc) == {"error", "exit_code", "database"} and doc["exit_code"] == code
    assert says in doc["error"] and says in res.stderr
    if args[0] != "--json":  # an option the root does not know stops parsing before --database-url is read
        assert doc["database"] == _expected_database(db_url)


def test_no_database_configured_is_one_json_error(cli) -> None:
    res = cli("status", "--json", env={"DEENROLL_EMBEDDED": "never"})
    assert res.code == 2
    doc = _one_document(res)
    assert doc["database"] == {"host": None, "port": None, "dbname": None, "user": None, "source": None}
    assert "no database configured" in doc["error"]
