-- de_enrollment_take_client: start a client's run for one call of the run's procedure, unless another call of the same run took the client
-- requires: 0029_share_runs_between_calls
-- after: de_enrollment_open_runs, start_de_enrollment_run
--
-- Without p_group_id (a pg_cron job, a CALL by hand) this is start_de_enrollment_run: the
-- client's lease and its 'running' row, or NULL when another live run holds it.
-- With p_group_id (one of the calls of `deenroll run --workers N`), each client goes to one
-- call of that run: the first to record it here starts its run (or finds it held elsewhere,
-- and reports that). Another call of the same run passes it over quietly (sibling = true):
-- the call that took it reports it. Except when that call's run is still 'running' but dead
-- (the call lost its connection: its session ended, the server restarted, its lease
-- expired): then this call takes the client over, as any run takes over a dead run.
CREATE FUNCTION deenroll.de_enrollment_take_client(
    p_group_id       uuid,
    p_client_id      uuid,
    p_batch_size     integer,
    p_max_runtime_ms integer,
    p_runner_host    text,
    p_runner_pid     integer,
    p_login_pid      integer,
    p_lease_ms       integer
)
RETURNS TABLE (run_id uuid, sibling boolean)
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_taken uuid;
    v_run   uuid;
BEGIN
    IF p_group_id IS NOT NULL THEN
        INSERT INTO deenroll.run_group_clients AS g (group_id, client_id)
        VALUES (p_group_id, p_client_id)
        ON CONFLICT (group_id, client_id) DO NOTHING;
        IF NOT FOUND THEN
            SELECT g.run_id INTO v_taken
              FROM deenroll.run_group_clients AS g
             WHERE g.group_id = p_group_id AND g.client_id = p_client_id
               FOR UPDATE;
            IF v_taken IS NULL
               OR NOT EXISTS (SELECT FROM public.de_enrollment_runs AS r WHERE r.id = v_taken AND r.status = 'running')
               OR EXISTS (SELECT FROM deenroll.de_enrollment_open_runs() AS o WHERE o.run_id = v_taken) THEN
                RETURN QUERY SELECT NULL::uuid, true;
                RETURN;
            END IF;
        END IF;
    END IF;
    v_run := public.start_de_enrollment_run(p_client_id, p_batch_size, p_max_runtime_ms, p_runner_host,
                                            p_runner_pid, p_login_pid, p_lease_ms);
    IF p_group_id IS NOT NULL AND v_run IS NOT NULL THEN
        UPDATE deenroll.run_group_clients AS g
           SET run_id = v_run
         WHERE g.group_id = p_group_id AND g.client_id = p_client_id;
    END IF;
    RETURN QUERY SELECT v_run, false;
END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_take_client(uuid, uuid, integer, integer, text, integer, integer, integer) IS
    'Starts a client''s run (start_de_enrollment_run) for one call of the run''s procedure; sibling = true when another call of the same run (p_group_id) has the client.';
