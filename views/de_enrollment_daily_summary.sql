-- de_enrollment_daily_summary: runs per day and client, with outcomes, leads de-enrolled and durations (the SOP's weekly review)
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_run_death
--
-- `day` is DATE(run_at) in the session's time zone, as in the SOP's query. A run still
-- 'running' that is dead (de_enrollment_run_death) counts as failed, as in de_enrollment_health.
CREATE VIEW public.de_enrollment_daily_summary AS
WITH runs AS (
    SELECT r.run_at, r.client_id, r.leads_evaluated, r.leads_de_enrolled, r.leads_completed,
           r.leads_opted_out, r.duration_ms,
           CASE WHEN r.status = 'running' AND deenroll.de_enrollment_run_death(r.id) IS NOT NULL
                THEN 'failed' ELSE r.status END AS effective_status
      FROM public.de_enrollment_runs AS r
)
SELECT run_at::date                                               AS day,
       client_id,
       count(*)                                                   AS runs,
       count(*) FILTER (WHERE effective_status = 'success')       AS successful_runs,
       count(*) FILTER (WHERE effective_status = 'failed')        AS failed_runs,
       count(*) FILTER (WHERE effective_status = 'partial')       AS partial_runs,
       count(*) FILTER (WHERE effective_status = 'running')       AS running_runs,
       round(100.0 * count(*) FILTER (WHERE effective_status = 'success')
             / nullif(count(*) FILTER (WHERE effective_status <> 'running'), 0), 1) AS success_rate,
       coalesce(sum(leads_evaluated), 0)                          AS leads_evaluated,
       coalesce(sum(leads_de_enrolled), 0)                        AS leads_de_enrolled,
       coalesce(sum(leads_completed), 0)                          AS leads_completed,
       coalesce(sum(leads_opted_out), 0)                          AS leads_opted_out,
       avg(duration_ms)::integer                                  AS avg_duration_ms,
       max(duration_ms)                                           AS max_duration_ms
  FROM runs
 GROUP BY run_at::date, client_id;

COMMENT ON VIEW public.de_enrollment_daily_summary IS
    'Runs per day (DATE(run_at), session time zone) and client: how many, how they ended, leads de-enrolled, durations. The SOP''s weekly review, per client; filter on day.';
COMMENT ON COLUMN public.de_enrollment_daily_summary.day IS 'DATE(run_at) in the session''s time zone.';
COMMENT ON COLUMN public.de_enrollment_daily_summary.client_id IS 'The client.';
COMMENT ON COLUMN public.de_enrollment_daily_summary.runs IS 'Runs started that day.';
COMMENT ON COLUMN public.de_enrollment_daily_summary.successful_runs IS 'Of those, status success.';
COMMENT ON COLUMN public.de_enrollment_daily_summary.failed_runs IS 'Of those, status failed, or still running and dead (lease gone stale, session ended, server restarted; without a lease, past twice their budget).';
COMMENT ON COLUMN public.de_enrollment_daily_summary.partial_runs IS 'Of those, status partial (stopped by the runtime budget).';
COMMENT ON COLUMN public.de_enrollment_daily_summary.running_runs IS 'Of those, still running within their budget.';
COMMENT ON COLUMN public.de_enrollment_daily_summary.success_rate IS 'Percent of the finished runs that succeeded; null without finished runs.';
COMMENT ON COLUMN public.de_enrollment_daily_summary.leads_evaluated IS 'Sum of de_enrollment_runs.leads_evaluated.';
COMMENT ON COLUMN public.de_enrollment_daily_summary.leads_de_enrolled IS 'Sum of de_enrollment_runs.leads_de_enrolled.';
COMMENT ON COLUMN public.de_enrollment_daily_summary.leads_completed IS 'Of those, leads whose sequence was finished (outcome completed).';
COMMENT ON COLUMN public.de_enrollment_daily_summary.leads_opted_out IS 'Of those, active opted-out leads (outcome opted_out).';
COMMENT ON COLUMN public.de_enrollment_daily_summary.avg_duration_ms IS 'Average duration of the day''s runs, in milliseconds.';
COMMENT ON COLUMN public.de_enrollment_daily_summary.max_duration_ms IS 'Longest run of the day, in milliseconds.';
