-- de_enrollment_open_runs: the runs in progress that another session may help (their lease is live), oldest first
-- requires: 0028_detect_dead_runs
-- after: de_enrollment_run_death
--
-- run_de_enrollment helps these once it has no client of its own left to start: two pg_cron
-- jobs share the clients like the workers of `deenroll run` do. A run that is dead by
-- de_enrollment_run_death (lease expired, its recorded session ended, no sign of life since
-- the server started) is not listed: helping it would keep its lease alive, and the next
-- start takes its client over instead.
CREATE FUNCTION deenroll.de_enrollment_open_runs()
RETURNS TABLE (run_id uuid, client_id uuid, batch_size integer)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT l.run_id, l.client_id, r.batch_size
      FROM deenroll.client_leases AS l
      JOIN public.de_enrollment_runs AS r ON r.id = l.run_id AND r.status = 'running'
     WHERE deenroll.de_enrollment_run_death(l.run_id) IS NULL
     ORDER BY l.acquired_at, l.client_id
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_open_runs() IS
    'Runs in progress with a live lease (run id, client, batch size), oldest first: what an idle session may help.';
