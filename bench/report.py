"""The benchmark's figures as the table printed on stdout."""

from __future__ import annotations

import json
import statistics
from typing import Any

from bench import campaign_scaling
from bench.targets import (TARGET_CALL_RATIO_100, TARGET_JIT_RATIO, TARGET_PREVIOUS_RATIO, TARGET_QUEUED_MAX_JIT_MS,
                           TARGET_QUEUED_MS)


def _n(x: float | int | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def render(r: dict[str, Any]) -> str:
    m, s = r["machine"], r["server"]
    lines = [
        "deenroll benchmark",
        f"machine:  {m['nproc']} CPU(s), {m['cpu_model']}, {m['ram_gb']} GB RAM, Linux {m['kernel']}, Python {m['python']}; "
        f"load average {m['loadavg_start'][0]} at the start, {m.get('loadavg_end', ['?'])[0]} at the end",
        f"server:   PostgreSQL {s['version']} ({r['server_kind']}); "
        + ", ".join(f"{k}={v}" for k, v in s["settings"].items()),
    ]
    d = r["dataset"]
    lines.append(
        f"data set: {d['leads']:,} leads, {d['clients']} clients, {d['campaigns']} campaigns, {d['eligible']:,} eligible "
        f"({d['eligible_completed']:,} finished, {d['eligible_opted_out']:,} opted out); seed {r['options']['seed']!r}; "
        f"built in {d['build_s']} s, VACUUM ANALYZE {d['vacuum_s']} s, {d['size_mb']:,} MB")
    lines.append("")
    reps = r["options"]["repeats"]
    lines.append(f"(a) and (b): median of {reps} round(s), each on a fresh clone of the data set after a CHECKPOINT; "
                 "ratio = wall / lower-bound wall")
    head = f"{'measurement':<42}{'leads':>9}{'wall s':>9}{'leads/s':>9}{'ratio':>7}{'runner ms':>11}{'peak RSS MB':>13}  rounds (wall s)"
    lines += [head, "-" * len(head)]
    for row in r["measurements"]:
        lines.append(f"{row['name']:<42}{_n(row['leads']):>9}{row['wall_s']:>9.3f}{_n(row['leads_per_s']):>9}"
                     f"{_n(row['ratio'], 2):>7}{_n(row['runner_ms']):>11}{_n(row['peak_rss_mb'], 1):>13}  "
                     + ", ".join(f"{w:.2f}" for w in row["walls_s"]))
    lbs = [a["detail"] for a in r["measurements"][0]["attempts"]]
    med = {k: statistics.median(d[k] for d in lbs) for k in ("open_runs_s", "statement_s", "fold_s", "finish_commit_s")}
    lines.append(f"  lower bound, median steps: open runs {med['open_runs_s']:.3f} s, the statement {med['statement_s']:.3f} s, "
                 f"fold {med['fold_s']:.3f} s ({lbs[0]['delta_rows_folded']} delta rows), finish + commit {med['finish_commit_s']:.3f} s")
    for row in r["measurements"][1:]:
        lines.append(f"  {row['name']}: {row['detail']['batches']:,} batches over {row['detail']['clients']} clients; "
                     + ("one statement on an open connection, timed like the lower bound" if row["runner_ms"] is None else
                        f"process start and exit (wall - runner ms) {row['wall_s'] * 1000 - row['runner_ms']:,.0f} ms"))
    if r.get("in_database"):
        x = r["in_database"]
        lines.append(f"  in the database, one CALL as pg_cron sends it: ratio to the lower bound {x['call_100_ratio']:.2f} "
                     f"at batch 100 (target <= {TARGET_CALL_RATIO_100} at 1,000,000 leads), {x['call_1000_ratio']:.2f} "
                     f"at batch 1000; data set {d['leads']:,} leads")
        lines.append(f"  queued CALL run_de_enrollment() right after a complete run (nothing to do, a new session each): "
                     f"median {x['queued_median_ms']:.1f} ms, longest {x['queued_max_ms']:.1f} ms of {len(x['queued_ms'])} "
                     f"(target < {TARGET_QUEUED_MS:.0f} ms)")
    if r.get("debian_pg15"):
        lines += render_debian(r["debian_pg15"])
    if r.get("previous_release"):
        x = r["previous_release"]
        lines.append("  previous release: n/a (" + x["error"] + ")" if "error" in x else
                     f"  deenroll run --batch-size {x['batch_size']}: this checkout {x['current_wall_s']:.3f} s, previous "
                     f"release {x['commit'][:12]} {x['previous_wall_s']:.3f} s (its own migrate first, untimed); "
                     f"ratio this / previous {x['ratio']:.2f} (target <= {TARGET_PREVIOUS_RATIO})"
                     + (f"; with --workers 2: {x['current_w2_wall_s']:.3f} s vs {x['previous_w2_wall_s']:.3f} s, "
                        f"ratio {x['w2_ratio']:.2f}" if "w2_ratio" in x else ""))
    es = r["end_state"]
    ref = es["reference"]
    lines.append(f"end state: {'identical' if es['identical'] else 'DIFFERENT'} in all {len(es['states'])} measurements "
                 f"({ref['de_enrolled']:,} leads de-enrolled: {ref['completed']:,} completed, {ref['opted_out']:,} opted out; "
                 f"{ref['log_rows']:,} log rows; counters and run totals alike)")
    for name, diff in es["differences"].items():
        lines.append(f"  {name}: " + "; ".join(diff))
    broken = {n: inv for n, inv in r["invariants"].items() if not inv["ok"]}
    lines.append("invariants after every measurement (nothing due, counters exact, no pending deltas, one log row "
                 "per de-enrolled lead, runs success): " + ("ok" if not broken else "BROKEN " + json.dumps(broken)))
    if r.get("idle"):
        small, large = r["idle"]["small"], r["idle"]["large"]
        lines += ["", f"idle run (nothing eligible; everything de-enrolled first, VACUUM ANALYZE, 1 warm-up, median of {small['runs']}):"]
        for x in (small, large):
            lines.append(f"  {x['leads']:>10,} leads: wall {x['median_wall_s']:.3f} s (runs {x['walls_s']}), "
                         f"runner {x['median_runner_ms']} ms, claim queries {x['sql_claim_ms_all_clients']} ms, "
                         f"peak RSS {x['peak_rss_mb']} MB")
        lines.append(f"  ratio large/small: wall {r['idle']['wall_ratio']:.2f}, runner ms {r['idle']['runner_ratio']:.2f}")
    if r.get("triggers"):
        t = r["triggers"]
        lines += ["", "triggers of deenroll on leads (counter deltas, campaign marks), single-row UPDATEs of leads, µs per statement "
                  f"(medians; server loop: {t['rounds']} rounds of {t['statements']:,} statements in a DO block; "
                  f"client: {t['client_rounds']} rounds of {t['client_statements']:,} autocommit transactions):",
                  f"  {'':<38}{'server loop':>30}{'client autocommit':>36}",
                  f"  {'':<38}{'with':>9}{'without':>9}{'overhead':>12}{'with':>11}{'without':>9}{'overhead':>16}"]
        for case, v in t["cases"].items():
            a, b = v["server_loop"], v["client_autocommit"]
            lines.append(f"  {case:<38}{a['with_triggers_us']:>9.1f}{a['without_triggers_us']:>9.1f}"
                         f"{a['overhead_us']:>+7.1f} ({a['overhead_pct']:>+4.0f}%)"
                         f"{b['with_triggers_us']:>9.1f}{b['without_triggers_us']:>9.1f}"
                         f"{b['overhead_us']:>+9.1f} ({b['overhead_pct']:>+4.0f}%)")
    if "workers" in r:
        w = r["workers"]
        lines += ["", "workers at batch size 100 (ratio to the lower bound): "
                  + (f"1 worker {w['w1_ratio']:.2f}, 2 workers {w['w2_ratio']:.2f}" if w else
                     "1 worker see above, 2 workers n/a (`deenroll run --help` lists no --workers)")]
    if r.get("campaigns"):
        lines += [""] + campaign_scaling.render(r["campaigns"])
    if "migrate_wait" in r:
        lines += ["", "longest platform write wait during `deenroll migrate` (one UPDATE of a random lead every "
                  "5 ms from the baseline to the latest migration): "]
        for x in r["migrate_wait"]:
            lines.append(f"  {x['leads']:>12,} leads: longest {x['longest_wait_ms']} ms (p99 {x['p99_ms']} ms, "
                         f"{x['writes']:,} writes, {x['waits_at_or_over_target']} at or over {x['target_ms']:.0f} ms"
                         + (f", {x['failed_writes']} failed" if x.get("failed_writes") else "")
                         + f"), migrate {x['migrate_s']} s, load average {x['loadavg']}")
    if "migrate_upgrade" in r:
        lines += [""] + render_upgrade(r["migrate_upgrade"])
    lines += ["", "targets (information, not assertions):"]
    for t in r["targets"]:
        lines.append(f"  {t['name']:<52}{t['value']:>10}  {'<=':>2} {t['limit']:<6} {verdict(t['met'])}")
    lines.append(f"total benchmark time {r['total_s']:.0f} s")
    return "\n".join(lines)


def render_debian(x: dict[str, Any]) -> list[str]:
    """The CALLs on Debian's PostgreSQL 15 as shipped (bench/debian.py)."""
    if "error" in x:
        return [f"  on Debian's PostgreSQL 15: n/a ({x['error']})"]
    st = x["settings"]
    call, queued, longest = x["call_100_median_s"], x["queued_median_ms"], x["queued_max_ms"]
    n = len(x["queued_ms"]["on"])
    lines = [
        f"  the same on Debian's PostgreSQL {x['version']} as shipped (jit={st['jit']}, jit_above_cost={st['jit_above_cost']}), "
        f"its own copy of the data set, median of {x['rounds']} round(s), JIT on and jit = off for the login alternating:",
        f"    one CALL at batch 100: JIT on {call['on']:.3f} s, jit = off {call['off']:.3f} s: "
        f"ratio {x['call_100_ratio_on_off']:.2f} (target <= {TARGET_JIT_RATIO})",
        f"    queued CALL right after it: JIT on median {queued['on']:.1f} ms, longest {longest['on']:.1f} ms of {n} "
        f"(target < {TARGET_QUEUED_MS:.0f} ms and < {TARGET_QUEUED_MAX_JIT_MS:.0f} ms); "
        f"jit = off median {queued['off']:.1f} ms, longest {longest['off']:.1f} ms",
    ]
    return lines + [f"    BROKEN: {b}" for b in x["broken"]]


def render_upgrade(u: dict[str, Any]) -> list[str]:
    """The upgrade during a run (bench/migrate_wait.py)."""
    head = "platform writes during an upgrade while a run works (one UPDATE of a random lead every 5 ms):"
    if "error" in u:
        return [head + f" n/a ({u['error']})"]
    m, run, c = u["migrate"], u["run"], u["checks"]
    totals = run["totals"] or {}

    def waits(w: dict[str, Any]) -> str:
        return (f"longest {w['longest_wait_ms']} ms (p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, {w['writes']:,} writes, "
                f"{w['waits_at_or_over_target']} at or over {u['target_ms']:.0f} ms, {w['failed_writes']} failed)")

    return [
        head,
        f"  {u['leads']:,} leads, {u['due_before']:,} due; `run --batch-size {u['batch_size']}` of {u['from']} "
        f"({u['previous_release_commit'][:12]}), then `migrate` to {u['to']} after {m['run_batches_before']} batches "
        f"({u['definitions_marked_changed']} definitions marked changed)",
        f"  migrate: exit {m['exit_code']} in {m['seconds']} s, {m['installed']} functions and views installed"
        + (f"; {m['stderr_last_line']}" if m["exit_code"] else ""),
        f"  run: exit {run['exit_code']} in {run['seconds']} s ({'still running' if run['outlasted_migrate'] else 'ended'} "
        f"when migrate ended), {totals.get('leads_de_enrolled', 0):,} de-enrolled, {totals.get('failed', 0)} clients failed"
        + (f"; {run['stderr_last_line']}" if run["exit_code"] else ""),
        f"  writes during the migrate: {waits(u['writes_during_migrate'])}",
        f"  writes during the run:     {waits(u['writes_during_run'])}",
        f"  after the run: {c['runs_left_running']} runs left running, {c['leads_logged_twice']} leads logged twice, "
        f"{c['leads_with_two_entries_of_ours']} with two history entries of ours for a campaign, {c['due_left']} due "
        f"({c['due_left_untouched_by_writer']} the writer never touched); load average {u['loadavg']}",
    ]
