"""The shared, Supabase-like database with a hostile neighbour that test_security.py and
test_security_hostile.py run in.

The database is built the way the platform's production database looks: API roles (anon,
authenticated, service_role) that default privileges hand every new table, sequence and
function in public to; a hostile login with CREATE on public (the default before PostgreSQL 15)
that plants better-matching overloads of built-in functions before deenroll is installed. Every
overload logs a row when it runs. Each test module's `shared` fixture is shared_database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import conninfo, errors

from conftest import Server

API_ROLES = ("anon", "authenticated", "service_role")
LOGINS = ("deenroll_t_hostile", "deenroll_t_scheduler", "deenroll_t_platform", "deenroll_t_nobody")

# Overloads that match our calls better than the built-ins do (exact argument types instead of
# variadic "any", anyarray or anynonarray), in a schema the hostile login can write to.
PLANTS = {
    "format(text,text)": ("text", "pg_catalog.format($1, $2)"),
    "format(text,uuid)": ("text", "pg_catalog.format($1, $2)"),
    "format(text,integer)": ("text", "pg_catalog.format($1, $2)"),
    "format(text,regclass)": ("text", "pg_catalog.format($1, $2)"),
    "format(text,text,text)": ("text", "pg_catalog.format($1, $2, $3)"),
    "concat_ws(text,text,text)": ("text", "pg_catalog.concat_ws($1, $2, $3)"),
    "cardinality(uuid[])": ("integer", "pg_catalog.cardinality($1)"),
    "cardinality(text[])": ("integer", "pg_catalog.cardinality($1)"),
    "jsonb_build_array(jsonb)": ("jsonb", "pg_catalog.jsonb_build_array($1)"),
    "jsonb_build_object(text,uuid)": ("jsonb", "pg_catalog.jsonb_build_object($1, $2)"),
    "jsonb_typeof(json)": ("text", "pg_catalog.json_typeof($1)"),
    "lower(character varying)": ("text", "pg_catalog.lower($1)"),
    "nullif(text,text)": None,  # syntax, not a function: listed so nobody adds it by mistake
}
PLANTED_SETS = {
    "unnest(uuid[])": ("SETOF uuid", "SELECT pg_catalog.unnest($1)"),
    "unnest(text[])": ("SETOF text", "SELECT pg_catalog.unnest($1)"),
}


@dataclass(frozen=True)
class Shared:
    """URLs of one database for each login of the scenario."""

    admin: str
    hostile: str
    scheduler: str
    platform: str
    nobody: str


def _as(url: str, user: str, **extra: str) -> str:
    params = conninfo.conninfo_to_dict(url)
    params["user"] = user
    params.update(extra)
    return conninfo.make_conninfo(**params)


def _ensure_roles(server: Server) -> None:
    with server.admin() as conn:
        for role in API_ROLES + ("deenroll_runner", "deenroll_analyst"):
            _create_role(conn, f"CREATE ROLE {role} NOLOGIN")
        for login in LOGINS:
            _create_role(conn, f"CREATE ROLE {login} LOGIN")


def _create_role(conn: psycopg.Connection, sql: str) -> None:
    try:
        conn.execute(sql)
    except (errors.DuplicateObject, errors.UniqueViolation):
        pass  # another worker made it (roles are server-wide)


def _plant(url: str) -> None:
    """The hostile login's code: logs every call, then answers like the built-in would."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.hijack_log (fn text, by_role text, at timestamptz DEFAULT now())")
        conn.execute("GRANT INSERT, SELECT ON public.hijack_log TO PUBLIC")
        for sig, spec in PLANTS.items():
            if spec is None:
                continue
            returns, call = spec
            name, args = sig.split("(", 1)
            conn.execute(
                f"""CREATE FUNCTION public.{name}({args} RETURNS {returns} LANGUAGE plpgsql AS $$
                    BEGIN
                        INSERT INTO public.hijack_log (fn, by_role) VALUES ('{sig}', current_user);
                        RETURN {call};
                    END $$"""
            )
            conn.execute(f"GRANT EXECUTE ON FUNCTION public.{sig} TO PUBLIC")
        for sig, (returns, body) in PLANTED_SETS.items():
            name, args = sig.split("(", 1)
            conn.execute(
                f"""CREATE FUNCTION public.{name}({args} RETURNS {returns} LANGUAGE plpgsql AS $$
                    BEGIN
                        INSERT INTO public.hijack_log (fn, by_role) VALUES ('{sig}', current_user);
                        RETURN QUERY {body};
                    END $$"""
            )
        conn.execute(
            """CREATE FUNCTION public.hijack_agg_step(uuid[], uuid) RETURNS uuid[] LANGUAGE plpgsql AS $$
               BEGIN
                   INSERT INTO public.hijack_log (fn, by_role) VALUES ('array_agg(uuid)', current_user);
                   RETURN $1 || $2;
               END $$"""
        )
        conn.execute("CREATE AGGREGATE public.array_agg(uuid) (SFUNC = public.hijack_agg_step, STYPE = uuid[])")


def shared_database(pg_server: Server) -> Iterator[Shared]:
    """A fresh database of the scenario, the hostile code planted; dropped afterwards."""
    _ensure_roles(pg_server)
    name = f"deenroll_sec_{uuid.uuid4().hex[:12]}"
    admin = pg_server.create_db(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO deenroll_t_hostile")
        # Supabase's default privileges: every new table, sequence and function goes to the API roles.
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS"):
            conn.execute(f"ALTER DEFAULT PRIVILEGES GRANT ALL ON {kind} TO anon, authenticated, service_role")
            conn.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON {kind} TO anon, authenticated, service_role"
            )
    urls = Shared(
        admin=admin,
        hostile=_as(admin, "deenroll_t_hostile"),
        scheduler=_as(admin, "deenroll_t_scheduler"),
        platform=_as(admin, "deenroll_t_platform", options="-c search_path=deenroll_t_platform,public"),
        nobody=_as(admin, "deenroll_t_nobody"),
    )
    _plant(urls.hostile)
    yield urls
    pg_server.drop_db(name)
