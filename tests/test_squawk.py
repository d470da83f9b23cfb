"""squawk, the migration linter, finds nothing in migrations/ and rollback/ beyond the documented
exclusions (.squawk.toml, .squawk-rollback.toml). Files run in one transaction are checked as
such (--assume-in-transaction); files that begin with '-- transactional: false' are not."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deenroll.migrate.files import is_transactional

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {"migrations": REPO / ".squawk.toml", "rollback": REPO / ".squawk-rollback.toml"}


def _squawk() -> str:
    local = Path(sys.executable).parent / "squawk"
    found = str(local) if local.exists() else shutil.which("squawk")
    if found is None:
        pytest.skip("squawk is not installed (pip install squawk-cli, in the test extras)")
    return found


def _files(folder: str) -> list[Path]:
    return sorted((REPO / folder).glob("*.sql"))


@pytest.mark.parametrize("folder", ["migrations", "rollback"])
@pytest.mark.parametrize("transactional", [True, False], ids=["in-transaction", "no-transaction"])
def test_squawk_finds_nothing(folder: str, transactional: bool) -> None:
    files = [p for p in _files(folder) if is_transactional(p.read_text()) == transactional]
    if not files:
        pytest.skip(f"no {folder} file of this kind")
    flag = "--assume-in-transaction" if transactional else "--no-assume-in-transaction"
    res = subprocess.run(
        [_squawk(), "--config", str(CONFIGS[folder]), flag, "--reporter", "gcc", *map(str, files)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_squawk_flags_what_the_exclusions_do_not_cover(tmp_path: Path) -> None:
    """The configs leave the linter on: a blocking index build and a non-concurrent drop are found."""
    bad = tmp_path / "bad.sql"
    bad.write_text("SET LOCAL lock_timeout = '2s';\nCREATE INDEX leads_x_idx ON leads (client_id);\n")
    drop = tmp_path / "drop.sql"
    drop.write_text("SET LOCAL lock_timeout = '2s';\nDROP INDEX IF EXISTS leads_x_idx;\n")
    for config, path, rule in ((CONFIGS["migrations"], bad, "require-concurrent-index-creation"),
                               (CONFIGS["rollback"], drop, "require-concurrent-index-deletion")):
        res = subprocess.run([_squawk(), "--config", str(config), "--assume-in-transaction", "--reporter", "gcc", str(path)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and rule in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("config", sorted(CONFIGS.values()), ids=lambda p: p.name)
def test_every_exclusion_gives_its_reason(config: Path) -> None:
    text = config.read_text()
    excluded = tomllib.loads(text)["excluded_rules"]
    assert excluded
    for rule in excluded:
        line = next(l for l in text.splitlines() if f'"{rule}"' in l)
        assert re.search(r'",\s*#\s*\S.{20,}', line), f"{config.name}: {rule} has no reason"
