"""The previous release's code, taken from this checkout's git history: which commit it is, and
its files written into a directory that `Child.start(code=...)` runs instead of the installed
package."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from deenroll.migrate.files import migration_files

REPO = Path(__file__).resolve().parent.parent


def git(repo: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True)
    except OSError as exc:
        raise RuntimeError(f"git is needed for the previous release's code: {exc}") from None
    if done.returncode != 0:
        raise RuntimeError(f"git {args[0]} in {repo}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def previous_release() -> str:
    """The stem of the second-to-last migration file: the release an upgrade starts from."""
    stems = [m.stem for m in migration_files()]
    if len(stems) < 2:
        raise RuntimeError("an upgrade needs at least two migrations")
    return stems[-2]


def previous_release_code(into: Path) -> str:
    """The code of the previous release, written under `into`: this checkout's commit before the one
    that added the newest migration (HEAD when that file is not committed yet). Returns the commit."""
    latest = migration_files()[-1].stem
    added = git(REPO, "log", "-1", "--diff-filter=A", "--format=%H", "--", f"migrations/{latest}.sql").decode().strip()
    commit = git(REPO, "rev-parse", f"{added}^" if added else "HEAD").decode().strip()
    listed = git(REPO, "ls-tree", "--name-only", commit, "migrations/").decode().split()
    stems = sorted(Path(name).stem for name in listed if name.endswith(".sql"))
    if not stems or stems[-1] != previous_release():
        raise RuntimeError(f"commit {commit[:12]} ends at {stems[-1:]}, not at {previous_release()}")
    return code_at(commit, into)


def previous_release_commit() -> str:
    """The commit before the one that moved the run's loop into the database (added run_de_enrollment)."""
    added = git(REPO, "log", "-1", "--diff-filter=A", "--format=%H", "--",
                "functions/run_de_enrollment.sql").decode().strip()
    if not added:
        raise RuntimeError("no commit in this checkout's history added functions/run_de_enrollment.sql")
    return added + "^"


def code_at(revision: str, into: Path) -> str:
    """deenroll's code (package, migrations, functions, views) at `revision` of this checkout's git
    history, written under `into` for Child.start(code=...). Returns the full commit."""
    commit = git(REPO, "rev-parse", "--verify", f"{revision}^{{commit}}").decode().strip()
    archive = git(REPO, "archive", commit, "cli.py", "deenroll", "migrations", "rollback", "functions", "views")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit
