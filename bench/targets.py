"""The benchmark's targets and how each figure is judged against its own (information, not an
assertion)."""

from __future__ import annotations

from typing import Any

TARGET_RATIO_100 = 1.5  # one worker
TARGET_RATIO_100_W2 = 1.0  # two workers
TARGET_CAMPAIGN_RATIO = 1.3
TARGET_MIGRATE_WAIT_MS = 200.0
TARGET_RATIO_1000 = 1.3
TARGET_IDLE_RATIO = 1.5
TARGET_RSS_MB = 100.0
TARGET_CALL_RATIO_100 = 1.2  # one CALL, the way pg_cron drives the run
TARGET_PREVIOUS_RATIO = 1.0  # deenroll run / the previous release's, same data, same rounds
TARGET_QUEUED_MS = 50.0
TARGET_QUEUED_MAX_JIT_MS = 100.0  # the longest queued CALL on a server with JIT on (its median: TARGET_QUEUED_MS)
TARGET_JIT_RATIO = 1.1  # one CALL at batch 100 with the server's JIT on / with jit = off: the same, within the noise


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    ms = {m["name"]: m for m in r["measurements"]}
    out = []
    for bs, limit in ((100, TARGET_RATIO_100), (1000, TARGET_RATIO_1000)):
        m = ms[f"deenroll run --batch-size {bs}"]
        out.append({"name": f"ratio run/lower bound at batch size {bs}", "value": f"{m['ratio']:.2f}",
                    "limit": limit, "met": m["ratio"] <= limit})
    if r.get("in_database"):
        x = r["in_database"]
        out.append({"name": "ratio one CALL/lower bound at batch size 100", "value": f"{x['call_100_ratio']:.2f}",
                    "limit": TARGET_CALL_RATIO_100, "met": x["call_100_ratio"] <= TARGET_CALL_RATIO_100})
        out.append({"name": "queued CALL with nothing to do, longest (ms)", "value": f"{x['queued_max_ms']:.1f}",
                    "limit": TARGET_QUEUED_MS, "met": x["queued_max_ms"] < TARGET_QUEUED_MS})
    if r.get("debian_pg15") and "error" not in r["debian_pg15"]:
        x = r["debian_pg15"]
        out.append({"name": "queued CALL on PG 15 with JIT on, median (ms)", "value": f"{x['queued_median_ms']['on']:.1f}",
                    "limit": TARGET_QUEUED_MS, "met": x["queued_median_ms"]["on"] < TARGET_QUEUED_MS})
        out.append({"name": "queued CALL on PG 15 with JIT on, longest (ms)", "value": f"{x['queued_max_ms']['on']:.1f}",
                    "limit": TARGET_QUEUED_MAX_JIT_MS, "met": x["queued_max_ms"]["on"] < TARGET_QUEUED_MAX_JIT_MS})
        out.append({"name": "one CALL at batch 100 on PG 15, JIT on / jit off", "value": f"{x['call_100_ratio_on_off']:.2f}",
                    "limit": TARGET_JIT_RATIO, "met": x["call_100_ratio_on_off"] <= TARGET_JIT_RATIO and not x["broken"]})
    if r.get("previous_release") and "error" not in r["previous_release"]:
        v = r["previous_release"]["ratio"]
        out.append({"name": "ratio run/previous release's run, batch size 100", "value": f"{v:.2f}",
                    "limit": TARGET_PREVIOUS_RATIO, "met": v <= TARGET_PREVIOUS_RATIO})
        if "w2_ratio" in r["previous_release"]:
            v = r["previous_release"]["w2_ratio"]
            out.append({"name": "ratio run/previous release's run, 2 workers", "value": f"{v:.2f}",
                        "limit": TARGET_PREVIOUS_RATIO, "met": v <= TARGET_PREVIOUS_RATIO})
    if r.get("workers"):
        v = r["workers"]["w2_ratio"]
        out.append({"name": "ratio run/lower bound at batch size 100, 2 workers", "value": f"{v:.2f}",
                    "limit": TARGET_RATIO_100_W2, "met": v <= TARGET_RATIO_100_W2})
    if r.get("campaigns"):
        c = r["campaigns"]
        per = c["base_campaigns_per_client"] + c["extra_campaigns_per_client"]
        for what, key in (("run", "run_runner_ratio"), ("idle run", "idle_runner_ratio")):
            out.append({"name": f"{what} {per:,} / {c['base_campaigns_per_client']} campaigns per client (runner ms)",
                        "value": f"{c[key]:.2f}", "limit": TARGET_CAMPAIGN_RATIO, "met": c[key] <= TARGET_CAMPAIGN_RATIO})
    for x in r.get("migrate_wait") or []:
        out.append({"name": f"longest write wait, migrate at {x['leads']:,} leads (ms)", "value": f"{x['longest_wait_ms']}",
                    "limit": TARGET_MIGRATE_WAIT_MS,
                    "met": x["longest_wait_ms"] is not None and x["longest_wait_ms"] < TARGET_MIGRATE_WAIT_MS
                           and not x.get("failed_writes")})
    if r.get("migrate_upgrade") and "error" not in r["migrate_upgrade"]:
        u = r["migrate_upgrade"]
        w = u["writes_during_migrate"]
        out.append({"name": f"longest write wait, upgrade in a run, {u['leads']:,} (ms)",
                    "value": f"{w['longest_wait_ms']}", "limit": TARGET_MIGRATE_WAIT_MS,
                    "met": w["longest_wait_ms"] is not None and w["longest_wait_ms"] < TARGET_MIGRATE_WAIT_MS
                           and not w["failed_writes"]})
        out.append({"name": "exit code of that upgrade's migrate", "value": str(u["migrate"]["exit_code"]),
                    "limit": 0, "met": u["migrate"]["exit_code"] == 0})
    if r.get("idle"):
        v = r["idle"]["wall_ratio"]
        out.append({"name": f"idle run {r['idle']['large']['leads']:,} / {r['idle']['small']['leads']:,} leads (wall)",
                    "value": f"{v:.2f}", "limit": TARGET_IDLE_RATIO, "met": v <= TARGET_IDLE_RATIO})
    rss = max(m["peak_rss_mb"] for m in r["measurements"]
              if m["peak_rss_mb"] is not None and not m["name"].startswith("previous release"))
    out.append({"name": "runner peak RSS (MB)", "value": f"{rss:.1f}", "limit": TARGET_RSS_MB, "met": rss <= TARGET_RSS_MB})
    return out
