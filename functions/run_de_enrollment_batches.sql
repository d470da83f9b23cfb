-- run_de_enrollment_batches: a run's batch loop, each batch committed on its own, until a batch comes back short, the deadline passes, the run loses its lease or a batch fails
-- requires: 0028_detect_dead_runs
-- after: de_enrollment_pin_settings, de_enrollment_retry_lock_race
--
-- The loop of the session that started a run and of every session helping it
-- (run_de_enrollment_client, help_de_enrollment_run). Each batch is one statement: the heartbeat
-- (refuses a run that lost its lease, renews it, takes the run's lock shared, sets
-- lock_timeout and synchronous_commit), the claim and the processing; then COMMIT, so a
-- batch's row locks last one batch. A batch that loses a deadlock, a serialization race or a
-- lock wait (lock_timeout) was rolled back whole and is tried again
-- (de_enrollment_retry_lock_race).
-- The deadline is checked between batches. A batch full of leads, or one that deferred
-- leads (its subtransaction budget ran out), means more may be due.
-- A procedure that commits may have no SET clause and must run with its caller's rights:
-- it pins its settings (de_enrollment_pin_settings) first and after every COMMIT, and
-- qualifies every name; it only calls functions the caller may execute.
-- p_outcome: {"stopped": "done" | "budget" | "lease_lost" | "failed", "error": text or null,
-- "batches", "completed", "opted_out", "held"} of this session's batches.
-- p_progress: an INFO message per batch and per retry, 'deenroll: ' followed by a JSON
-- object with "event" ("batch" or "retry"), for a client that shows progress.
CREATE PROCEDURE deenroll.run_de_enrollment_batches(
    p_run_id     uuid,
    p_client_id  uuid,
    p_batch_size integer,
    p_deadline   timestamptz,
    p_progress   boolean DEFAULT false,
    INOUT p_outcome jsonb DEFAULT NULL
)
LANGUAGE plpgsql
AS $pr$
DECLARE
    v_batches   integer := 0;
    v_completed bigint  := 0;
    v_opted_out bigint  := 0;
    v_held      bigint  := 0;
    v_n         integer;
    v_c         integer;
    v_o         integer;
    v_h         integer;
    v_d         integer;
    v_attempt   integer;
    v_stop      text;
    v_error     text;
BEGIN
    PERFORM deenroll.de_enrollment_pin_settings();
    LOOP
        IF pg_catalog.clock_timestamp() >= p_deadline THEN
            v_stop := 'budget';
            EXIT;
        END IF;
        v_attempt := 0;
        LOOP
            v_attempt := v_attempt + 1;
            BEGIN
                SELECT pg_catalog.count(*),
                       pg_catalog.count(*) FILTER (WHERE b.outcome = 'completed'),
                       pg_catalog.count(*) FILTER (WHERE b.outcome = 'opted_out'),
                       pg_catalog.count(*) FILTER (WHERE b.outcome = 'held'),
                       pg_catalog.count(*) FILTER (WHERE b.outcome = 'deferred')
                  INTO v_n, v_c, v_o, v_h, v_d
                  FROM public.de_enrollment_heartbeat(p_run_id) AS h (run_id)
                 CROSS JOIN LATERAL public.process_de_enrollment_batch(h.run_id,
                       ARRAY(SELECT g.lead_id
                               FROM public.get_leads_for_de_enrollment(p_client_id, p_batch_size) AS g)) AS b;
                EXIT;
            EXCEPTION
                WHEN object_not_in_prerequisite_state THEN
                    v_stop := 'lease_lost';
                    v_error := SQLERRM;
                    EXIT;
                WHEN OTHERS THEN
                    IF NOT deenroll.de_enrollment_retry_lock_race(v_attempt, SQLSTATE) THEN
                        v_stop := 'failed';
                        v_error := SQLERRM;
                        EXIT;
                    END IF;
                    IF p_progress THEN
                        RAISE INFO 'deenroll: %', pg_catalog.jsonb_build_object(
                            'event', 'retry', 'run_id', p_run_id, 'client_id', p_client_id, 'error', SQLERRM);
                    END IF;
            END;
        END LOOP;
        EXIT WHEN v_stop IS NOT NULL;
        COMMIT;
        PERFORM deenroll.de_enrollment_pin_settings();
        v_batches := v_batches + 1;
        v_completed := v_completed + v_c;
        v_opted_out := v_opted_out + v_o;
        v_held := v_held + v_h;
        IF p_progress THEN
            RAISE INFO 'deenroll: %', pg_catalog.jsonb_build_object(
                'event', 'batch', 'run_id', p_run_id, 'client_id', p_client_id,
                'completed', v_c, 'opted_out', v_o, 'held', v_h, 'deferred', v_d);
        END IF;
        IF v_n < p_batch_size AND v_d = 0 THEN
            v_stop := 'done';
            EXIT;
        END IF;
    END LOOP;
    p_outcome := pg_catalog.jsonb_build_object(
        'stopped', v_stop, 'error', v_error, 'batches', v_batches,
        'completed', v_completed, 'opted_out', v_opted_out, 'held', v_held);
END
$pr$;

COMMENT ON PROCEDURE deenroll.run_de_enrollment_batches(uuid, uuid, integer, timestamptz, boolean, jsonb) IS
    'A run''s batch loop (one COMMIT per batch, lock races retried, deadline checked between batches); used by the session that started the run and by those helping it.';
