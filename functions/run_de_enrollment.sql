-- run_de_enrollment: a whole de-enrollment run in the database: for every client with work (or the one given), take its lease, run its batches, fold its counters, close its run row; then help other sessions' runs and fold what is left
-- requires: 0028_detect_dead_runs
--
-- The one loop of a run, whoever drives it: pg_cron (`CALL deenroll.run_de_enrollment()`,
-- the only statement of its command) and `deenroll run` (one CALL per client on each of its
-- connections) call it alike. For each client, in order:
--   1. start_de_enrollment_run takes the client's lease and opens its 'running' row (or the
--      client is skipped: a live run of another session holds it), committed;
--   2. run_de_enrollment_batches: one committed transaction per batch until a batch comes
--      back short or the deadline passes;
--   3. in one transaction: the heartbeat (the run still holds its lease), the run's lock
--      exclusive (helpers' batches in flight end first), the client's counter deltas folded,
--      its held leads counted, the row closed 'success' or 'partial' (the budget ran out, or
--      campaigns whose messages is not an array kept leads back) with the reasons.
--   A failure at any step closes the row 'failed' with the error and the run goes on with
--   the next client; a cancel (a stop signal, statement_timeout) is not caught: the run
--   stops there, its batches committed so far are kept and the next run takes its client
--   over (at once when this session has ended).
-- Over every client (p_client_id NULL): the clients are de_enrollment_run_queue(), least
-- recently run first (a client with nothing due, run less than 5 minutes ago, is passed
-- over: a run queued behind a slow one costs little); once none is left to start, the runs other sessions have in
-- progress are helped (help_de_enrollment_run), so that two pg_cron jobs share the
-- clients like the workers of `deenroll run`; last, every remaining counter delta is folded.
--
-- Time: the run stops between batches at p_deadline (default: the call's start plus
-- p_max_runtime_ms; `deenroll run` passes one deadline for all its connections). A
-- statement_timeout set for the caller's role covers the whole CALL (its COMMITs do not
-- restart it): the run ends early enough that the timeout never cuts it, a fifth of it
-- (at most 20 s) ahead, and clients not reached by then are left for the next run.
-- Rights: a procedure that commits cannot be SECURITY DEFINER nor carry a SET clause, so it
-- runs with its caller's rights (a member of deenroll_runner), qualifies every name, pins
-- search_path with set_config first and after every COMMIT, and only orders calls of the
-- functions the caller may execute; it reads no table itself.
-- p_lease_ms NULL: the lease's default length (de_enrollment_run_options, 30 s).
-- p_runner_host, p_runner_pid name the runner in the run rows (default: the database
-- session); p_login_pid is the backend pid the caller's connection announced at login
-- (default: this session's), which tells start_de_enrollment_run whether it may record
-- this session as the run's (not behind a pooler). p_progress: INFO messages 'deenroll: '
-- followed by a JSON object ("event": "started", "batch", "retry", "client") for a client
-- that shows progress.
-- p_summary (returned): {"clients": [one object per client: client_id, run_id, status,
-- leads_evaluated, leads_de_enrolled, completed, opted_out, batches, duration_ms, error,
-- invalid_campaigns, held (by reason), newly_held], "helped": [run ids], "not_reached":
-- clients left for the next run, "deltas_folded", "fold_error"}.
CREATE PROCEDURE deenroll.run_de_enrollment(
    p_client_id      uuid        DEFAULT NULL,
    p_batch_size     integer     DEFAULT 100,
    p_max_runtime_ms integer     DEFAULT 240000,
    p_lease_ms       integer     DEFAULT NULL,
    p_deadline       timestamptz DEFAULT NULL,
    p_runner_host    text        DEFAULT NULL,
    p_runner_pid     integer     DEFAULT NULL,
    p_login_pid      integer     DEFAULT NULL,
    p_progress       boolean     DEFAULT false,
    INOUT p_summary  jsonb       DEFAULT NULL
)
LANGUAGE plpgsql
AS $pr$
DECLARE
    -- over every client, one with nothing due run less than this ago is passed over
    c_idle_ms    CONSTANT integer := 300000;
    v_start      timestamptz := pg_catalog.clock_timestamp();
    v_deadline   timestamptz;
    v_cutoff     timestamptz;  -- the statement_timeout's, when it comes before the budget's
    v_timeout_ms bigint;
    v_host       text;
    v_pid        integer;
    v_login      integer;
    v_clients    uuid[];
    v_client     uuid;
    v_results    jsonb := '[]';
    v_helped     jsonb := '[]';
    v_left       integer := 0;
    v_folded     integer;
    v_fold_error text;
    v_run        uuid;
    v_t0         timestamptz;
    v_invalid    jsonb;
    v_problems   text[];
    v_outcome    jsonb;
    v_held       jsonb;
    v_status     text;
    v_error      text;
    v_held_text  text;
    v_row        public.de_enrollment_runs;
    v_attempt    integer;
    v_open       record;
    v_open_runs  jsonb;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
    PERFORM deenroll.de_enrollment_run_options(p_batch_size, p_max_runtime_ms, p_lease_ms);
    IF p_client_id IS NOT NULL AND NOT public.de_enrollment_client_exists(p_client_id) THEN
        RAISE EXCEPTION 'client % has no campaigns and no leads: nothing to de-enroll', p_client_id
              USING ERRCODE = 'invalid_parameter_value';
    END IF;

    v_deadline := coalesce(p_deadline, v_start + pg_catalog.make_interval(secs => p_max_runtime_ms / 1000.0));
    SELECT s.setting::bigint INTO v_timeout_ms FROM pg_catalog.pg_settings AS s WHERE s.name = 'statement_timeout';
    IF v_timeout_ms > 0 THEN
        v_cutoff := pg_catalog.statement_timestamp()
                    + pg_catalog.make_interval(secs => (v_timeout_ms - least(v_timeout_ms / 5, 20000)) / 1000.0);
        IF v_cutoff >= v_deadline THEN
            v_cutoff := NULL;
        ELSE
            v_deadline := v_cutoff;
        END IF;
    END IF;
    v_host  := coalesce(p_runner_host, 'database session (' || coalesce(nullif(pg_catalog.current_setting('application_name'), ''), current_user) || ')');
    v_pid   := coalesce(p_runner_pid, pg_catalog.pg_backend_pid());
    v_login := coalesce(p_login_pid, pg_catalog.pg_backend_pid());

    IF p_client_id IS NOT NULL THEN
        v_clients := ARRAY[p_client_id];
    ELSE
        v_clients := ARRAY(SELECT q.client_id FROM deenroll.de_enrollment_run_queue(c_idle_ms) AS q);
    END IF;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    FOREACH v_client IN ARRAY v_clients LOOP
        IF v_cutoff IS NOT NULL AND pg_catalog.clock_timestamp() >= v_cutoff THEN
            v_left := v_left + 1;  -- statement_timeout is near: the next run takes it, first in line
            CONTINUE;
        END IF;
        v_t0 := pg_catalog.clock_timestamp();
        v_run := NULL;
        v_error := NULL;
        v_invalid := '[]';
        v_problems := '{}';
        v_held := '{}';
        v_outcome := NULL;
        v_row := NULL;

        -- 1. the lease and the run row
        BEGIN
            v_run := public.start_de_enrollment_run(v_client, p_batch_size, p_max_runtime_ms, v_host, v_pid,
                                                    v_login, p_lease_ms);
        EXCEPTION WHEN OTHERS THEN
            v_error := 'could not start a run: ' || SQLERRM;
        END;
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        IF v_error IS NOT NULL OR v_run IS NULL THEN
            v_results := v_results || pg_catalog.jsonb_build_object(
                'client_id', v_client, 'run_id', NULL,
                'status', CASE WHEN v_error IS NULL THEN 'skipped' ELSE 'failed' END,
                'error', coalesce(v_error, 'another deenroll run is processing this client'),
                'duration_ms', (extract(epoch FROM pg_catalog.clock_timestamp() - v_t0) * 1000)::integer);
            IF p_progress THEN
                RAISE INFO 'deenroll: %', pg_catalog.jsonb_build_object('event', 'client', 'result', v_results -> -1);
            END IF;
            CONTINUE;
        END IF;
        IF p_progress THEN
            RAISE INFO 'deenroll: %', pg_catalog.jsonb_build_object(
                'event', 'started', 'run_id', v_run, 'client_id', v_client, 'batch_size', p_batch_size,
                'deadline', v_deadline);
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
              FROM public.de_enrollment_invalid_campaigns(v_client) AS i;
        EXCEPTION WHEN OTHERS THEN
            v_error := SQLERRM;
        END;

        -- 2. the batches
        IF v_error IS NULL THEN
            CALL deenroll.run_de_enrollment_batches(v_run, v_client, p_batch_size, v_deadline, p_progress, v_outcome);
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            IF v_outcome ->> 'stopped' IN ('failed', 'lease_lost') THEN
                v_error := v_outcome ->> 'error';
            END IF;
        END IF;

        -- 3. fold, count the held leads, close; a lost lock race is tried again
        IF v_error IS NULL THEN
            IF v_outcome ->> 'stopped' = 'budget' THEN
                v_problems := pg_catalog.array_prepend(pg_catalog.format(
                    CASE WHEN v_cutoff IS NOT NULL
                         THEN 'stopped ahead of the statement_timeout (%s ms) after %s batch%s; due leads may remain for the next run'
                         ELSE 'runtime budget of %s ms ran out after %s batch%s; due leads may remain for the next run' END,
                    CASE WHEN v_cutoff IS NOT NULL THEN v_timeout_ms ELSE p_max_runtime_ms END,
                    v_outcome ->> 'batches', CASE WHEN (v_outcome ->> 'batches')::integer = 1 THEN '' ELSE 'es' END),
                    v_problems);
            END IF;
            v_status := CASE WHEN pg_catalog.cardinality(v_problems) > 0 THEN 'partial' ELSE 'success' END;
            v_attempt := 0;
            LOOP
                v_attempt := v_attempt + 1;
                BEGIN
                    PERFORM public.de_enrollment_heartbeat(v_run);
                    PERFORM deenroll.de_enrollment_run_lock(v_run, true);
                    PERFORM public.apply_client_stats_deltas(v_client);
                    SELECT coalesce(pg_catalog.jsonb_object_agg(x.reason, x.n), '{}'),
                           pg_catalog.format('held %s (%s): `deenroll stuck` lists them', pg_catalog.sum(x.n),
                                             pg_catalog.string_agg(x.reason || ' ' || x.n, ', ' ORDER BY x.reason))
                      INTO v_held, v_held_text
                      FROM (SELECT h.reason, pg_catalog.count(*) AS n
                              FROM public.de_enrollment_held_leads(v_client) AS h
                             GROUP BY h.reason) AS x
                    HAVING pg_catalog.count(*) > 0;
                    -- held leads alone leave the run a success (it did all it could); they are reported
                    SELECT * INTO v_row
                      FROM public.finish_de_enrollment_run(v_run, v_status,
                               nullif(pg_catalog.array_to_string(v_problems || v_held_text, '; '), ''));
                    v_held := coalesce(v_held, '{}');
                    EXIT;
                EXCEPTION
                    WHEN deadlock_detected OR serialization_failure OR lock_not_available THEN
                        v_held := '{}';
                        IF v_attempt >= 3 THEN
                            v_error := SQLERRM;
                            EXIT;
                        END IF;
                        PERFORM pg_catalog.pg_sleep(0.05 * v_attempt);
                    WHEN OTHERS THEN
                        v_held := '{}';
                        v_error := SQLERRM;
                        EXIT;
                END;
            END LOOP;
            COMMIT;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        END IF;

        -- a failure closes the row 'failed' with its error (a row already closed, by a
        -- failed helper for one, is returned as it is)
        IF v_error IS NOT NULL THEN
            BEGIN
                SELECT * INTO v_row FROM public.finish_de_enrollment_run(v_run, 'failed', v_error);
            EXCEPTION WHEN OTHERS THEN
                v_error := v_error || '; the run row could not be closed either: ' || SQLERRM;
                v_row := NULL;
            END;
            COMMIT;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        END IF;

        v_results := v_results || pg_catalog.jsonb_build_object(
            'client_id', v_client, 'run_id', v_run,
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
            RAISE INFO 'deenroll: %', pg_catalog.jsonb_build_object('event', 'client', 'result', v_results -> -1);
        END IF;
    END LOOP;

    IF p_client_id IS NULL THEN
        -- help the runs other sessions have in progress, oldest first
        v_open_runs := (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(o)), '[]')
                          FROM deenroll.de_enrollment_open_runs() AS o);
        FOR v_open IN SELECT * FROM pg_catalog.jsonb_to_recordset(v_open_runs) AS o (run_id uuid, client_id uuid) LOOP
            EXIT WHEN pg_catalog.clock_timestamp() >= v_deadline;
            CALL deenroll.help_de_enrollment_run(v_open.run_id, v_open.client_id, p_batch_size, v_deadline,
                                                 p_progress, v_outcome);
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
            IF (v_outcome ->> 'batches')::integer > 0 OR v_outcome ->> 'stopped' = 'failed' THEN
                v_helped := v_helped || pg_catalog.jsonb_build_object('run_id', v_open.run_id, 'client_id', v_open.client_id)
                            || (v_outcome - 'stopped');
            END IF;
        END LOOP;
        -- the counter deltas no client's run folded
        IF v_cutoff IS NULL OR pg_catalog.clock_timestamp() < v_cutoff THEN
            BEGIN
                v_folded := deenroll.fold_remaining_de_enrollment_deltas(p_max_runtime_ms);
            EXCEPTION WHEN OTHERS THEN
                v_fold_error := 'folding the remaining counter deltas failed: ' || SQLERRM;
            END;
            COMMIT;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
        END IF;
    END IF;

    p_summary := pg_catalog.jsonb_build_object(
        'clients', v_results, 'helped', v_helped, 'not_reached', v_left,
        'deltas_folded', coalesce(v_folded, 0), 'fold_error', v_fold_error);
END
$pr$;

COMMENT ON PROCEDURE deenroll.run_de_enrollment(uuid, integer, integer, integer, timestamptz, text, integer, integer, boolean, jsonb) IS
    'A whole de-enrollment run (every client with work, or one): lease, batches each committed, counters folded, run rows closed, failures recorded per client; returns a JSON summary. CALL deenroll.run_de_enrollment() from pg_cron.';
