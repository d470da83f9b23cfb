-- count_de_enrollment_held_in_windows: per time window (a pg_cron job's run), the leads its de-enrollment runs left held, by reason
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_runs_in_windows, de_enrollment_held_leads
--
-- `deenroll schedule status` shows, beside each run of the deenroll-run job, the leads the
-- runs it made hold now (the database refused to de-enroll them and they are unchanged
-- since), by reason, as `deenroll run` reports them. Only counts come out, so the runner
-- role, which has no privilege on the tables, may call it.
CREATE FUNCTION public.count_de_enrollment_held_in_windows(
    p_starts timestamptz[],
    p_ends   timestamptz[],
    p_pids   integer[]
)
RETURNS TABLE (window_index integer, reason text, leads bigint)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT m.window_index, h.reason, count(*)
      FROM public.de_enrollment_runs_in_windows(p_starts, p_ends, p_pids) AS m
      JOIN public.de_enrollment_held_leads() AS h ON h.run_id = m.run_id
     GROUP BY m.window_index, h.reason
     ORDER BY m.window_index, h.reason
$fn$;

COMMENT ON FUNCTION public.count_de_enrollment_held_in_windows(timestamptz[], timestamptz[], integer[]) IS
    'Per window (start, end or NULL for now, server pid or NULL), the leads still held by the de-enrollment runs started in it, by reason. For `deenroll schedule status`.';
