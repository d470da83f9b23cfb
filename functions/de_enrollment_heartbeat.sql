-- de_enrollment_heartbeat: a run's sign of life, called first in each of its batch statements: checks and renews its client's lease, sets the batch's transaction settings
-- requires: 0025_add_runner_leases
-- after: de_enrollment_run_settings
--
-- The runner calls it in the same statement as the batch, so it costs no round trip:
--   SELECT ... FROM public.de_enrollment_heartbeat(run_id) AS h (run_id)
--    CROSS JOIN LATERAL public.process_de_enrollment_batch(h.run_id,
--          ARRAY(SELECT lead_id FROM public.get_leads_for_de_enrollment(client_id, batch_size)))
-- and before the other statements of a client (reports, folding its counters).
-- What it does, all of it local to the caller's transaction (nothing outlives it, as
-- transaction-mode connection poolers require):
--   * raises object_not_in_prerequisite_state when the run no longer holds its client's
--     lease (it finished, or it stalled past its lease and another run took the client
--     over): the batch is not done;
--   * renews the lease (expires_at = now + its ttl) when a tenth of the ttl has passed since
--     the last renewal, so that a run's workers do not write the lease on every batch; a
--     lease row another transaction holds (another worker of the run renewing it) is left
--     to that one, never waited for;
--   * takes the run's lock shared (de_enrollment_run_lock): the run closes only after this
--     transaction ends;
--   * lock_timeout 5 s (de_enrollment_run_settings): a lock wait longer than that is an
--     error, which the runner retries; it is bounded apart from the lease's length;
--   * synchronous_commit = off: a batch's commit does not wait for its WAL flush (on small
--     batches that wait is most of a batch's fixed cost). A batch lost to a crash of the
--     server is lost whole (lead, history, log row, counters and run totals together) and
--     the next run de-enrolls those leads again; the run's start and end commit
--     synchronously and WAL is written in order, so a finished run's batches are durable.
-- Returns p_run_id.
CREATE FUNCTION public.de_enrollment_heartbeat(p_run_id uuid)
RETURNS uuid
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_client uuid;
    v_ttl    interval;
    v_beat   timestamptz;
BEGIN
    SELECT l.client_id, l.ttl, l.heartbeat_at INTO v_client, v_ttl, v_beat
      FROM deenroll.client_leases AS l
     WHERE l.run_id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'de-enrollment run % no longer holds its client''s lease (it finished, or it stalled past its lease and another run took the client over)',
              p_run_id
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    PERFORM public.de_enrollment_run_settings(false);
    PERFORM deenroll.de_enrollment_run_lock(p_run_id, false);

    IF v_beat < clock_timestamp() - v_ttl / 10 THEN
        UPDATE deenroll.client_leases AS l
           SET heartbeat_at = clock_timestamp(),
               expires_at   = clock_timestamp() + l.ttl
         WHERE l.client_id = (SELECT k.client_id
                                FROM deenroll.client_leases AS k
                               WHERE k.client_id = v_client
                                 AND k.run_id = p_run_id
                                 FOR UPDATE SKIP LOCKED);
    END IF;
    RETURN p_run_id;
END
$fn$;

COMMENT ON FUNCTION public.de_enrollment_heartbeat(uuid) IS
    'A run''s sign of life in each batch''s transaction: refuses when the run lost its client''s lease, renews the lease, sets lock_timeout (5 s) and synchronous_commit off for the transaction.';
