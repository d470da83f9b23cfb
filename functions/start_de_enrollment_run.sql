-- start_de_enrollment_run: take a client's runner lock and open its 'running' de_enrollment_runs row (NULL: another runner has the client)
-- requires: 0021_add_de_enrollment_monitoring
--
-- One runner per client at a time: the caller's session takes the advisory lock
-- pg_try_advisory_lock(1145392722, hashtext(client_id::text)) (1145392722 is 'DENR'
-- in ASCII, the key space of deenroll). It is a session lock: it survives the
-- commit of this transaction and is held until finish_de_enrollment_run() or until
-- the session ends, so a runner that dies (even by SIGKILL) releases it with its
-- connection. When another session holds it, nothing is written and NULL is
-- returned: the caller skips the client instead of queueing behind it.
--
-- Holding the lock proves that no other runner is working on the client, so any
-- 'running' row of the client left over belongs to a runner that died before it
-- could finish: it is marked 'failed' here, with the runner's host and pid in
-- error_details, and a WARNING names it. A dead run is visible, never silently lost.
--
-- The transaction that calls this commits synchronously whatever the session's
-- synchronous_commit (the runner turns it off for its batches, see runner.py): the
-- start of a run is never lost to a server crash.
CREATE FUNCTION public.start_de_enrollment_run(
    p_client_id      uuid,
    p_batch_size     integer,
    p_max_runtime_ms integer,
    p_runner_host    text DEFAULT NULL,
    p_runner_pid     integer DEFAULT NULL
)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_run_id uuid;
    v_dead   record;
BEGIN
    IF p_client_id IS NULL THEN
        RAISE EXCEPTION 'client id must not be null' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'batch size must be a positive integer, got %', p_batch_size
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_max_runtime_ms IS NULL OR p_max_runtime_ms < 1 THEN
        RAISE EXCEPTION 'max runtime must be at least 1 ms, got %', p_max_runtime_ms
              USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF NOT pg_try_advisory_lock(1145392722, hashtext(p_client_id::text)) THEN
        RETURN NULL;
    END IF;

    PERFORM set_config('synchronous_commit', 'on', true);
    v_run_id := gen_random_uuid();

    FOR v_dead IN
        UPDATE public.de_enrollment_runs AS r
           SET status        = 'failed',
               finished_at   = clock_timestamp(),
               error_details = concat_ws('; ', nullif(r.error_details, ''),
                   format('runner %s (pid %s) stopped before finishing this run; '
                          'found by run %s at %s; batches committed before it stopped are kept',
                          coalesce(r.runner_host, 'unknown host'), coalesce(r.runner_pid::text, 'unknown'),
                          v_run_id, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')))
         WHERE r.client_id = p_client_id
           AND r.status = 'running'
        RETURNING r.id, r.runner_host, r.runner_pid, r.run_at
    LOOP
        RAISE WARNING 'run % of client % (runner % pid %, started %) had died; marked failed',
              v_dead.id, p_client_id, coalesce(v_dead.runner_host, '?'), coalesce(v_dead.runner_pid::text, '?'),
              v_dead.run_at;
    END LOOP;

    INSERT INTO public.de_enrollment_runs (id, client_id, status, batch_size, max_runtime_ms, runner_host, runner_pid)
    VALUES (v_run_id, p_client_id, 'running', p_batch_size, p_max_runtime_ms, p_runner_host, p_runner_pid);

    RETURN v_run_id;
END
$fn$;

COMMENT ON FUNCTION public.start_de_enrollment_run(uuid, integer, integer, text, integer) IS
    'Takes the client''s runner advisory lock (session) and inserts a running de_enrollment_runs row; marks runs left running by dead runners failed; NULL when another runner holds the client.';
