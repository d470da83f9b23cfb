-- help_de_enrollment_run: claim batches of another session's run until they come back short; a failed batch fails the run it helped
-- requires: 0028_detect_dead_runs
-- after: de_enrollment_pin_settings, run_de_enrollment_batches
--
-- Used by run_de_enrollment once it has no client of its own left to start. The batches
-- count in the helped run's row. The run closes (run_de_enrollment_client) only after the
-- helpers' batches in flight end (de_enrollment_run_lock); a helper whose run has closed stops at its next batch, quietly.
-- A batch that fails for another reason than a lock race closes the helped run 'failed'
-- with 'a helping worker failed: <error>'; its own session then finds the lease gone and
-- reports that row. Runs with its caller's rights and pins its settings itself (a procedure
-- that commits can have no SET clause).
-- p_outcome: the batch loop's (run_de_enrollment_batches), plus "close_error" when the
-- failed run's row could not be closed.
CREATE PROCEDURE deenroll.help_de_enrollment_run(
    p_run_id     uuid,
    p_client_id  uuid,
    p_batch_size integer,
    p_deadline   timestamptz,
    p_progress   boolean DEFAULT false,
    INOUT p_outcome jsonb DEFAULT NULL
)
LANGUAGE plpgsql
AS $pr$
BEGIN
    PERFORM deenroll.de_enrollment_pin_settings();
    CALL deenroll.run_de_enrollment_batches(p_run_id, p_client_id, p_batch_size, p_deadline, p_progress, p_outcome);
    PERFORM deenroll.de_enrollment_pin_settings();
    IF p_outcome ->> 'stopped' = 'failed' THEN
        BEGIN
            PERFORM public.finish_de_enrollment_run(p_run_id, 'failed',
                                                    'a helping worker failed: ' || (p_outcome ->> 'error'));
        EXCEPTION WHEN OTHERS THEN
            p_outcome := p_outcome || pg_catalog.jsonb_build_object('close_error', SQLERRM);
        END;
        COMMIT;
        PERFORM deenroll.de_enrollment_pin_settings();
    END IF;
END
$pr$;

COMMENT ON PROCEDURE deenroll.help_de_enrollment_run(uuid, uuid, integer, timestamptz, boolean, jsonb) IS
    'Claims batches under another session''s run until they come back short; a failed batch closes that run failed.';
