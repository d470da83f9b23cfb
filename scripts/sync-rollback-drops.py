"""Rewrite the generated DROP lines of every rollback/*.sql from the `-- requires:` and `-- after:`
headers of functions/*.sql and views/*.sql. Run it after adding, renaming or re-homing one of
them; the tests fail until the files agree. Usage: .venv-dev/bin/python scripts/sync-rollback-drops.py"""

from deenroll import schema

for migration in schema.migration_files():
    text = migration.rollback_path.read_text()
    new = schema.rollback_with_drops(migration.stem, text)
    if new != text:
        migration.rollback_path.write_text(new)
        print(f"rewrote {migration.rollback_path.name}")
