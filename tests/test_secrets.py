"""No password ever reaches stdout, stderr or JSON, whatever the connection string looks like.

Every command of the CLI (found by walking the click group, never listed by hand) gets
many well-formed and malformed connection strings whose passwords are made of marker
words separated by URL-special characters, with and without --json. A password pasted
unencoded can be cut by libpq's parser anywhere, so the assertion is on every marker:
no piece of the password may appear. Connections go only to an unreachable port on
127.0.0.1 or to the test server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from urllib.parse import quote

import click
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg import conninfo

from conftest import Server, run_cli
from deenroll.cli import cli, main
from deenroll.migrate.files import migration_files
from webhooks import closed_port_url

MARKERS = ("pwA7q", "pwB7q", "pwC7q")
SPECIALS = ["?", "/", "#", "@", "%", " ", "'", '"', ":", "\\", "&", "=", "%zz", "@@", "/?#", "%40", "\t"]


def password(sep1: str, sep2: str) -> str:
    return f"{MARKERS[0]}{sep1}{MARKERS[1]}{sep2}{MARKERS[2]}"


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the CLI, with its path of names."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def minimal_args(path: tuple[str, ...], command: click.Command) -> list[str]:
    """The command's path plus a valid value for each required parameter."""
    known = {"to": migration_files()[-1].stem, "day": "20000101"}
    args = list(path)
    for param in command.params:
        if not param.required:
            continue
        if isinstance(param.type, click.Choice):
            value = str(param.type.choices[0])
        else:
            value = known.get(param.name or "", "1")
        args += [param.opts[0], value] if isinstance(param, click.Option) else [value]
    return args


def takes_json(path: tuple[str, ...]) -> bool:
    return "--json" in run_help(path)


_HELP: dict[tuple[str, ...], str] = {}


def run_help(path: tuple[str, ...]) -> str:
    if path not in _HELP:
        ctx = click.Context(cli)
        command: click.Command = cli
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        _HELP[path] = command.get_help(ctx)
    return _HELP[path]


INVOCATIONS = [
    pytest.param(args + extra, id=" ".join(args + extra))
    for path, command in commands()
    for args in [minimal_args(path, command)]
    for extra in ([[], ["--json"]] if takes_json(path) else [[]])
]


def connection_strings(pw: str, port: int) -> list[tuple[str, dict[str, str]]]:
    """(connection string, extra environment) pairs carrying the password `pw` in every way libpq allows, and some it does not."""
    host = f"127.0.0.1:{port}"
    enc = quote(pw, safe="")
    return [
        (f"postgresql://alice:{pw}@{host}/db", {}),  # pasted unencoded: often malformed
        (f"postgresql://alice:{enc}@{host}/db", {}),
        (f"postgres://alice:{enc}@{host}/db?sslmode=disable&connect_timeout=3", {}),
        (f"postgresql://alice@{host}/db?password={enc}", {}),
        (f"postgresql://alice@{host}/db?password={pw}", {}),
        (f"postgresql://alice@{host}/db?sslpassword={enc}&sslmode=disable", {}),
        (f"postgresql://alice:{enc}@{host}/db?foo=bar", {}),  # unknown parameter
        (f"postgresql://alice:{enc}@127.0.0.1:99999/db", {}),  # port out of range
        (f"postgresql://alice:{pw}@127.0.0.1:notaport/db", {}),
        (f"postgresql://alice:{enc}@127.0.0.1:{port}x/db", {}),
        (f"postgresql://alice:{pw}@[::1/db", {}),
        (conninfo.make_conninfo(host="127.0.0.1", port=port, dbname="db", user="alice", password=pw), {}),
        (f"host=127.0.0.1 port={port} dbname=db user=alice password={pw}", {}),  # unquoted
        (f"host=127.0.0.1 port={port} dbname=db user=alice password='{pw}", {}),  # unterminated
        (conninfo.make_conninfo(host="127.0.0.1", port=port, dbname="db", sslpassword=pw, sslmode="disable"), {}),
        (f"postgresql://alice@{host}/db", {"PGPASSWORD": pw}),
        (f"postgresql://alice@{host}/db?sslmode=disable", {"PGPASSWORD": pw, "PGSSLMODE": "disable"}),
    ]


