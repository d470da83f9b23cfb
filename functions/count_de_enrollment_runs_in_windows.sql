-- count_de_enrollment_runs_in_windows: per time window (a pg_cron job's run), the de-enrollment runs started in it and what they did
-- requires: 0021_add_de_enrollment_monitoring
-- after: de_enrollment_runs_in_windows
--
-- `deenroll schedule status` shows, beside each run of the deenroll-run job, the runs of
-- de_enrollment_runs it made. pg_cron records when each job run started and ended and the
-- server process that ran it; de_enrollment_runs_in_windows says which runs each window
-- made. Only counts come out, so the runner role, which has no privilege on the table, may
-- call it.
CREATE FUNCTION public.count_de_enrollment_runs_in_windows(
    p_starts timestamptz[],
    p_ends   timestamptz[],
    p_pids   integer[]
)
RETURNS TABLE (
    window_index      integer,
    runs              bigint,
    success           bigint,
    partial           bigint,
    failed            bigint,
    running           bigint,
    leads_de_enrolled bigint
)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT w.i::integer,
           count(r.id),
           count(r.id) FILTER (WHERE r.status = 'success'),
           count(r.id) FILTER (WHERE r.status = 'partial'),
           count(r.id) FILTER (WHERE r.status = 'failed'),
           count(r.id) FILTER (WHERE r.status = 'running'),
           coalesce(sum(r.leads_de_enrolled), 0)::bigint
      FROM generate_series(1, cardinality(p_starts)) AS w (i)
      LEFT JOIN public.de_enrollment_runs_in_windows(p_starts, p_ends, p_pids) AS m ON m.window_index = w.i
      LEFT JOIN public.de_enrollment_runs AS r ON r.id = m.run_id
     GROUP BY w.i
     ORDER BY w.i
$fn$;

COMMENT ON FUNCTION public.count_de_enrollment_runs_in_windows(timestamptz[], timestamptz[], integer[]) IS
    'Per window (start, end or NULL for now, server pid or NULL), the de-enrollment runs started in it (by that pid when both are known): how many, by status, and the leads they de-enrolled. For `deenroll schedule status`.';
