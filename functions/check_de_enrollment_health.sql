-- check_de_enrollment_health: raises an error naming the clients in error by de_enrollment_health (the deenroll-health job of pg_cron), else returns a one-line summary
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_health
--
-- pg_cron records a job as failed, with the error's message, when its command raises; the
-- Supabase dashboard and cron.job_run_details show that message. So the hourly
-- `SELECT public.check_de_enrollment_health()` fails exactly when `deenroll health-check`
-- would exit 2: a client whose status is 'error' (the SOP's thresholds, judged by the view),
-- or row-level security hiding rows from deenroll's functions. The message names up to ten
-- clients with their reasons and says how many more there are. Warnings do not fail the job.
-- Runs with its caller's rights: it only reads the view (SELECT granted to deenroll_runner)
-- and de_enrollment_rls_blind_spots().
CREATE FUNCTION public.check_de_enrollment_health()
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_clients  integer;
    v_warnings integer;
    v_errors   text[];
    v_blind    text[];
    v_shown    constant integer := 10;
BEGIN
    SELECT count(*),
           count(*) FILTER (WHERE h.status = 'warning'),
           coalesce(array_agg(pg_catalog.format('%s: %s', h.client_id,
                                                pg_catalog.array_to_string(h.status_reasons, ', '))
                              ORDER BY h.client_id) FILTER (WHERE h.status = 'error'), '{}')
      INTO v_clients, v_warnings, v_errors
      FROM public.de_enrollment_health AS h;
    SELECT coalesce(array_agg(b.reason ORDER BY b.table_name), '{}')
      INTO v_blind
      FROM public.de_enrollment_rls_blind_spots() AS b;

    IF pg_catalog.cardinality(v_errors) > 0 OR pg_catalog.cardinality(v_blind) > 0 THEN
        RAISE EXCEPTION 'deenroll health: % client(s) in error: %',
            pg_catalog.cardinality(v_errors),
            pg_catalog.array_to_string(v_blind || v_errors[1:v_shown], '; ')
            || CASE WHEN pg_catalog.cardinality(v_errors) > v_shown
                    THEN pg_catalog.format('; and %s more (view de_enrollment_health)',
                                           pg_catalog.cardinality(v_errors) - v_shown)
                    ELSE '' END
            USING ERRCODE = 'P0001',
                  HINT = '`deenroll health-check` or SELECT * FROM de_enrollment_health WHERE status = ''error'' shows them';
    END IF;
    RETURN pg_catalog.format('deenroll health: %s client(s), none in error, %s warning(s)', v_clients, v_warnings);
END;
$fn$;

COMMENT ON FUNCTION public.check_de_enrollment_health() IS
    'Raises an error naming the clients whose status in de_enrollment_health is error (and any row-level security hiding rows from deenroll), so that a pg_cron job calling it is recorded as failed with that message; otherwise returns a one-line summary.';
