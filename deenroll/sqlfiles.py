"""The function and view files (functions/*.sql, views/*.sql): which exist, what their headers say,
and the order they are created in. Reading them needs no database and no migration engine.

A file creates one object named like the file, in the schema its CREATE names, and carries
exactly one `-- requires: <migration>` header (the migration that must be applied first) and
any number of `-- after: <file> ...` headers (the functions or views it is built on).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from . import paths

# The schema deenroll's objects live in. Every SQL file names our objects qualified with it;
# Python passes this name wherever a catalog lookup needs it as a value.
SCHEMA = "public"


@dataclass(frozen=True)
class Definition:
    """One function, procedure or view file: its object name, kind, prerequisites and text."""

    name: str
    kind: str  # "function" (procedures too) or "view"
    path: Path
    requires: str
    after: tuple[str, ...]
    sql: str
    schema: str  # the schema its CREATE names: ours, or deenroll for what the SOP does not name
    routine: str  # what its CREATE makes: FUNCTION, PROCEDURE or VIEW

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def drop(self) -> str:
        """The statement that drops it (a rollback's generated line)."""
        return f"DROP {self.routine} IF EXISTS {self.schema}.{self.name};"

    @property
    def fires_on_trigger(self) -> bool:
        """A trigger function: the migration that made its trigger also restores or drops it on
        rollback (triggers still use it while the rollback runs), so nothing drops it beforehand."""
        return _TRIGGER.search(self.sql) is not None


_TRIGGER = re.compile(r"^RETURNS\s+trigger\b", re.M | re.I)
_HEADER = re.compile(r"^--\s*(requires|after):\s*(.+?)\s*$", re.M)
_CREATE = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE|VIEW)\s+(\w+)\.(\w+)\b", re.M | re.I)


def definitions() -> list[Definition]:
    """Every function and view file, in the order they must be applied."""
    found: dict[str, Definition] = {}
    for kind, folder in (("function", "functions"), ("view", "views")):
        for path in sorted(paths.sql_dir(folder).glob("*.sql")):
            found[path.stem] = _read(kind, path)
    return _dependency_order(found)


def _read(kind: str, path: Path) -> Definition:
    sql = path.read_text()
    headers: dict[str, list[str]] = {"requires": [], "after": []}
    for key, value in _HEADER.findall(sql):
        headers[key] += value.replace(",", " ").split()
    if len(headers["requires"]) != 1:
        raise RuntimeError(f"{path}: needs exactly one '-- requires: <migration>' header")
    create = _CREATE.search(sql)
    if create is None or create.group(3) != path.stem:
        raise RuntimeError(f"{path}: needs a 'CREATE FUNCTION|PROCEDURE|VIEW <schema>.{path.stem}'")
    schema, routine = create.group(2), create.group(1).upper()
    return Definition(path.stem, kind, path, headers["requires"][0], tuple(headers["after"]), sql, schema, routine)


def _dependency_order(defs: dict[str, Definition]) -> list[Definition]:
    """Functions before views, names in order, and each after what its `after:` names."""
    ordered: dict[str, Definition] = {}  # in creation order

    def visit(d: Definition, trail: tuple[str, ...]) -> None:
        if d.name in ordered:
            return
        if d.name in trail:
            raise RuntimeError(f"definition cycle: {' -> '.join(trail + (d.name,))}")
        for dep in d.after:
            if dep not in defs:
                raise RuntimeError(f"{d.path}: '-- after: {dep}' names no function or view file")
            visit(defs[dep], trail + (d.name,))
        ordered[d.name] = d

    for d in sorted(defs.values(), key=lambda d: (d.kind != "function", d.name)):
        visit(d, ())
    return list(ordered.values())
