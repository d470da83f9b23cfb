"""Rewrite the generated DROP lines of every rollback/*.sql from the `-- requires:` and `-- after:`
headers of functions/*.sql and views/*.sql. Run it after adding, renaming or re-homing one of
them; the tests fail until the files agree. It reads and writes this checkout's files, with any
Python that has deenroll's dependencies: .venv-test/bin/python scripts/sync-rollback-drops.py"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's deenroll, not an installed copy

from deenroll.migrate.files import migration_files, rollback_with_drops  # noqa: E402

for migration in migration_files():
    text = migration.rollback_path.read_text()
    new = rollback_with_drops(migration.stem, text)
    if new != text:
        migration.rollback_path.write_text(new)
        print(f"rewrote {migration.rollback_path.name}")
