"""The benchmark's code path at a tiny scale (bench/benchmark.py): every figure is produced,
and the set-based lower bound does exactly the runner's work. No timing assertions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from bench import checks, measures, rounds, servers
from deenroll.dataset import build_dataset
from deenroll.migrate.files import migration_files

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "benchmark.py"
STEMS = [m.stem for m in migration_files()]
DEBIAN_PG15 = (servers.DEBIAN_PG15 / "postgres").exists()  # the benchmark's row for it runs where it is installed


def _dbname(url: str) -> str:
    return conninfo.conninfo_to_dict(url)["dbname"]


def _bench_databases(pg_server) -> list[str]:
    with pg_server.admin() as conn:
        return [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'deenroll\\_bench\\_%' ORDER BY 1").fetchall()]


def _consistent(ratio: float, ratio_digits: int, num: float, den: float, digits: int) -> bool:
    """`ratio`, reported to `ratio_digits` decimals, is num/den for some num and den that round,
    to `digits` decimals, to the reported `num` and `den`: the figures agree at the precision
    they are printed with, whatever the data size and the machine's speed."""
    half = 0.5 * 10.0**-digits * (1 + 1e-9)
    low = (num - half) / (den + half)
    high = (num + half) / (den - half) if den > half else math.inf
    slack = 0.5 * 10.0**-ratio_digits * (1 + 1e-9)
    return low - slack <= ratio <= high + slack


def test_ratio_check_uses_the_reported_precision() -> None:
    # a 10 ms lower bound printed as 0.010 may have been 0.0105: 0.114 / 0.0105 = 10.86, not 11.40
    assert _consistent(10.86, 2, 0.114, 0.010, 3)
    assert not _consistent(10.86, 2, 0.114, 0.012, 3)  # off by more than the rounding
    assert not _consistent(1.50, 2, 2.000, 1.000, 3)
    assert _consistent(2.00, 2, 0.001, 0.000, 3)  # a lower bound that prints as 0.000 bounds nothing from above


