"""The migration files (migrations/NAME.sql with rollback/NAME.sql) and the generated lines of
a rollback file that drop the functions and views needing its migration."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import UserError
from ..sqlfiles import definitions

BASELINE = "0018_baseline"


@dataclass(frozen=True)
class MigrationFile:
    stem: str
    apply_path: Path
    rollback_path: Path

    @property
    def transactional(self) -> bool:
        """False when the file begins with `-- transactional: false` (run outside a transaction)."""
        return is_transactional(self.apply_path.read_text())


_NOT_TRANSACTIONAL = re.compile(r"--[ \t]*transactional:[ \t]*false[ \t]*(\n|$)", re.I)


def is_transactional(text: str) -> bool:
    return _NOT_TRANSACTIONAL.match(text.lstrip()) is None


def migration_files() -> list[MigrationFile]:
    rollback = paths.sql_dir("rollback")
    return [MigrationFile(p.stem, p, rollback / p.name) for p in sorted(paths.sql_dir("migrations").glob("*.sql"))]


def resolve_target(value: str) -> str:
    """A migration's full stem, or its number ('19', '0019'), to the stem."""
    stems = [m.stem for m in migration_files()]
    if value in stems:
        return value
    if value.isdigit():
        for stem in stems:
            if int(stem.split("_", 1)[0]) == int(value):
                return stem
        if int(value) < int(BASELINE.split("_", 1)[0]):
            raise UserError(
                f"{value} is before the baseline {BASELINE}: deenroll never rolls back the platform's own tables"
            )
    raise UserError(f"no migration {value!r}; known: {', '.join(stems)}")


def sop_rollback_path(stem: str) -> str:
    """The operating procedure's name for a migration's rollback script."""
    return f"migrations/rollback/{stem.split('_', 1)[0]}_rollback.sql"


# A rollback file also serves the psql route (no deenroll at hand): between these two lines it
# drops the functions and views that need its migration. The lines are written from the files'
# headers by scripts/sync-rollback-drops.py and checked by the tests; never edited by hand.
DROPS_BEGIN = "-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)"
DROPS_END = "-- end of the functions and views"


def rollback_drops(stem: str) -> list[str]:
    """The DROP statements of the functions and views whose `-- requires:` names `stem`, and of
    every function or view built on them (their `-- after:`), in the reverse of creation order.
    Trigger functions are left to the rollback file, which restores or drops them after their
    triggers."""
    ordered = definitions()
    gone = {d.name for d in ordered if d.requires == stem}
    for d in ordered:  # dependency order: what a definition is built on comes before it
        if gone.intersection(d.after):
            gone.add(d.name)
    return [d.drop for d in reversed(ordered) if d.name in gone and not d.fires_on_trigger]


def rollback_with_drops(stem: str, text: str) -> str:
    """`text` (a rollback file) with its generated block replaced by `rollback_drops(stem)`."""
    block = "\n".join([DROPS_BEGIN, *rollback_drops(stem), DROPS_END])
    pattern = re.compile(re.escape(DROPS_BEGIN) + r".*?" + re.escape(DROPS_END), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text, count=1)
    if not rollback_drops(stem):
        return text
    raise ValueError(f"rollback of {stem}: the lines '{DROPS_BEGIN}' ... '{DROPS_END}' are missing")
