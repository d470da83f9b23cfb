-- de_enrollment_retry_lock_race: whether a transaction of a run that failed with this error is tried again (a lost lock race, fewer than 3 attempts), after a short pause
-- requires: 0028_detect_dead_runs
--
-- The one rule for both places a run retries: a batch (run_de_enrollment_batches) and the
-- closing transaction of a client's run (run_de_enrollment_client). A deadlock, a
-- serialization failure or a lock wait that ran into lock_timeout rolled the transaction
-- back whole; it is tried again after 50 ms times the attempt, three attempts in all. Any
-- other error, or the third lost race, is the caller's failure.
CREATE FUNCTION deenroll.de_enrollment_retry_lock_race(p_attempt integer, p_sqlstate text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_sqlstate NOT IN ('40P01', '40001', '55P03') OR p_attempt >= 3 THEN
        RETURN false;
    END IF;
    PERFORM pg_sleep(0.05 * p_attempt);
    RETURN true;
END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_retry_lock_race(integer, text) IS
    'True (after a pause) when a run''s transaction that failed with this SQLSTATE is tried again: a lost lock race, fewer than 3 attempts.';
