-- de_enrollment_runs_in_windows: which de-enrollment runs each time window (a pg_cron job's run) started
-- requires: 0021_add_de_enrollment_monitoring
--
-- The one rule that ties a run of de_enrollment_runs to the pg_cron job run that made it:
-- the run started inside the window (an open window ends now) and, when both are known, was
-- started by the window's server process. count_de_enrollment_runs_in_windows and
-- count_de_enrollment_held_in_windows read it; no role is granted it.
CREATE FUNCTION public.de_enrollment_runs_in_windows(
    p_starts timestamptz[],
    p_ends   timestamptz[],
    p_pids   integer[]
)
RETURNS TABLE (window_index integer, run_id uuid)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT w.i::integer, r.id
      FROM unnest(p_starts, p_ends, p_pids) WITH ORDINALITY AS w (start_time, end_time, pid, i)
      JOIN public.de_enrollment_runs AS r
        ON r.run_at >= w.start_time AND r.run_at <= coalesce(w.end_time, now())
       AND (r.runner_pid IS NULL OR w.pid IS NULL OR r.runner_pid = w.pid)
$fn$;

COMMENT ON FUNCTION public.de_enrollment_runs_in_windows(timestamptz[], timestamptz[], integer[]) IS
    'Per window (start, end or NULL for now, server pid or NULL), the de-enrollment runs started in it (by that pid when both are known).';
