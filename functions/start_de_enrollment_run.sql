-- start_de_enrollment_run: take a client's lease and open its 'running' de_enrollment_runs row (NULL: another live run has the client)
-- requires: 0028_detect_dead_runs
-- after: de_enrollment_run_settings, de_enrollment_run_death
--
-- One run per client at a time, through a lease (deenroll.client_leases) rather than a lock
-- of the caller's session: nothing outlives this transaction, so it works the same through
-- a transaction-mode connection pooler. The lease lasts p_lease_ms (30 s unless given; 1 s
-- to 10 minutes) past each sign of life of its run: its start here, then its batches
-- (de_enrollment_heartbeat renews it). finish_de_enrollment_run gives it back. The lease's
-- length does not follow the run's budget: a runner that stalls past it is fenced (its next
-- batch is refused), so a longer lease would only make a dead run's client wait longer.
--
-- When the caller reaches this server session directly (p_login_pid, the backend pid the
-- server announced when the caller's connection logged in, is this session's pid), the
-- session is recorded with the lease (deenroll.lease_sessions). Behind a connection pooler
-- the announced pid is the pooler's own and nothing is recorded: the server session then
-- belongs to the pooler and says nothing about the runner.
--
-- The client's lease is taken over at once when its run is dead by de_enrollment_run_death
-- (the server restarted since its last sign of life, its recorded session has ended, or its
-- lease has expired: the only sign the database has behind a pooler). A live lease means the client is skipped: NULL is returned, nothing is written, and a
-- NOTICE names the run that holds it. The lease row is never waited for: a row another
-- transaction holds locked (its run renewing it, another run taking it over) is busy too.
-- Of two runs that find a dead lease at once, the one that locks its row takes it over.
--
-- Holding the lease proves that no other live run works on the client, so any 'running'
-- row of the client left over belongs to a runner that stopped before it could finish: it
-- is marked 'failed' here, with the runner's host and pid and how its death was known in
-- error_details, and a WARNING names it. A stalled runner that comes back finds its run
-- failed and its lease gone: its next batch is refused.
--
-- Commits synchronously (de_enrollment_run_settings): the start of a run is never lost to
-- a server crash.
CREATE FUNCTION public.start_de_enrollment_run(
    p_client_id      uuid,
    p_batch_size     integer,
    p_max_runtime_ms integer,
    p_runner_host    text DEFAULT NULL,
    p_runner_pid     integer DEFAULT NULL,
    p_login_pid      integer DEFAULT NULL,
    p_lease_ms       integer DEFAULT NULL
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
    v_held   record;
    v_found  boolean;
    v_why    text;
    v_dead   record;
    v_now    text := to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"');
BEGIN
    IF p_client_id IS NULL THEN
        RAISE EXCEPTION 'client id must not be null' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_ttl := make_interval(secs => deenroll.de_enrollment_run_options(p_batch_size, p_max_runtime_ms, p_lease_ms) / 1000.0);
    PERFORM public.de_enrollment_run_settings(true);

    SELECT l.run_id, l.runner_host, l.runner_pid, l.heartbeat_at, l.expires_at
      INTO v_held
      FROM deenroll.client_leases AS l
     WHERE l.client_id = p_client_id
       FOR UPDATE OF l SKIP LOCKED;
    v_found := FOUND;
    IF v_found THEN
        v_why := deenroll.de_enrollment_run_death(v_held.run_id);
        IF v_why IS NULL THEN
            RAISE NOTICE 'client % is being processed by run % (runner % pid %, last sign of life %, lease until %)',
                  p_client_id, v_held.run_id, coalesce(v_held.runner_host, '?'), coalesce(v_held.runner_pid::text, '?'),
                  to_char(v_held.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                  to_char(v_held.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"');
            RETURN NULL;
        END IF;
    ELSIF EXISTS (SELECT 1 FROM deenroll.client_leases AS l WHERE l.client_id = p_client_id) THEN
        RAISE NOTICE 'client % is being processed by another run (its lease is being renewed or taken over right now)',
              p_client_id;
        RETURN NULL;
    END IF;

    v_run_id := gen_random_uuid();
    IF v_found THEN
        UPDATE deenroll.client_leases AS l
           SET run_id       = v_run_id,
               runner_host  = p_runner_host,
               runner_pid   = p_runner_pid,
               ttl          = v_ttl,
               acquired_at  = clock_timestamp(),
               heartbeat_at = clock_timestamp(),
               expires_at   = clock_timestamp() + v_ttl
         WHERE l.client_id = p_client_id;
        DELETE FROM deenroll.lease_sessions AS s WHERE s.run_id = v_held.run_id;
    ELSE
        INSERT INTO deenroll.client_leases AS l
               (client_id, run_id, runner_host, runner_pid, ttl, acquired_at, heartbeat_at, expires_at)
        VALUES (p_client_id, v_run_id, p_runner_host, p_runner_pid, v_ttl,
                clock_timestamp(), clock_timestamp(), clock_timestamp() + v_ttl)
        ON CONFLICT (client_id) DO NOTHING
        RETURNING l.run_id INTO v_taken;
        IF v_taken IS NULL THEN
            RAISE NOTICE 'client % is being processed by another run (it took the lease a moment ago)', p_client_id;
            RETURN NULL;
        END IF;
    END IF;
    IF p_login_pid = pg_backend_pid() THEN
        INSERT INTO deenroll.lease_sessions (run_id, backend_pid, backend_start)
        SELECT v_run_id, pg_backend_pid(),
               (SELECT a.backend_start FROM pg_stat_get_activity(pg_backend_pid()) AS a);
    END IF;

    FOR v_dead IN
        UPDATE public.de_enrollment_runs AS r
           SET status        = 'failed',
               finished_at   = clock_timestamp(),
               error_details = concat_ws('; ', nullif(r.error_details, ''),
                   format('runner %s (pid %s) stopped before finishing this run: %s; '
                          'found by run %s at %s; batches committed before it stopped are kept',
                          coalesce(r.runner_host, 'unknown host'), coalesce(r.runner_pid::text, 'unknown'),
                          CASE WHEN r.id = v_held.run_id THEN v_why ELSE 'it held no lease' END,
                          v_run_id, v_now))
         WHERE r.client_id = p_client_id
           AND r.status = 'running'
        RETURNING r.id, r.runner_host, r.runner_pid, r.run_at, (r.id = v_held.run_id) AS had_lease
    LOOP
        RAISE WARNING 'run % of client % (runner % pid %, started %) had died: %; marked failed',
              v_dead.id, p_client_id, coalesce(v_dead.runner_host, '?'), coalesce(v_dead.runner_pid::text, '?'),
              to_char(v_dead.run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
              CASE WHEN v_dead.had_lease THEN v_why ELSE 'it held no lease' END;
    END LOOP;

    INSERT INTO public.de_enrollment_runs (id, client_id, status, batch_size, max_runtime_ms, runner_host, runner_pid)
    VALUES (v_run_id, p_client_id, 'running', p_batch_size, p_max_runtime_ms, p_runner_host, p_runner_pid);

    RETURN v_run_id;
END
$fn$;

COMMENT ON FUNCTION public.start_de_enrollment_run(uuid, integer, integer, text, integer, integer, integer) IS
    'Takes the client''s lease (deenroll.client_leases) and inserts a running de_enrollment_runs row; takes over the lease of a dead run (session gone, server restarted, lease expired) and marks its run failed; NULL when a live run holds the client.';
