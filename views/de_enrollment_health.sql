-- de_enrollment_health: one row per client: its runs of the last 24 hours, stuck leads and an ok/warning/error status by the SOP's thresholds
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_stuck_leads, de_enrollment_run_death
--
-- Clients: every client_id of campaigns and of de_enrollment_runs.
-- Thresholds (the SOP's "Key Metrics" table):
--   error:   hours_since_success > 2 (clients a run processes: an active campaign,
--            or stuck leads, as de_enrollment_clients() decides)
--            stuck_leads > 500
--   warning: success_rate_24h < 95, failed_runs_24h > 5, stuck_leads > 100,
--            avg_duration_ms_24h > 240000 (4 min)
-- A run still 'running' that is dead (de_enrollment_run_death) counts as failed. The due
-- leads of a client whose run is in progress and alive are not stuck: that run is taking them
-- (held leads are: no run takes them). A client that never had a successful run counts its hours
-- from when it was first seen (its oldest campaign or first run): a new client has
-- the same 2 hours of grace as everyone, then is an error like any client without
-- a success, and the SOP's `hours_since_success > 2` query lists it.
CREATE VIEW public.de_enrollment_health AS
WITH clients AS (
    SELECT s.client_id,
           min(s.seen_at)             AS first_seen_at,
           coalesce(bool_or(s.active), false) AS has_active_campaign
      FROM (SELECT client_id, created_at AS seen_at, is_active AS active FROM public.campaigns
            UNION ALL
            SELECT client_id, min(run_at), NULL FROM public.de_enrollment_runs GROUP BY client_id) AS s
     GROUP BY s.client_id
),
runs_24h AS (
    SELECT r.client_id,
           CASE WHEN r.status = 'running' AND deenroll.de_enrollment_run_death(r.id) IS NOT NULL
                THEN 'failed' ELSE r.status END AS status,
           r.leads_de_enrolled,
           r.duration_ms
      FROM public.de_enrollment_runs AS r
     WHERE r.run_at > now() - interval '24 hours'
),
window_stats AS (
    SELECT client_id,
           count(*)                                        AS runs,
           count(*) FILTER (WHERE status = 'success')      AS successful,
           count(*) FILTER (WHERE status = 'failed')       AS failed,
           count(*) FILTER (WHERE status = 'partial')      AS partial,
           count(*) FILTER (WHERE status <> 'running')     AS finished,
           coalesce(sum(leads_de_enrolled), 0)             AS de_enrolled,
           avg(duration_ms)                                AS avg_duration_ms
      FROM runs_24h
     GROUP BY client_id
),
last_runs AS (
    SELECT client_id,
           max(run_at)                                     AS last_run_at,
           max(run_at) FILTER (WHERE status = 'success')   AS last_success_at
      FROM public.de_enrollment_runs
     GROUP BY client_id
),
in_progress AS (
    SELECT DISTINCT r.client_id
      FROM public.de_enrollment_runs AS r
     WHERE r.status = 'running'
       AND deenroll.de_enrollment_run_death(r.id) IS NULL
),
stuck AS (
    SELECT s.client_id, count(*) AS stuck_leads
      FROM public.de_enrollment_stuck_leads AS s
     WHERE s.held_reason IS NOT NULL
        OR NOT EXISTS (SELECT 1 FROM in_progress AS p WHERE p.client_id = s.client_id)
     GROUP BY s.client_id
),
metrics AS (
    SELECT c.client_id,
           c.has_active_campaign,
           coalesce(w.runs, 0)                                          AS runs_24h,
           coalesce(w.successful, 0)                                    AS successful_runs_24h,
           coalesce(w.failed, 0)                                        AS failed_runs_24h,
           coalesce(w.partial, 0)                                       AS partial_runs_24h,
           round(100.0 * w.successful / nullif(w.finished, 0), 1)       AS success_rate_24h,
           lr.last_run_at,
           lr.last_success_at,
           round((extract(epoch FROM now() - coalesce(lr.last_success_at, c.first_seen_at)) / 3600)::numeric, 2)
                                                                        AS hours_since_success,
           coalesce(w.de_enrolled, 0)                                   AS leads_de_enrolled_24h,
           round(w.avg_duration_ms)::integer                            AS avg_duration_ms_24h,
           coalesce(s.stuck_leads, 0)                                   AS stuck_leads
      FROM clients AS c
      LEFT JOIN window_stats AS w USING (client_id)
      LEFT JOIN last_runs AS lr USING (client_id)
      LEFT JOIN stuck AS s USING (client_id)
),
judged AS (
    SELECT m.*,
           array_remove(ARRAY[
               CASE WHEN (m.has_active_campaign OR m.stuck_leads > 0) AND m.hours_since_success > 2 THEN
                    CASE WHEN m.last_success_at IS NULL
                         THEN format('no successful run ever (client seen %s h ago; limit 2 h)', round(m.hours_since_success, 1))
                         ELSE format('no successful run for %s h (limit 2 h)', round(m.hours_since_success, 1)) END
               END,
               CASE WHEN m.stuck_leads > 500 THEN format('%s stuck leads (limit 500)', m.stuck_leads) END
           ], NULL) AS errors,
           array_remove(ARRAY[
               CASE WHEN m.failed_runs_24h > 5 THEN format('%s failed runs in 24 h (limit 5)', m.failed_runs_24h) END,
               CASE WHEN m.success_rate_24h < 95 THEN format('success rate %s%% in 24 h (minimum 95%%)', m.success_rate_24h) END,
               CASE WHEN m.stuck_leads > 100 AND m.stuck_leads <= 500 THEN format('%s stuck leads (limit 100)', m.stuck_leads) END,
               CASE WHEN m.avg_duration_ms_24h > 240000 THEN format('average run %s s in 24 h (limit 240 s)', round(m.avg_duration_ms_24h / 1000.0, 1)) END
           ], NULL) AS warnings
      FROM metrics AS m
)
SELECT client_id,
       runs_24h,
       successful_runs_24h,
       failed_runs_24h,
       partial_runs_24h,
       success_rate_24h,
       last_run_at,
       last_success_at,
       hours_since_success,
       leads_de_enrolled_24h,
       avg_duration_ms_24h,
       stuck_leads,
       CASE WHEN cardinality(errors) > 0 THEN 'error'
            WHEN cardinality(warnings) > 0 THEN 'warning'
            ELSE 'ok' END AS status,
       errors || warnings AS status_reasons
  FROM judged;

COMMENT ON VIEW public.de_enrollment_health IS
    'One row per client (from campaigns and runs): runs of the last 24 hours, stuck leads, and status ok/warning/error by the SOP''s thresholds. Error: no successful run for more than 2 hours (clients with an active campaign or stuck leads; a client that never succeeded counts from when it was first seen), or more than 500 stuck leads. Warning: success rate under 95%, more than 5 failed runs, more than 100 stuck leads, or an average run over 4 minutes. A run still running that died counts as failed; due leads of a client whose run is in progress and alive are not stuck.';
COMMENT ON COLUMN public.de_enrollment_health.client_id IS 'The client.';
COMMENT ON COLUMN public.de_enrollment_health.runs_24h IS 'Runs started in the last 24 hours, whatever their status.';
COMMENT ON COLUMN public.de_enrollment_health.successful_runs_24h IS 'Of those, runs with status success.';
COMMENT ON COLUMN public.de_enrollment_health.failed_runs_24h IS 'Of those, runs with status failed, plus runs still running that died (lease gone stale, session ended, server restarted; without a lease, past twice their budget).';
COMMENT ON COLUMN public.de_enrollment_health.partial_runs_24h IS 'Of those, runs with status partial (stopped by the runtime budget).';
COMMENT ON COLUMN public.de_enrollment_health.success_rate_24h IS 'Percent of the finished runs of the last 24 hours that succeeded (partial counts as not successful); null without finished runs.';
COMMENT ON COLUMN public.de_enrollment_health.last_run_at IS 'Start of the client''s latest run, any status, any age.';
COMMENT ON COLUMN public.de_enrollment_health.last_success_at IS 'Start of the client''s latest successful run, any age; null if it never had one.';
COMMENT ON COLUMN public.de_enrollment_health.hours_since_success IS 'Hours since last_success_at; for a client that never succeeded, hours since it was first seen (oldest campaign or first run).';
COMMENT ON COLUMN public.de_enrollment_health.leads_de_enrolled_24h IS 'Leads de-enrolled by the runs of the last 24 hours.';
COMMENT ON COLUMN public.de_enrollment_health.avg_duration_ms_24h IS 'Average duration of the finished runs of the last 24 hours, in milliseconds.';
COMMENT ON COLUMN public.de_enrollment_health.stuck_leads IS 'The client''s rows in de_enrollment_stuck_leads now; while a run of the client is in progress and alive, only its held leads (the run is taking the others).';
COMMENT ON COLUMN public.de_enrollment_health.status IS 'ok, warning or error by the thresholds in the view''s comment.';
COMMENT ON COLUMN public.de_enrollment_health.status_reasons IS 'Why the status is not ok, errors first; empty when ok.';
