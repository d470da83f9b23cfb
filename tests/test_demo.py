"""`deenroll demo` and the synthetic data set: deterministic, its own rows only, exact after a run."""

from __future__ import annotations

import os
import re
import subprocess

import psycopg

from deenroll import dataset
from conftest import deenroll_exe
from conftest import add_campaign, add_leads, new_id

DEMO = ("demo", "--force", "--clients", "3", "--leads", "3000")


def state(conn) -> dict[str, list[tuple]]:
    """What a demo leaves behind, without timestamps and run ids (they differ between runs)."""
    return {
        "leads": conn.execute(
            """SELECT id, client_id, campaign_link_id, first_name, last_name, phone, email, current_message_position,
                      is_active, opted_out, booked, completed_at IS NULL,
                      ARRAY(SELECT e - 'completed_at' - 'de_enrolled_at' - 'run_id'
                              FROM jsonb_array_elements(campaign_history) e)::text
                 FROM leads ORDER BY id"""
        ).fetchall(),
        "campaigns": conn.execute(
            """SELECT id, client_id, name, messages, is_active, active_leads_count, completed_leads_count,
                      opted_out_count, booked_count FROM campaigns ORDER BY id"""
        ).fetchall(),
        "log": conn.execute(
            "SELECT lead_id, campaign_id, outcome, messages_received FROM de_enrollment_lead_log ORDER BY lead_id"
        ).fetchall(),
        "runs": conn.execute(
            "SELECT client_id, status, leads_de_enrolled FROM de_enrollment_runs ORDER BY client_id"
        ).fetchall(),
    }


def without_timings(text: str) -> str:
    return re.sub(r"\d+(\.\d+)? (s|ms|h)\b", "T", text)


def test_demo_refuses_a_database_that_is_not_the_embedded_one(db_url, conn, cli) -> None:
    res = cli("demo", db=db_url)
    assert res.code == 2
    assert res.stderr.strip().startswith("deenroll: error: the demo writes synthetic rows into")
    assert "--force" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert conn.execute("SELECT count(*) FROM campaigns").fetchone()[0] == 0
    for bad in (("--clients", "0"), ("--leads", "-5")):
        res = cli("demo", "--force", *bad, db=db_url)
        assert res.code == 2 and res.stderr.startswith("deenroll: error:")


def test_two_demos_give_identical_results_and_replace_their_own_rows(db_url, conn, cli) -> None:
    other = new_id()  # a client that is not the demo's: left alone, not even run
    camp = add_campaign(conn, other)
    (stuck_lead,) = add_leads(conn, camp, other, 1, position=3)

    first = cli(*DEMO, db=db_url)
    assert first.code == 0, first.stdout + first.stderr
    out = first.stdout
    assert "data set: 3 clients, 12 campaigns, 3,000 leads (seed 'deenroll')" in out
    assert "  ✅ All clients processed successfully in last 24h" in out
    assert "checks: 0 stuck leads, 0 campaigns with counter drift, 0 duplicate de-enrollments: counters exact" in out
    m = re.search(r"de-enrolled: ([\d,]+) completed, ([\d,]+) opted out \(expected ([\d,]+) and ([\d,]+)\)", out)
    assert m and m.group(1) == m.group(3) and m.group(2) == m.group(4) and int(m.group(2).replace(",", "")) > 0
    after_first = state(conn)

    second = cli(*DEMO, db=db_url)
    assert second.code == 0
    assert state(conn) == after_first
    assert without_timings(second.stdout) == without_timings(first.stdout)
    assert conn.execute("SELECT is_active FROM leads WHERE id = %s", (stuck_lead,)).fetchone() == (True,)
    assert conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE client_id = %s", (other,)).fetchone()[0] == 0

    # Another seed: other ids, and the first demo's rows are gone (only its own).
    third = cli("demo", "--force", "--clients", "2", "--leads", "500", "--seed", "other", db=db_url)
    assert third.code == 0, third.stdout
    clients = {r[0] for r in conn.execute("SELECT DISTINCT client_id::text FROM campaigns")}
    assert other in clients and len(clients) == 3
    assert not clients & {str(r[1]) for r in after_first["leads"]} - {other}
    assert conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 501


def test_build_dataset_is_deterministic_with_the_promised_mix(db_url, conn) -> None:
    def build(seed: str, invalid: int = 0) -> dataset.DatasetInfo:
        with psycopg.connect(db_url) as c:
            info = dataset.build_dataset(c, 4, 20, 20000, 0.1, seed=seed, invalid_campaigns=invalid, tag="bench")
            c.commit()
        return info

    info = build("42")
    assert len(info.client_ids) == 4 and len(set(info.client_ids)) == 4
    # about 10 % due, a quarter of them opted out (hash-based, so not exactly)
    assert 1800 < info.eligible < 2200
    assert 0.2 < info.eligible_opted_out / info.eligible < 0.3
    by_reason = dict(conn.execute("SELECT reason, count(*) FROM de_enrollment_stuck_leads GROUP BY reason").fetchall())
    assert by_reason == {"sequence_finished": info.eligible_completed, "opted_out": info.eligible_opted_out}
    assert conn.execute("SELECT count(*) FROM campaign_stats_drift").fetchone()[0] == 0  # counters folded
    mix = dict(conn.execute(
        "SELECT is_active, count(*) FROM leads GROUP BY is_active").fetchall())
    assert 0.6 < mix[True] / 20000 < 0.8
    assert conn.execute("SELECT count(DISTINCT jsonb_array_length(messages)) FROM campaigns").fetchone()[0] > 3
    snapshot = state(conn)

    assert build("42") == info
    assert state(conn) == snapshot
    other = build("43")
    assert set(other.client_ids).isdisjoint(info.client_ids)

    build("42", invalid=2)
    bad = conn.execute("SELECT count(*) FROM campaigns WHERE jsonb_typeof(messages) <> 'array'").fetchone()[0]
    assert bad == 2 and conn.execute("SELECT count(*) FROM campaigns").fetchone()[0] == 20


def test_demo_on_the_embedded_default_database(tmp_path) -> None:
    """No URL and no PG* variables: the demo takes the embedded server, no --force needed."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "DE_ENROLLMENT_")) and k != "DATABASE_URL"}
    env["DEENROLL_HOME"] = str(tmp_path / "home")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([deenroll_exe(), *args], capture_output=True, text=True, env=env, timeout=300)

    try:
        res = run("demo", "--clients", "2", "--leads", "400")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "using the embedded PostgreSQL" in res.stderr
        assert "counters exact" in res.stdout
        res = run("health-check")
        assert res.returncode == 0 and "✅ All clients processed successfully in last 24h" in res.stdout
    finally:
        run("db", "stop")
