-- finish_de_enrollment_run: close a running de_enrollment_runs row (success, partial or failed) and release the client's runner lock
-- requires: 0021_add_de_enrollment_monitoring
--
-- Sets status, finished_at, duration_ms (from run_at) and error_details (appended to
-- what is there), and returns the row. A run that is no longer 'running' (already
-- finished, or marked failed as dead) is returned unchanged. The session's advisory
-- lock on the client (see start_de_enrollment_run) is released when this session
-- holds it; a session that does not (the runner reporting a failure over a fresh
-- connection) leaves it alone.
-- The calling transaction commits synchronously whatever the session's
-- synchronous_commit: a run's end, and with it (WAL is sequential) every batch
-- committed before it, survives a server crash.
CREATE FUNCTION public.finish_de_enrollment_run(p_run_id uuid, p_status text, p_error_details text DEFAULT NULL)
RETURNS SETOF public.de_enrollment_runs
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_client uuid;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('success', 'partial', 'failed') THEN
        RAISE EXCEPTION 'a run finishes as success, partial or failed, not %', coalesce(p_status, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;

    PERFORM set_config('synchronous_commit', 'on', true);

    SELECT r.client_id INTO v_client FROM public.de_enrollment_runs AS r WHERE r.id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'de-enrollment run % does not exist', p_run_id USING ERRCODE = 'no_data_found';
    END IF;

    UPDATE public.de_enrollment_runs AS r
       SET status        = p_status,
           finished_at   = clock_timestamp(),
           duration_ms   = least(round(extract(epoch FROM clock_timestamp() - r.run_at) * 1000), 2147483647)::integer,
           error_details = nullif(concat_ws('; ', r.error_details, nullif(p_error_details, '')), '')
     WHERE r.id = p_run_id
       AND r.status = 'running';

    IF EXISTS (SELECT 1
                 FROM pg_locks AS k
                WHERE k.locktype = 'advisory'
                  AND k.pid = pg_backend_pid()
                  AND k.granted
                  AND k.objsubid = 2
                  AND k.classid = 1145392722::oid
                  AND k.objid = (hashtext(v_client::text)::bigint & 4294967295)::oid) THEN
        PERFORM pg_advisory_unlock(1145392722, hashtext(v_client::text));
    END IF;

    RETURN QUERY SELECT r.* FROM public.de_enrollment_runs AS r WHERE r.id = p_run_id;
END
$fn$;

COMMENT ON FUNCTION public.finish_de_enrollment_run(uuid, text, text) IS
    'Closes a running de_enrollment_runs row as success, partial or failed (finished_at, duration_ms, error_details) and releases the client''s runner lock held by this session; returns the row.';
