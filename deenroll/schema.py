"""The migration engine's public names in one place (the engine itself is the package
deenroll.migrate; the function and view files' catalogue is deenroll.sqlfiles)."""

from __future__ import annotations

from .migrate.adoption import check_prerequisites
from .migrate.commands import (
    BOOKKEEPING_TABLES,
    ROLE_MARK,
    MigrateResult,
    UninstallResult,
    break_lock,
    migrate,
    rollback,
    uninstall,
)
from .migrate.definitions import DEFINITIONS_TABLE, apply_definitions
from .migrate.execute import RETRIED_SQLSTATES, MigrationError, Statement, drop_invalid_indexes, run_file, statements
from .migrate.files import (
    BASELINE,
    DROPS_BEGIN,
    DROPS_END,
    MigrationFile,
    is_transactional,
    migration_files,
    resolve_target,
    rollback_drops,
    rollback_with_drops,
)
from .migrate.inspection import SOP_COLUMNS, SOP_FUNCTIONS, SOP_TABLES, SOP_VIEWS, Status, status, verify
from .sqlfiles import SCHEMA, Definition, definitions

__all__ = [
    "BASELINE", "BOOKKEEPING_TABLES", "DEFINITIONS_TABLE", "DROPS_BEGIN", "DROPS_END", "RETRIED_SQLSTATES",
    "ROLE_MARK", "SCHEMA", "SOP_COLUMNS", "SOP_FUNCTIONS", "SOP_TABLES", "SOP_VIEWS",
    "Definition", "MigrateResult", "MigrationError", "MigrationFile", "Statement", "Status", "UninstallResult",
    "apply_definitions", "break_lock", "check_prerequisites", "definitions", "drop_invalid_indexes",
    "is_transactional", "migrate", "migration_files", "resolve_target", "rollback", "rollback_drops",
    "rollback_with_drops", "run_file", "statements", "status", "uninstall", "verify",
]
