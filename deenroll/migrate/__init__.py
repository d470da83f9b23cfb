"""The migration engine: versioned migrations through yoyo, and the function and view files on
top of them.

migrations/NAME.sql and rollback/NAME.sql are one yoyo migration each, one step forward and one
back, each depending on the one before; the step runs the file statement by statement so that a
failure names the statement (and, for a lock wait, the session holding the lock). functions/*.sql
and views/*.sql are applied after the migrations whenever their text changed, in dependency
order, replaced in place, and only once the migration named in their `-- requires:` header is
applied.

    files.py        the migration files, the rollback files' generated DROP lines
    execute.py      running a file statement by statement, the lock watch, MigrationError
    yoyo_bridge.py  our migrations as yoyo migrations built in memory; yoyo's lock and record
    adoption.py     the prerequisite check, migrations applied by hand recognised
    definitions.py  functions and views applied, dropped only when they must be; their record
    commands.py     migrate, rollback, uninstall, break-lock
    inspection.py   status and verify

The catalogue of function and view files is deenroll/sqlfiles.py (needs none of this), and every
statement sent is a named query of deenroll/queries_migrate.sql.
"""
