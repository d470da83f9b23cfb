"""The migration engine: versioned migrations through yoyo, and the function and view files on
top of them (docs/architecture.md says which module does what).

migrations/NAME.sql and rollback/NAME.sql are one yoyo migration each, one step forward and one
back, each depending on the one before; the step runs the file statement by statement so that a
failure names the statement (and, for a lock wait, the session holding the lock). functions/*.sql
and views/*.sql are applied after the migrations whenever their text changed, in dependency
order, replaced in place, and only once the migration named in their `-- requires:` header is
applied. Every statement sent is a named query of deenroll/queries_migrate.sql.
"""
