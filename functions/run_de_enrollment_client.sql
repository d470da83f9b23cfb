-- run_de_enrollment_client: one client's whole run, for the run's loop: its lease and row, its batches, its counters folded, its row closed; a failure closes the row 'failed'
-- requires: 0029_share_runs_between_calls
-- after: de_enrollment_pin_settings, de_enrollment_retry_lock_race, de_enrollment_take_client, run_de_enrollment_batches
--
-- Called by deenroll.run_de_enrollment for each client of its queue, in order:
--   1. de_enrollment_take_client takes the client's lease and opens its 'running' row,
--      committed (or the client is skipped: a live run of another session holds it; or it is
--      passed over quietly: another call of the same run has it, p_result NULL);
--   2. run_de_enrollment_batches: one committed transaction per batch until a batch comes
--      back short or p_deadline passes;
--   3. in one transaction: the heartbeat (the run still holds its lease), the run's lock
--      exclusive (helpers' batches in flight end first), the client's counter deltas folded,
--      its held leads counted, the row closed 'success' or 'partial' (the deadline came, or
--      campaigns whose messages is not an array kept leads back) with the reasons. A lost
--      lock race is tried again (de_enrollment_retry_lock_race).
-- A failure at any step closes the row 'failed' with the error; the caller goes on with the
-- next client. A cancel (a stop signal, statement_timeout) is not caught.
-- p_timeout_ms: the caller's statement_timeout when it, not the budget, set p_deadline (it
-- words the reason a run stopped early).
-- p_result: one object per client: client_id, run_id, status, leads_evaluated,
-- leads_de_enrolled, completed, opted_out, batches, duration_ms, error, invalid_campaigns,
-- held (by reason), newly_held; with p_progress also sent as an INFO message
-- 'deenroll: {"event": "client", "result": ...}', after 'started' and the batches' messages.
-- Runs with its caller's rights; pins its settings first and after every COMMIT.
CREATE PROCEDURE deenroll.run_de_enrollment_client(
    p_client_id      uuid,
    p_batch_size     integer,
    p_max_runtime_ms integer,
    p_lease_ms       integer,
    p_deadline       timestamptz,
    p_timeout_ms     bigint,
    p_runner_host    text,
    p_runner_pid     integer,
    p_login_pid      integer,
    p_run_group      uuid,
    p_progress       boolean,
    INOUT p_result   jsonb DEFAULT NULL
)
LANGUAGE plpgsql
AS $pr$
DECLARE
    v_t0        timestamptz := pg_catalog.clock_timestamp();
    v_run       uuid;
    v_sibling   boolean;
    v_error     text;
    v_invalid   jsonb := '[]';
    v_problems  text[] := '{}';
    v_outcome   jsonb;
    v_held      jsonb := '{}';
    v_held_text text;
    v_status    text;
    v_row       public.de_enrollment_runs;
    v_attempt   integer := 0;
