-- start_de_enrollment_run: take a client's lease and open its 'running' de_enrollment_runs row (NULL: another live run has the client)
-- requires: 0025_add_runner_leases
--
-- One run per client at a time, through a lease (deenroll.client_leases) rather than a lock
-- of the caller's session: nothing outlives this transaction, so it works the same through
-- a transaction-mode connection pooler. The lease lasts the run's budget (p_max_runtime_ms,
-- at least 5 s, at most 10 minutes) past each sign of life: its start here, then every
-- batch (de_enrollment_heartbeat renews it). finish_de_enrollment_run gives it back.
--
-- When a live run holds the client's lease (not expired), nothing is written and NULL is
-- returned: the caller skips the client instead of queueing behind it. A lease whose
-- expires_at has passed belongs to a runner that died (or stalled longer than its lease):
-- it is taken over by one INSERT ... ON CONFLICT DO UPDATE ... WHERE expired, so of two
-- runs that find it expired at once exactly one gets it. The lease row is never waited for:
-- a row another transaction holds locked is treated as busy.
--
-- Holding the lease proves that no other live run works on the client, so any 'running'
-- row of the client left over belongs to a runner that stopped before it could finish: it
-- is marked 'failed' here, with the runner's host and pid in error_details, and a WARNING
-- names it. A dead run is visible, never silently lost. A stalled runner that comes back
-- finds its run failed and its lease gone: its next batch is refused.
--
-- lock_timeout is the lease's length for this transaction (a lock wait longer than that is
-- an error, not a hang), and it commits synchronously: the start of a run is never lost to
-- a server crash.
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
    v_ttl    interval;
    v_taken  uuid;
    v_expires timestamptz;
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

    v_ttl := make_interval(secs => least(greatest(p_max_runtime_ms, 5000), 600000) / 1000.0);
    PERFORM set_config('lock_timeout', (extract(epoch FROM v_ttl) * 1000)::bigint::text || 'ms', true);
    PERFORM set_config('synchronous_commit', 'on', true);

    -- Never wait for the lease row: a live lease means skip; a row another transaction holds
    -- (its run renewing it in a batch, or another run taking it over) means skip too.
    SELECT l.expires_at INTO v_expires
      FROM deenroll.client_leases AS l
     WHERE l.client_id = p_client_id
       FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        IF v_expires >= clock_timestamp() THEN
            RETURN NULL;
        END IF;
    ELSIF EXISTS (SELECT 1 FROM deenroll.client_leases AS l WHERE l.client_id = p_client_id) THEN
        RETURN NULL;
    END IF;

    v_run_id := gen_random_uuid();
    INSERT INTO deenroll.client_leases AS l
           (client_id, run_id, runner_host, runner_pid, ttl, acquired_at, heartbeat_at, expires_at)
    VALUES (p_client_id, v_run_id, p_runner_host, p_runner_pid, v_ttl,
            clock_timestamp(), clock_timestamp(), clock_timestamp() + v_ttl)
    ON CONFLICT (client_id) DO UPDATE
       SET run_id       = excluded.run_id,
           runner_host  = excluded.runner_host,
           runner_pid   = excluded.runner_pid,
           ttl          = excluded.ttl,
           acquired_at  = excluded.acquired_at,
           heartbeat_at = excluded.heartbeat_at,
           expires_at   = excluded.expires_at
     WHERE l.expires_at < clock_timestamp()
    RETURNING l.run_id INTO v_taken;
    IF v_taken IS NULL THEN
        RETURN NULL;  -- renewed or taken by another run meanwhile
    END IF;

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
    'Takes the client''s lease (deenroll.client_leases) and inserts a running de_enrollment_runs row; takes over an expired lease and marks runs left running failed; NULL when a live run holds the client.';