def test_tiny_benchmark_reports_every_figure_and_cleans_up(pg_server, tmp_path):
    before = _bench_databases(pg_server)
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--database-url", pg_server.admin_dsn,
         "--leads", "3000", "--clients", "3", "--campaigns", "12", "--eligible-fraction", "0.2", "--repeats", "2",
         "--idle-small-leads", "1000", "--idle-repeats", "1",
         "--trigger-statements", "50", "--client-statements", "20",
         "--cs-leads", "2000", "--cs-clients", "2", "--cs-base", "2", "--cs-extra", "20", "--cs-repeats", "1",
         "--migrate-wait-leads", "2000", "--migrate-wait-leads", "3000", "--migrate-upgrade-leads", "3000",
         "--json-out", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())

    # machine and server
    assert r["machine"]["nproc"] >= 1 and r["machine"]["cpu_model"] and r["machine"]["ram_gb"]
    assert r["server"]["version"] and "fsync" in r["server"]["settings"]

    # (a) and (b): wall time, leads/s, ratio, peak RSS, all de-enrolling every eligible lead
    eligible = r["dataset"]["eligible"]
    assert eligible > 0 and r["dataset"]["leads"] == 3000
    names = [m["name"] for m in r["measurements"]]
    with_workers = "--workers" in subprocess.run([str(Path(sys.executable).parent / "deenroll"), "run", "--help"],
                                                 capture_output=True, text=True).stdout
    previous = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--diff-filter=A", "--format=%h", "--",
                               "functions/run_de_enrollment.sql"], capture_output=True, text=True).stdout.strip()
    previous = subprocess.run(["git", "-C", str(REPO), "rev-parse", f"{previous}^"],
                              capture_output=True, text=True).stdout.strip()
    assert names == ["lower bound: one statement", "deenroll run --batch-size 100", "deenroll run --batch-size 1000"] + (
        ["deenroll run --batch-size 100 --workers 2"] if with_workers else []) + [
        "CALL run_de_enrollment, batch 100", "CALL run_de_enrollment, batch 1000",
        f"previous {previous[:7]}: run --batch-size 100"] + (
        [f"previous {previous[:7]}: run --batch-size 100 --workers 2"] if with_workers else [])
    for m in r["measurements"]:
        assert m["leads"] == eligible, m
        assert m["wall_s"] > 0 and m["leads_per_s"] > 0 and m["ratio"] > 0
        assert len(m["walls_s"]) == 2 and all(a["leads"] == eligible for a in m["attempts"])
    by_name = {m["name"]: m for m in r["measurements"]}
    for m in r["measurements"][1:]:
        if m["name"].startswith("CALL"):  # one statement on an open connection: no process of its own
            assert m["peak_rss_mb"] is None and m["runner_ms"] is None
        else:
            assert m["peak_rss_mb"] > 10 and m["runner_ms"] >= 0
        # walls are printed in ms (3 decimals of s), ratios with 2 decimals
        assert _consistent(m["ratio"], 2, m["wall_s"], r["measurements"][0]["wall_s"], 3), m
    assert r["measurements"][1]["detail"]["batches"] > r["measurements"][2]["detail"]["batches"]
    # the CALL makes the batches `deenroll run` makes (one CALL per client there)
    for bs in (100, 1000):
        assert by_name[f"CALL run_de_enrollment, batch {bs}"]["detail"] == by_name[f"deenroll run --batch-size {bs}"]["detail"]

    # in the database: one CALL against the lower bound, and queued CALLs with nothing to do
    lower_wall = r["measurements"][0]["wall_s"]
    x = r["in_database"]
    for bs in (100, 1000):
        assert x[f"call_{bs}_ratio"] == by_name[f"CALL run_de_enrollment, batch {bs}"]["ratio"]
        assert _consistent(x[f"call_{bs}_ratio"], 2, by_name[f"CALL run_de_enrollment, batch {bs}"]["wall_s"], lower_wall, 3)
    assert len(x["queued_ms"]) == 2 * 2 * rounds.QUEUED_CALLS and all(ms > 0 for ms in x["queued_ms"])
    assert min(x["queued_ms"]) <= x["queued_median_ms"] <= x["queued_max_ms"] == max(x["queued_ms"])

    # the same CALLs on Debian's PostgreSQL 15 as shipped, JIT on and off for the login, same data
    pg15 = r["debian_pg15"]
    if DEBIAN_PG15:
        assert pg15["version"].startswith("15.") and pg15["settings"]["jit"] == "on", pg15
        assert pg15["eligible"] == eligible and pg15["broken"] == []
        for jit in ("on", "off"):
            assert len(pg15["call_100_s"][jit]) == 2 and all(s > 0 for s in pg15["call_100_s"][jit])
            assert len(pg15["queued_ms"][jit]) == 2 * rounds.QUEUED_CALLS and pg15["queued_max_ms"][jit] == max(pg15["queued_ms"][jit])
        assert _consistent(pg15["call_100_ratio_on_off"], 2, pg15["call_100_median_s"]["on"], pg15["call_100_median_s"]["off"], 3)
        assert "on Debian's PostgreSQL 15" in proc.stdout
    else:
        assert "error" in pg15 and "on Debian's PostgreSQL 15: n/a" in proc.stdout

    # this checkout's run beside the previous release's, same data, same rounds
    pr = r["previous_release"]
    assert pr["commit"] == previous and pr["batch_size"] == 100
    assert pr["current_wall_s"] == by_name["deenroll run --batch-size 100"]["wall_s"]
    assert pr["previous_wall_s"] == by_name[f"previous {previous[:7]}: run --batch-size 100"]["wall_s"]
    assert pr["previous_wall_s"] > 0 and _consistent(pr["ratio"], 2, pr["current_wall_s"], pr["previous_wall_s"], 3), pr
    if with_workers:  # and with two workers on each side
        assert pr["previous_w2_wall_s"] == by_name[f"previous {previous[:7]}: run --batch-size 100 --workers 2"]["wall_s"]
        assert _consistent(pr["w2_ratio"], 2, pr["current_w2_wall_s"], pr["previous_w2_wall_s"], 3), pr

    # the same end state on every side, and the invariants after each
    assert r["end_state"]["identical"] is True and not r["end_state"]["differences"]
    assert r["end_state"]["reference"]["de_enrolled"] == eligible == r["end_state"]["reference"]["log_rows"]
    sides = ("lower bound", "run 100", "run 1000") + (("run 100 w2",) if with_workers else ()) + (
        "call 100", "call 1000", "previous 100") + (("previous 100 w2",) if with_workers else ())
    assert set(r["invariants"]) == {f"{k} #{i}" for k in sides for i in (1, 2)}
    assert set(r["end_state"]["states"]) == set(r["invariants"])
    assert all(inv["ok"] for inv in r["invariants"].values()), r["invariants"]

    # idle runs at both sizes and their ratio
    idle = r["idle"]
    assert idle["small"]["leads"] == 1000 and idle["large"]["leads"] == 3000
    assert idle["small"]["median_wall_s"] > 0 and idle["large"]["median_wall_s"] > 0
    assert _consistent(idle["wall_ratio"], 3, idle["large"]["median_wall_s"], idle["small"]["median_wall_s"], 3), idle

    # trigger overhead: both cases, both variants, both ways of sending
    assert set(r["triggers"]["cases"]) == {"position update (no counted column)", "last message sent (campaign marked)",
                                           "opted_out flip (counted column)"}
    for case in r["triggers"]["cases"].values():
        for way in ("server_loop", "client_autocommit"):
            assert case[way]["with_triggers_us"] > 0 and case[way]["without_triggers_us"] > 0
            assert case[way]["overhead_pct"] is not None

    # workers 1 and 2: their ratios are the table's
    if with_workers:
        assert r["workers"] == {"w1_ratio": r["measurements"][1]["ratio"], "w2_ratio": r["measurements"][3]["ratio"]}
    else:
        assert r["workers"] is None and "2 workers n/a" in proc.stdout

    # campaign-count scaling: both data sets hold the same due leads, every run de-enrolled them
    cs = r["campaigns"]
    assert cs["campaigns_few"] == 4 and cs["campaigns_many"] == 44 and cs["due"] > 0
    for side in ("few", "many"):
        assert len(cs[side]["run_s"]) == 1 and cs[side]["run_wall_s"] > 0 and cs[side]["idle_wall_s"] > 0
        assert cs[side]["run_runner_ms"] >= 0 and cs[side]["idle_runner_ms"] >= 0 and len(cs[side]["load"]) == 1
    assert _consistent(cs["run_wall_ratio"], 2, cs["many"]["run_wall_s"], cs["few"]["run_wall_s"], 3), cs
    assert _consistent(cs["idle_wall_ratio"], 2, cs["many"]["idle_wall_s"], cs["few"]["idle_wall_s"], 3), cs

    # the longest platform write wait while migrating, at both sizes
    mw = r["migrate_wait"]
    assert [x["leads"] for x in mw] == [2000, 3000]
    for x in mw:
        assert x["writes"] > 0 and x["longest_wait_ms"] > 0 and x["campaigns_with_wrong_active_count"] == 0

    # the upgrade from the previous release (this checkout's git history) during a run of it
    mu = r["migrate_upgrade"]
    assert "error" not in mu, mu
    assert mu["leads"] == 3000 and mu["to"] == STEMS[-1] and mu["from"] == STEMS[-2]
    assert mu["migrate"]["exit_code"] == 0 and mu["migrate"]["applied"] == [STEMS[-1]]
    assert mu["run"]["exit_code"] == 0 and mu["run"]["totals"]["failed"] == 0
    assert mu["writes_during_migrate"]["writes"] > 0 and mu["writes_during_migrate"]["failed_writes"] == 0
    c = mu["checks"]
    assert (c["runs_left_running"], c["leads_logged_twice"], c["leads_with_two_entries_of_ours"],
            c["due_left_untouched_by_writer"]) == (0, 0, 0, 0), c

    # every target, each judged
    assert [t["name"] for t in r["targets"]] == [
        "ratio run/lower bound at batch size 100", "ratio run/lower bound at batch size 1000",
        "ratio one CALL/lower bound at batch size 100", "queued CALL with nothing to do, longest (ms)"] + (
        ["queued CALL on PG 15 with JIT on, median (ms)", "queued CALL on PG 15 with JIT on, longest (ms)",
         "one CALL at batch 100 on PG 15, JIT on / jit off"] if DEBIAN_PG15 else []) + [
        "ratio run/previous release's run, batch size 100"] + (
        ["ratio run/previous release's run, 2 workers",
         "ratio run/lower bound at batch size 100, 2 workers"] if with_workers else []) + [
        "run 22 / 2 campaigns per client (runner ms)", "idle run 22 / 2 campaigns per client (runner ms)",
        "longest write wait, migrate at 2,000 leads (ms)", "longest write wait, migrate at 3,000 leads (ms)",
        "longest write wait, upgrade in a run, 3,000 (ms)", "exit code of that upgrade's migrate",
        "idle run 3,000 / 1,000 leads (wall)", "runner peak RSS (MB)"]
    assert all(isinstance(t["met"], bool) for t in r["targets"])

    # the printed table carries the same figures
    for text in ("machine:", "PostgreSQL", "lower bound: one statement", "deenroll run --batch-size 1000",
                 "peak RSS", "idle run", "triggers of deenroll", "end state: identical", "workers at batch size 100",
                 "campaign-count scaling", "longest platform write wait", "during an upgrade while a run works",
                 "after the run: 0 runs left running", "in the database, one CALL as pg_cron sends it",
                 "queued CALL run_de_enrollment() right after a complete run", f"previous release {previous[:12]}",
                 "targets"):
        assert text in proc.stdout, text

    # every database it made is gone
    assert _bench_databases(pg_server) == before


