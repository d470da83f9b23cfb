-- finish_de_enrollment_run: close a running de_enrollment_runs row (success, partial or failed) and give back the client's lease
-- requires: 0028_detect_dead_runs
-- after: de_enrollment_run_settings, de_enrollment_unmark_campaigns
--
-- Sets status, finished_at, duration_ms (from run_at) and error_details (appended to
-- what is there), and returns the row. A run that is no longer 'running' (already
-- finished, or marked failed as dead) is returned unchanged. The run's lease on its client
-- (see start_de_enrollment_run) is deleted, whichever connection calls this: the runner
-- reporting a failure over a fresh connection, or through a connection pooler, gives it
-- back all the same, with its recorded server session (deenroll.lease_sessions). A lease
-- another run has taken over is not this run's and stays. The client's marks on campaigns
-- that hold no finished lead of it any more go too (de_enrollment_unmark_campaigns), so that
-- a queued run after this one does not look into them again. It commits synchronously
-- (de_enrollment_run_settings): a run's end, and with it (WAL is sequential) every batch
-- committed before it, survives a server crash.
CREATE FUNCTION public.finish_de_enrollment_run(p_run_id uuid, p_status text, p_error_details text DEFAULT NULL)
RETURNS SETOF public.de_enrollment_runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('success', 'partial', 'failed') THEN
        RAISE EXCEPTION 'a run finishes as success, partial or failed, not %', coalesce(p_status, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM public.de_enrollment_run_settings(true);

    IF NOT EXISTS (SELECT 1 FROM public.de_enrollment_runs AS r WHERE r.id = p_run_id) THEN
        RAISE EXCEPTION 'de-enrollment run % does not exist', p_run_id USING ERRCODE = 'no_data_found';
    END IF;

    UPDATE public.de_enrollment_runs AS r
       SET status        = p_status,
           finished_at   = clock_timestamp(),
           duration_ms   = least(round(extract(epoch FROM clock_timestamp() - r.run_at) * 1000), 2147483647)::integer,
           error_details = nullif(concat_ws('; ', r.error_details, nullif(p_error_details, '')), '')
     WHERE r.id = p_run_id
       AND r.status = 'running';

    -- the campaigns the run's last batch emptied: their marks go now, not at the next claim
    PERFORM deenroll.de_enrollment_unmark_campaigns(r.client_id, NULL)
       FROM public.de_enrollment_runs AS r
      WHERE r.id = p_run_id;

    DELETE FROM deenroll.client_leases AS l WHERE l.run_id = p_run_id;
    DELETE FROM deenroll.lease_sessions AS s WHERE s.run_id = p_run_id;

    RETURN QUERY SELECT r.* FROM public.de_enrollment_runs AS r WHERE r.id = p_run_id;
END
$fn$;

COMMENT ON FUNCTION public.finish_de_enrollment_run(uuid, text, text) IS
    'Closes a running de_enrollment_runs row as success, partial or failed (finished_at, duration_ms, error_details) and deletes the run''s lease on its client; returns the row.';
