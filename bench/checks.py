"""What a run leaves behind, read from the database: the invariants every side must meet, and a
fingerprint of the end state that is equal for equal work."""

from __future__ import annotations

from typing import Any

import psycopg


def invariants(dsn: str) -> dict[str, Any]:
    """What must hold after a run, whoever made it: nothing due, counters exact, one log row per lead."""
    with psycopg.connect(dsn) as conn:
        due = conn.execute("SELECT coalesce(sum(completed + opted_out), 0)::bigint FROM count_leads_for_de_enrollment(NULL)").fetchone()[0]
        drift = conn.execute("SELECT count(*) FROM campaign_stats_drift").fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM campaign_stats_delta").fetchone()[0]
        de_enrolled = conn.execute("SELECT count(*) FROM leads WHERE campaign_history <> '[]'::jsonb").fetchone()[0]
        logged = conn.execute("SELECT count(*) FROM de_enrollment_lead_log").fetchone()[0]
        still_active = conn.execute("SELECT count(*) FROM leads WHERE is_active AND campaign_history <> '[]'::jsonb").fetchone()[0]
        not_success = conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE status <> 'success'").fetchone()[0]
    ok = due == 0 and drift == 0 and pending == 0 and de_enrolled == logged and still_active == 0 and not_success == 0
    return {"ok": ok, "due_left": due, "drifting_campaigns": drift, "pending_deltas": pending,
            "de_enrolled_leads": de_enrolled, "log_rows": logged, "de_enrolled_but_active": still_active,
            "runs_not_success": not_success}


def end_state(dsn: str) -> dict[str, Any]:
    """The data a run leaves, without its timestamps and run ids: equal for equal work."""
    with psycopg.connect(dsn) as conn:
        leads = conn.execute(
            """SELECT count(*) FILTER (WHERE campaign_history <> '[]'::jsonb),
                      count(*) FILTER (WHERE campaign_history -> -1 ->> 'outcome' = 'completed'),
                      count(*) FILTER (WHERE campaign_history -> -1 ->> 'outcome' = 'opted_out'),
                      md5(string_agg(concat_ws('|', id, is_active, opted_out, booked, current_message_position,
                                               CASE WHEN campaign_history = '[]'::jsonb THEN completed_at::text
                                                    ELSE (completed_at IS NULL)::text END,
                                               jsonb_array_length(campaign_history),
                                               (campaign_history -> -1) - 'completed_at' - 'de_enrolled_at' - 'run_id'),
                                     ',' ORDER BY id))
                 FROM leads""").fetchone()
        log = conn.execute(
            """SELECT count(*), count(*) FILTER (WHERE outcome = 'completed'), count(*) FILTER (WHERE outcome = 'opted_out'),
                      md5(string_agg(concat_ws('|', lead_id, client_id, campaign_id, action, outcome,
                                               messages_received, total_messages, error_message),
                                     ',' ORDER BY lead_id, campaign_id))
                 FROM de_enrollment_lead_log""").fetchone()
        counters = conn.execute(
            """SELECT sum(active_leads_count), sum(completed_leads_count), sum(opted_out_count), sum(booked_count),
                      md5(string_agg(concat_ws('|', id, is_active, active_leads_count, completed_leads_count,
                                               opted_out_count, booked_count), ',' ORDER BY id))
                 FROM campaigns""").fetchone()
        runs = conn.execute(
            """SELECT count(*),
                      md5(string_agg(concat_ws('|', client_id, status, leads_evaluated, leads_de_enrolled,
                                               leads_completed, leads_opted_out), ',' ORDER BY client_id))
                 FROM de_enrollment_runs""").fetchone()
    return {
        "de_enrolled": leads[0], "completed": leads[1], "opted_out": leads[2], "leads_md5": leads[3],
        "log_rows": log[0], "log_completed": log[1], "log_opted_out": log[2], "log_md5": log[3],
        "active_leads_count": int(counters[0] or 0), "completed_leads_count": int(counters[1] or 0),
        "opted_out_count": int(counters[2] or 0), "booked_count": int(counters[3] or 0), "counters_md5": counters[4],
        "runs": runs[0], "run_totals_md5": runs[1],
    }


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{k}: {a[k]} vs {b.get(k)}" for k in a if a[k] != b.get(k)]