def assert_clean(code: int, out: str, err: str, pw: str, as_json: bool) -> None:
    text = out + err
    for marker in MARKERS:
        assert marker not in text, f"a piece of the password is shown:\n{text}"
    assert quote(pw, safe="") not in text
    assert "Traceback" not in text
    if as_json and out.strip():
        doc = json.loads(out)  # one JSON document, nothing else on stdout
        if "database" in doc:
            assert set(doc["database"]) == {"host", "port", "dbname", "user", "source"}
    if code:
        assert len(err.strip().splitlines()) <= 2, err  # one line (a usage error adds a hint)


@pytest.fixture
def quiet_env(monkeypatch, tmp_path) -> None:
    """Nothing configured but what each case sets; never the embedded server."""
    for key in list(os.environ):
        if key.startswith(("PG", "DE_ENROLLMENT_")) or key == "DATABASE_URL":
            monkeypatch.delenv(key)
    monkeypatch.setenv("DEENROLL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DEENROLL_EMBEDDED", "never")
    monkeypatch.setenv("DEENROLL_CONNECT_TIMEOUT", "3")


def call(argv: list[str], capsys) -> tuple[int, str, str]:
    """The CLI's entry point in this process (fast enough to try every command with every string)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def unreachable_port() -> int:
    return int(closed_port_url().split(":")[2].split("/")[0])


@pytest.mark.parametrize("sep1, sep2", [(s, t) for s, t in zip(SPECIALS, SPECIALS[3:] + SPECIALS[:3])])
def test_no_command_shows_a_password_from_any_connection_string(quiet_env, monkeypatch, capsys, sep1, sep2) -> None:
    pw = password(sep1, sep2)
    port = unreachable_port()
    for dsn, env in connection_strings(pw, port):
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            for inv in INVOCATIONS:
                argv = list(inv.values[0])
                code, out, err = call(["--database-url", dsn, *argv], capsys)
                assert_clean(code, out, err, pw, "--json" in argv)
            # the same string from DATABASE_URL instead of the option
            m.setenv("DATABASE_URL", dsn)
            for inv in INVOCATIONS[:6]:
                argv = list(inv.values[0])
                code, out, err = call(argv, capsys)
                assert_clean(code, out, err, pw, "--json" in argv)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sep1=st.text(alphabet="?/#@%:'\" \\&=+;,![]{}$`~^|<>*()-_.aZ9é\t", min_size=1, max_size=6),
    sep2=st.text(alphabet="?/#@%:'\" \\&=+;,![]{}$`~^|<>*()-_.aZ9é", min_size=0, max_size=6),
)
@example(sep1="%99", sep2="")  # percent-escapes that are not UTF-8
@example(sep1="%a9", sep2="%")
@example(sep1="\t%99%9a", sep2="%aa")
def test_generated_passwords_are_never_shown(quiet_env, monkeypatch, capsys, sep1: str, sep2: str) -> None:
    pw = password(sep1, sep2)
    port = unreachable_port()
    probe = [["status", "--json"], ["run", "--json"], ["health-check"], ["db", "url"], ["migrate", "--json"]]
    for dsn, env in connection_strings(pw, port):
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            for argv in probe:
                code, out, err = call(["--database-url", dsn, *argv], capsys)
                assert_clean(code, out, err, pw, "--json" in argv)


def socket_url(server: Server, dbname: str, user: str, pw: str) -> str:
    params = conninfo.conninfo_to_dict(server.admin_dsn)
    return conninfo.make_conninfo(
        host=params.get("host"), port=params.get("port"), dbname=dbname, user=user, password=pw
    )


@pytest.mark.parametrize("inv", INVOCATIONS)
def test_every_command_as_its_own_process_on_the_test_server(inv, pg_server: Server, db_url: str, tmp_path) -> None:
    """The installed script, on a server that answers: a role that does not exist, then a working
    connection (the test server trusts local connections, so the password is carried but unused)."""
    argv = list(inv)
    pw = password("/?#@", "% '\"")
    env = {"DEENROLL_HOME": str(tmp_path / "home"), "DEENROLL_EMBEDDED": "never", "PGPASSWORD": pw}
    dbname = conninfo.conninfo_to_dict(db_url)["dbname"]
    for user in ("no_such_role_pwA7q_is_not_it", "postgres"):
        user = user.replace("pwA7q", "x")
        dsn = socket_url(pg_server, dbname, user, pw)
        if argv[0] == "demo":
            argv = [*argv, "--leads", "200", "--clients", "2"]
        res = run_cli(*argv, db=dsn, env=env, timeout=300)
        assert_clean(res.code, res.stdout, res.stderr, pw, "--json" in argv)


def test_the_database_is_described_without_a_password() -> None:
    from deenroll.database import Target

    pw = password("@", "/")
    target = Target(f"postgresql://alice:{quote(pw, safe='')}@127.0.0.1:6543/sales?sslmode=require", "--database-url")
    assert target.describe_json() == {
        "host": "127.0.0.1", "port": 6543, "dbname": "sales", "user": "alice", "source": "--database-url"
    }
    assert target.display() == "host=127.0.0.1 port=6543 dbname=sales user=alice"
    assert pw not in repr(target)
    misread = Target(f"postgresql://alice:{pw}@127.0.0.1:6543/sales", "DATABASE_URL")
    assert misread.describe_json() == {"host": None, "port": None, "dbname": None, "user": None, "source": "DATABASE_URL"}


BUG_URL = "postgresql://u:p9%99x@127.0.0.1:1/x"
ODD_PARTS = ("password", "user", "host", "port", "dbname", "query value", "query key")
ODD_TAILS = ("", "%", "%f", "%00", "%ff", "%zz")
_PORT_TEXT = b"0123456789 \t\n\r\x0b\x0c"


@st.composite
def odd_urls(draw: st.DrawFn) -> tuple[str, str]:
    """(URL, its password as typed): one part of the URL holds percent-escapes of any bytes
    (not UTF-8, NUL, control characters) and maybe a cut-off or invalid escape after them.

    The host is always left invalid (it ends in %FF, never UTF-8) and the port never reads
    as a number, so no example looks up a name or reaches a port other than 1."""
    part = draw(st.sampled_from(ODD_PARTS))
    raw = draw(st.binary(min_size=1, max_size=4))
    if part == "port":
        raw = draw(st.binary(min_size=1, max_size=4).filter(lambda b: any(c not in _PORT_TEXT for c in b)))
    odd = "".join(f"%{b:02X}" for b in raw) + draw(st.sampled_from(ODD_TAILS))
    pw = f"{MARKERS[0]}{odd}{MARKERS[1]}" if part == "password" else password("/", "@")
    user = "alice" + (odd if part == "user" else "")
    secret = pw if part == "password" else quote(pw, safe="")
    host = f"h{odd}%FF" if part == "host" else "127.0.0.1"
    port = "1" + (odd if part == "port" else "")
    dbname = "db" + (odd if part == "dbname" else "")
    query = {"query value": f"?application_name={odd}", "query key": f"?x{odd}=1"}.get(part, "")
    return f"postgresql://{user}:{secret}@{host}:{port}/{dbname}{query}", pw


def assert_one_line_error(code: int, out: str, err: str, pw: str, as_json: bool) -> None:
    """Exit 2, one line on stderr, no traceback, no piece of the password; with --json one JSON object."""
    assert code == 2, (code, out, err)
    assert len(err.splitlines()) == 1 and err.startswith("deenroll: "), err
    assert "Traceback" not in out + err
    assert pw not in out + err
    assert not any(marker in out + err for marker in MARKERS)
    if as_json:
        doc = json.loads(out)
        assert doc["exit_code"] == 2 and doc["error"] == err.removeprefix("deenroll: error: ").strip()
        assert set(doc["database"]) == {"host", "port", "dbname", "user", "source"}
    else:
        assert out == ""


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=odd_urls())
@example(case=(BUG_URL, "p9%99x"))
@example(case=("postgresql://u%ff:pwA7q@127.0.0.1:1/x", "pwA7q"))
@example(case=("postgresql://u:pwA7q@%ff:1/x", "pwA7q"))
@example(case=("postgresql://u:pwA7q@127.0.0.1:1/x%ff", "pwA7q"))
@example(case=("postgresql://u:pwA7q@127.0.0.1:1/x?application_name=%ff", "pwA7q"))
@example(case=("postgresql://u:pwA7q@127.0.0.1:1/x?password=%ff%fe", "pwA7q"))
@example(case=("postgresql://u:pwA7q@127.0.0.1:1/x%", "pwA7q"))
@example(case=("postgresql://u:pwA7q%00pwB7q@127.0.0.1:1/x", "pwA7q%00pwB7q"))
@example(case=("postgresql://u%0Ab:pwA7q@127.0.0.1:1/x%0Dy", "pwA7q"))
@example(case=("postgresql://u:pwA7q@127.0.0.1:%C2%B2/x", "pwA7q"))  # a digit to str.isdigit(), not to int()
def test_odd_percent_escapes_anywhere_give_one_line(quiet_env, capsys, case: tuple[str, str]) -> None:
    url, pw = case
    for argv in (["status"], ["status", "--json"], ["run", "--json"]):
        code, out, err = call(["--database-url", url, *argv], capsys)
        assert_one_line_error(code, out, err, pw, "--json" in argv)
    code, out, err = call(["--database-url", url, "db", "url"], capsys)  # prints a URL when libpq can read it
    if code:
        assert_one_line_error(code, out, err, pw, False)
    else:
        assert len(out.splitlines()) == 1 and err == "", (out, err)
        assert pw not in out and not any(marker in out for marker in MARKERS)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_url_whose_escapes_are_not_utf8_is_one_line_from_the_installed_command(tmp_path, as_json: bool) -> None:
    env = {"DEENROLL_HOME": str(tmp_path / "home"), "DEENROLL_EMBEDDED": "never", "DEENROLL_CONNECT_TIMEOUT": "3"}
    res = run_cli("status", *(["--json"] if as_json else []), db=BUG_URL, env=env, timeout=60)
    assert_one_line_error(res.code, res.stdout, res.stderr, "p9%99x", as_json)
    assert "%99" not in res.stdout + res.stderr
    assert "not UTF-8" in res.stderr


@pytest.mark.parametrize(
    "argv_url, env",
    [
        ("postgresql://u:pwA7q\udcffpwB7q@127.0.0.1:1/x", {}),  # a byte that is not UTF-8, straight from the shell
        ("host=127.0.0.1 port=1 user=u password=pwA7q\udcffpwB7q", {}),
        (None, {"DATABASE_URL": "postgresql://u:pwA7q\udcffpwB7q@127.0.0.1:1/x"}),
        (None, {"PGHOST": "h\udcff", "PGPORT": "1", "PGPASSWORD": "pwA7q\udcffpwB7q"}),
        (None, {"PGHOST": "127.0.0.1", "PGPORT": "1", "PGUSER": "u\udcff", "PGPASSWORD": "pwA7q\udcffpwB7q"}),
    ],
    ids=["url", "key-value", "DATABASE_URL", "PGHOST", "PGUSER"],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_bytes_that_are_not_utf8_in_argv_or_environment(tmp_path, argv_url, env, as_json: bool) -> None:
    full_env = {"DEENROLL_HOME": str(tmp_path / "home"), "DEENROLL_EMBEDDED": "never", "DEENROLL_CONNECT_TIMEOUT": "3",
                **env}
    res = run_cli("status", *(["--json"] if as_json else []), db=argv_url, env=full_env, timeout=60)
    assert_one_line_error(res.code, res.stdout, res.stderr, "pwA7q\udcffpwB7q", as_json)