@pytest.fixture
def twin_databases(pg_server, db_url) -> Iterator[tuple[str, str, int, int]]:
    """Two clones of one small data set: (url_a, url_b, eligible completed, eligible opted out)."""
    with psycopg.connect(db_url) as conn:
        info = build_dataset(conn, clients=3, campaigns=9, leads=1500, eligible_fraction=0.3, seed="smoke",
                             tag="bench")
        conn.commit()
    names = [f"deenroll_t_twin_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    urls = [pg_server.create_db(n, template=_dbname(db_url)) for n in names]
    try:
        yield urls[0], urls[1], info.eligible_completed, info.eligible_opted_out
    finally:
        for n in names:
            pg_server.drop_db(n)


def _observed(url: str) -> dict[str, object]:
    """What a de-enrollment wrote, read independently of the benchmark's own fingerprint."""
    with psycopg.connect(url) as conn:
        leads = conn.execute(
            """SELECT id, is_active, completed_at IS NULL, campaign_history -> -1 ->> 'outcome',
                      (campaign_history -> -1 ->> 'messages_received')::int, jsonb_array_length(campaign_history)
                 FROM leads WHERE campaign_history <> '[]'::jsonb ORDER BY id""").fetchall()
        log = conn.execute(
            """SELECT lead_id, campaign_id, client_id, action, outcome, messages_received, total_messages
                 FROM de_enrollment_lead_log ORDER BY lead_id, campaign_id""").fetchall()
        counters = conn.execute(
            """SELECT id, active_leads_count, completed_leads_count, opted_out_count, booked_count
                 FROM campaigns ORDER BY id""").fetchall()
        runs = conn.execute(
            """SELECT client_id, status, leads_de_enrolled, leads_completed, leads_opted_out
                 FROM de_enrollment_runs ORDER BY client_id""").fetchall()
    return {"leads": leads, "log": log, "counters": counters, "runs": runs}


def test_lower_bound_and_runner_leave_the_same_end_state(twin_databases, cli):
    url_a, url_b, completed, opted_out = twin_databases
    assert completed > 0 and opted_out > 0

    lower = measures.lower_bound(url_a)
    run = cli("run", "--batch-size", "7", "--json", db=url_b)
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)

    assert lower.leads == completed + opted_out == report["totals"]["leads_de_enrolled"]
    assert report["totals"]["batches"] > 3  # really batched: 7 leads at a time

    a, b = _observed(url_a), _observed(url_b)
    # same leads de-enrolled, with the same outcome and history entry, none left active
    assert a["leads"] == b["leads"]
    assert len(a["leads"]) == completed + opted_out
    assert {row[3] for row in a["leads"]} == {"completed", "opted_out"}
    assert all(row[1] is False and row[5] == 1 for row in a["leads"])
    # same lead-log rows, one per lead
    assert a["log"] == b["log"] and len(a["log"]) == completed + opted_out
    # same counters and the same per-client run totals
    assert a["counters"] == b["counters"]
    assert a["runs"] == b["runs"] and all(r[1] == "success" for r in a["runs"])

    for url in (url_a, url_b):
        inv = checks.invariants(url)
        assert inv["ok"], inv
    assert checks.differences(checks.end_state(url_a), checks.end_state(url_b)) == []


def test_end_state_comparison_notices_a_difference(twin_databases):
    url_a, url_b, _, _ = twin_databases
    measures.lower_bound(url_a)
    measures.lower_bound(url_b)
    assert checks.differences(checks.end_state(url_a), checks.end_state(url_b)) == []
    with psycopg.connect(url_b) as conn:
        # one lead de-enrolled with a different outcome recorded, and a counter off by one
        conn.execute(
            """UPDATE leads SET campaign_history = jsonb_set(campaign_history, '{0,outcome}', '"opted_out"')
                WHERE id = (SELECT id FROM leads WHERE campaign_history -> 0 ->> 'outcome' = 'completed'
                             ORDER BY id LIMIT 1)""")
        conn.execute("UPDATE campaigns SET booked_count = booked_count + 1 WHERE id = (SELECT id FROM campaigns ORDER BY id LIMIT 1)")
    diff = checks.differences(checks.end_state(url_a), checks.end_state(url_b))
    assert any(d.startswith("leads_md5") for d in diff) and any(d.startswith("counters_md5") for d in diff)
    assert not checks.invariants(url_b)["ok"]  # the counter no longer matches its leads
