"""Where the SQL files are, for an installed wheel and for a source checkout."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def sql_root() -> Path:
    """The directory holding migrations/, rollback/, functions/ and views/."""
    installed, checkout = _PACKAGE / "sql", _PACKAGE.parent
    for root in (installed, checkout):
        if (root / "migrations").is_dir():
            return root
    raise RuntimeError(f"deenroll: SQL files not found under {installed} or {checkout}")


def sql_dir(name: str) -> Path:
    return sql_root() / name
