-- de_enrollment_run_lock: a run's transaction lock: shared by each batch of the run, exclusive while the run closes, so that it closes after every helper's batch in flight
-- requires: 0028_detect_dead_runs
--
-- Several sessions may work on one client's run: the session that started it and sessions
-- helping it (another worker of `deenroll run`, another pg_cron job). de_enrollment_heartbeat
-- takes this lock shared in every batch; run_de_enrollment takes it exclusive in the
-- transaction that folds the client's counters and closes the run. The close therefore
-- waits for the batches in flight (each one short) and, since PostgreSQL queues lock
-- requests in order, no new batch slips in ahead of it; once the run is closed, a helper's
-- next heartbeat finds no lease and the helper stops. A transaction lock: nothing outlives
-- the transaction, as transaction-mode connection poolers require. Advisory locks need no
-- privilege, so it runs with its caller's rights.
CREATE FUNCTION deenroll.de_enrollment_run_lock(p_run_id uuid, p_exclusive boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- one key per run, in a key space of its own (the text prefix)
    v_key bigint := hashtextextended('deenroll run ' || p_run_id::text, 0);
BEGIN
    IF p_exclusive THEN
        PERFORM pg_advisory_xact_lock(v_key);
    ELSE
        PERFORM pg_advisory_xact_lock_shared(v_key);
    END IF;
END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_run_lock(uuid, boolean) IS
    'Transaction advisory lock of one run: shared by its batches, exclusive while it closes.';