BEGIN
    PERFORM deenroll.de_enrollment_pin_settings();
    p_result := NULL;

    -- 1. the lease and the run row
    BEGIN
        SELECT t.run_id, t.sibling INTO v_run, v_sibling
          FROM deenroll.de_enrollment_take_client(p_run_group, p_client_id, p_batch_size, p_max_runtime_ms,
                                                  p_runner_host, p_runner_pid, p_login_pid, p_lease_ms) AS t;
    EXCEPTION WHEN OTHERS THEN
        v_error := 'could not start a run: ' || SQLERRM;
    END;
    COMMIT;
    PERFORM deenroll.de_enrollment_pin_settings();
    IF v_sibling THEN
        RETURN;  -- another call of this run has the client and reports it
    END IF;
    IF v_error IS NOT NULL OR v_run IS NULL THEN
        p_result := pg_catalog.jsonb_build_object(
            'client_id', p_client_id, 'run_id', NULL,
            'status', CASE WHEN v_error IS NULL THEN 'skipped' ELSE 'failed' END,
            'error', coalesce(v_error, 'another deenroll run is processing this client'),
            'duration_ms', (extract(epoch FROM pg_catalog.clock_timestamp() - v_t0) * 1000)::integer);
        IF p_progress THEN
            RAISE INFO 'deenroll: %', pg_catalog.jsonb_build_object('event', 'client', 'result', p_result);
        END IF;
        RETURN;
    END IF;
    IF p_progress THEN
        RAISE INFO 'deenroll: %', pg_catalog.jsonb_build_object(
            'event', 'started', 'run_id', v_run, 'client_id', p_client_id, 'batch_size', p_batch_size,
            'deadline', p_deadline);
    END IF;

    -- campaigns whose messages is not an array: reported, their leads left
    BEGIN
        SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'campaign_id', i.campaign_id, 'campaign_name', i.campaign_name,
                   'messages_type', i.messages_type, 'active_leads', i.active_leads) ORDER BY i.campaign_id), '[]'),
               coalesce(pg_catalog.array_agg(pg_catalog.format(
                   'campaign %s (%s): messages is %s, not a JSON array; its %s active leads were skipped',
                   i.campaign_id, coalesce(i.campaign_name, 'unnamed'), i.messages_type, i.active_leads)
                   ORDER BY i.campaign_id), '{}')
          INTO v_invalid, v_problems
          FROM public.de_enrollment_invalid_campaigns(p_client_id) AS i;
    EXCEPTION WHEN OTHERS THEN
        v_error := SQLERRM;
    END;

    -- 2. the batches
    IF v_error IS NULL THEN
        CALL deenroll.run_de_enrollment_batches(v_run, p_client_id, p_batch_size, p_deadline, p_progress, v_outcome);
        PERFORM deenroll.de_enrollment_pin_settings();
        IF v_outcome ->> 'stopped' IN ('failed', 'lease_lost') THEN
            v_error := v_outcome ->> 'error';
        END IF;
    END IF;

    -- 3. fold, count the held leads, close
    IF v_error IS NULL THEN
        IF v_outcome ->> 'stopped' = 'budget' THEN
            v_problems := pg_catalog.array_prepend(pg_catalog.format(
                CASE WHEN p_timeout_ms IS NOT NULL
                     THEN 'stopped ahead of the statement_timeout (%s ms) after %s batch%s; due leads may remain for the next run'
                     ELSE 'runtime budget of %s ms ran out after %s batch%s; due leads may remain for the next run' END,
                coalesce(p_timeout_ms, p_max_runtime_ms),
                v_outcome ->> 'batches', CASE WHEN (v_outcome ->> 'batches')::integer = 1 THEN '' ELSE 'es' END),
                v_problems);
        END IF;
        v_status := CASE WHEN pg_catalog.cardinality(v_problems) > 0 THEN 'partial' ELSE 'success' END;
        LOOP
            v_attempt := v_attempt + 1;
            BEGIN
                PERFORM public.de_enrollment_heartbeat(v_run);
                PERFORM deenroll.de_enrollment_run_lock(v_run, true);
                PERFORM public.apply_client_stats_deltas(p_client_id);
                SELECT coalesce(pg_catalog.jsonb_object_agg(x.reason, x.n), '{}'),
                       pg_catalog.format('held %s (%s): `deenroll stuck` lists them', pg_catalog.sum(x.n),
                                         pg_catalog.string_agg(x.reason || ' ' || x.n, ', ' ORDER BY x.reason))
                  INTO v_held, v_held_text
                  FROM (SELECT h.reason, pg_catalog.count(*) AS n
                          FROM public.de_enrollment_held_leads(p_client_id) AS h
                         GROUP BY h.reason) AS x
                HAVING pg_catalog.count(*) > 0;
                -- held leads alone leave the run a success (it did all it could); they are reported
                SELECT * INTO v_row
                  FROM public.finish_de_enrollment_run(v_run, v_status,
                           nullif(pg_catalog.array_to_string(v_problems || v_held_text, '; '), ''));
                v_held := coalesce(v_held, '{}');
                EXIT;
            EXCEPTION WHEN OTHERS THEN
                v_held := '{}';
                IF NOT deenroll.de_enrollment_retry_lock_race(v_attempt, SQLSTATE) THEN
                    v_error := SQLERRM;
                    EXIT;
                END IF;
            END;
        END LOOP;
        COMMIT;
        PERFORM deenroll.de_enrollment_pin_settings();
    END IF;

    -- a failure closes the row 'failed' with its error (a row already closed, by a failed
    -- helper for one, is returned as it is)
    IF v_error IS NOT NULL THEN
        BEGIN
            SELECT * INTO v_row FROM public.finish_de_enrollment_run(v_run, 'failed', v_error);
        EXCEPTION WHEN OTHERS THEN
            v_error := v_error || '; the run row could not be closed either: ' || SQLERRM;
            v_row := NULL;
        END;
        COMMIT;
        PERFORM deenroll.de_enrollment_pin_settings();
    END IF;

    p_result := pg_catalog.jsonb_build_object(
        'client_id', p_client_id, 'run_id', v_run,
        'status', coalesce(v_row.status, 'failed'),
        'leads_evaluated', coalesce(v_row.leads_evaluated, 0),
        'leads_de_enrolled', coalesce(v_row.leads_de_enrolled, 0),
        'completed', coalesce(v_row.leads_completed, 0),
        'opted_out', coalesce(v_row.leads_opted_out, 0),
        'batches', coalesce(v_row.batches, (v_outcome ->> 'batches')::integer, 0),
        'duration_ms', coalesce(v_row.duration_ms, (extract(epoch FROM pg_catalog.clock_timestamp() - v_t0) * 1000)::integer),
        'error', CASE WHEN v_row.id IS NULL THEN v_error ELSE v_row.error_details END,
        'invalid_campaigns', v_invalid,
        'held', v_held,
        'newly_held', coalesce(v_row.leads_held, 0));
    IF p_progress THEN
        RAISE INFO 'deenroll: %', pg_catalog.jsonb_build_object('event', 'client', 'result', p_result);
    END IF;
END
$pr$;

COMMENT ON PROCEDURE deenroll.run_de_enrollment_client(uuid, integer, integer, integer, timestamptz, bigint, text, integer, integer, uuid, boolean, jsonb) IS
    'One client''s whole run for the run''s loop (lease, batches each committed, counters folded, row closed, a failure recorded); its result as JSON, NULL when another call of the same run has the client.';
