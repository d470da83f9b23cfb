"""A comparable picture of everything a migration can change in the current schema.

Tools' own bookkeeping (yoyo's tables, our definitions table) is left out: it
records history, not schema.
"""

from __future__ import annotations

from typing import Any

import psycopg

TOOL_TABLES = ("_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock", "_deenroll_definitions")



def _acl(expr: str) -> str:
    """An ACL as text with its items in order: the order privileges were granted in means nothing."""
    return f"coalesce((SELECT array_agg(x::text ORDER BY x::text) FROM unnest({expr}) AS x)::text, '')"


_QUERIES: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind,
               """ + _acl("""coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))""") + """,
               coalesce(obj_description(c.oid, 'pg_class'), '')
          FROM pg_class c
         WHERE c.relnamespace = current_schema()::regnamespace
           AND c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f')
           AND c.relname <> ALL (%(tool)s)""",
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity, a.attgenerated,
               """ + _acl("a.attacl") + """, coalesce(col_description(c.oid, a.attnum), '')
          FROM pg_attribute a
          JOIN pg_class c ON c.oid = a.attrelid
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE c.relnamespace = current_schema()::regnamespace
           AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
           AND a.attnum > 0 AND NOT a.attisdropped
           AND c.relname <> ALL (%(tool)s)""",
    "constraints": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid), k.convalidated
          FROM pg_constraint k
          JOIN pg_class c ON c.oid = k.conrelid
         WHERE c.relnamespace = current_schema()::regnamespace
           AND c.relname <> ALL (%(tool)s)""",
    "indexes": """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
          FROM pg_index i
          JOIN pg_class c ON c.oid = i.indrelid
         WHERE c.relnamespace = current_schema()::regnamespace
           AND c.relname <> ALL (%(tool)s)""",
    "triggers": """
        SELECT t.tgname, pg_get_triggerdef(t.oid)
          FROM pg_trigger t
          JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal""",
    "functions": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid),
               """ + _acl("""coalesce(p.proacl, acldefault('f'::"char", p.proowner))""") + """,
               coalesce(obj_description(p.oid, 'pg_proc'), '')
          FROM pg_proc p
         WHERE p.pronamespace = current_schema()::regnamespace AND p.prokind IN ('f', 'p', 'w')""",
    "views": """
        SELECT c.relname, pg_get_viewdef(c.oid)
          FROM pg_class c
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('v', 'm')""",
    "types": """
        SELECT t.typname, t.typtype
          FROM pg_type t
         WHERE t.typnamespace = current_schema()::regnamespace
           AND t.typtype IN ('e', 'd', 'c')
           AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')""",
    "schema_acl": "SELECT coalesce(nspacl::text, '') FROM pg_namespace WHERE oid = current_schema()::regnamespace",
    "extensions": "SELECT extname FROM pg_extension",
}


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every catalog fact of the current schema, each list sorted."""
    out = {}
    for name, sql in _QUERIES.items():
        rows = conn.execute(sql, {"tool": list(TOOL_TABLES)}).fetchall()
        out[name] = sorted(tuple(str(v) for v in row) for row in rows)
    return out


def diff(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    """Human-readable differences, empty when equal."""
    out = []
    for key in a:
        only_a = set(a[key]) - set(b[key])
        only_b = set(b[key]) - set(a[key])
        out += [f"{key}: only before: {row}" for row in sorted(only_a)]
        out += [f"{key}: only after:  {row}" for row in sorted(only_b)]
    return out
