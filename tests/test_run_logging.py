"""`deenroll run`'s log lines: LOG_LEVEL is checked, every line carries an ISO 8601 time with its offset."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

LINE = re.compile(r"^(\S+) deenroll\[\d+\] (DEBUG|INFO|WARNING|ERROR) \S")
ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d$")


def one_due_lead(conn: psycopg.Connection) -> str:
    """A client with a 3-message campaign and one lead that received all three: a run de-enrolls it."""
    client = str(uuid.uuid4())
    [campaign] = conn.execute(
        "INSERT INTO campaigns (client_id, name, messages) VALUES (%s, 'c', '[\"a\", \"b\", \"c\"]') RETURNING id", (client,)
    ).fetchone()
    [lead] = conn.execute(
        "INSERT INTO leads (client_id, campaign_link_id, current_message_position) VALUES (%s, %s, 3) RETURNING id::text",
        (client, campaign),
    ).fetchone()
    return lead


def active(conn: psycopg.Connection, lead: str) -> bool:
    return conn.execute("SELECT is_active FROM leads WHERE id = %s", (lead,)).fetchone()[0]


@pytest.mark.parametrize("given", ["verbose", "warn", "2", "info,debug"])
def test_an_unknown_log_level_is_one_line_and_changes_nothing(cli, db_url: str, conn: psycopg.Connection, given: str) -> None:
    lead = one_due_lead(conn)
    res = cli("run", db=db_url, env={"LOG_LEVEL": given})
    assert res.code == 2
    assert res.stderr == f"deenroll: error: LOG_LEVEL must be one of debug, info, warning, error (got '{given}')\n"
    assert res.stdout == ""
    assert active(conn, lead)
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs").fetchone()[0] == 0


@pytest.mark.parametrize(("given", "shown", "hidden"), [
    ("DEBUG", {"DEBUG", "INFO"}, set()),
    ("Info", {"INFO"}, {"DEBUG"}),
    (" warning ", set(), {"DEBUG", "INFO"}),
    ("ERROR", set(), {"DEBUG", "INFO"}),
    ("", {"INFO"}, {"DEBUG"}),  # empty, as `LOG_LEVEL=` leaves it: the default
])
def test_log_levels_are_read_in_any_case(cli, db_url: str, conn: psycopg.Connection, given, shown, hidden) -> None:
    lead = one_due_lead(conn)
    res = cli("run", db=db_url, env={"LOG_LEVEL": given})
    assert res.code == 0, res.stderr
    levels = {m.group(2) for m in map(LINE.match, res.stderr.splitlines()) if m}
    assert shown <= levels and not hidden & levels, res.stderr
    assert not active(conn, lead)


@pytest.mark.parametrize(("tz", "offset"), [("UTC0", "+00:00"), ("XST-05:30", "+05:30"), ("YST7", "-07:00")])
def test_log_lines_carry_iso_8601_times_with_the_local_offset(cli, db_url: str, conn: psycopg.Connection, tz, offset) -> None:
    """TZ as POSIX strings (no time zone database needed): 'XST-05:30' is five and a half hours east of UTC."""
    one_due_lead(conn)
    before = datetime.now(timezone.utc)
    res = cli("run", db=db_url, env={"LOG_LEVEL": "debug", "TZ": tz})
    after = datetime.now(timezone.utc)
    assert res.code == 0, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) >= 3  # clients found, client started, batch, client done
    for line in lines:
        m = LINE.match(line)
        assert m, line
        stamp = m.group(1)
        assert ISO_WITH_OFFSET.match(stamp) and stamp.endswith(offset), line
        when = datetime.fromisoformat(stamp)
        # the offset names the same instant: the time lies within the command's lifetime (millisecond resolution)
        assert before - timedelta(milliseconds=1) <= when <= after, (line, before, after)
