-- run_de_enrollment_loop: the loop of a whole de-enrollment run, whoever drives it: every client with work (or the one given), each by run_de_enrollment_client; then help the runs still open and fold what is left
-- requires: 0029_share_runs_between_calls
-- after: de_enrollment_join_run_group, de_enrollment_pin_settings, de_enrollment_require_client, run_de_enrollment_client
--
-- The one loop of a run. pg_cron calls it through deenroll.run_de_enrollment (`CALL
-- deenroll.run_de_enrollment()`, the only statement of its command, whose parameters never
-- change: a procedure dropped while a CALL of it runs breaks that CALL);
-- `deenroll run --workers N` makes N calls of it, one per connection, with one run id of its
-- own (p_run_group). In order:
--   1. the deadline: the call's start plus p_max_runtime_ms (or p_deadline); the calls of
--      one run share the first call's (de_enrollment_join_run_group). A statement_timeout
--      set for the caller's role covers the whole CALL (its COMMITs do not restart it): the
--      run ends a fifth of it (at most 20 s) ahead, so the timeout never cuts it;
--   2. the clients: the one given, or de_enrollment_run_queue(), least recently run first (a
--      client with nothing due, run less than p_idle_ms ago, 5 minutes by default, is passed
--      over: a pg_cron run queued behind a slow one costs little; `deenroll run` passes 0,
--      every client each time), after the clients whose call of the same run died;
--      each by run_de_enrollment_client, which records a failure and lets the loop go on.
--      A client another call of the same run took is that call's; one that a run of another
--      session holds is reported 'skipped'. Clients not reached before the
--      statement_timeout's cutoff are left for the next run;
--   3. the runs still in progress (another call's, another session's, a pg_cron job's; only
--      the given client's when there is one) are helped (help_de_enrollment_run) until the
--      deadline: the calls of a run, and two pg_cron jobs, share the work of a big client;
--   4. over every client: the counter deltas no client's run folded.
-- Rights: a procedure that commits cannot be SECURITY DEFINER nor carry a SET clause, so it
-- runs with its caller's rights (a member of deenroll_runner), qualifies every name, pins
-- its settings (de_enrollment_pin_settings) first and after every COMMIT, and only orders
-- calls of the functions the caller may execute; it reads no table itself.
-- p_lease_ms NULL: the lease's default length (de_enrollment_run_options, 30 s).
-- p_runner_host, p_runner_pid name the runner in the run rows (default: the database
-- session); p_login_pid is the backend pid the caller's connection announced at login
-- (default: this session's), which tells start_de_enrollment_run whether it may record
-- this session as the run's (not behind a pooler). p_progress: INFO messages 'deenroll: '
-- followed by a JSON object: "queue" (how many clients this call found), then per client
-- "started", "batch", "retry" and "client" (its result), and "batch" for helped runs.
-- p_summary (returned): {"clients": [run_de_enrollment_client's result per client this call
-- reported], "helped": [one object per run helped: run_id, client_id, batches, completed,
-- opted_out, held, error], "not_reached": clients left for the next run, "deltas_folded",
-- "fold_error"}.
CREATE PROCEDURE deenroll.run_de_enrollment_loop(
    p_client_id      uuid        DEFAULT NULL,
    p_batch_size     integer     DEFAULT 100,
    p_max_runtime_ms integer     DEFAULT 240000,
    p_lease_ms       integer     DEFAULT NULL,
    p_deadline       timestamptz DEFAULT NULL,
    p_runner_host    text        DEFAULT NULL,
    p_runner_pid     integer     DEFAULT NULL,
    p_login_pid      integer     DEFAULT NULL,
    p_progress       boolean     DEFAULT false,
    p_run_group      uuid        DEFAULT NULL,
    p_idle_ms        integer     DEFAULT 300000,
    INOUT p_summary  jsonb       DEFAULT NULL
)
LANGUAGE plpgsql
AS $pr$
DECLARE
    v_start      timestamptz := pg_catalog.clock_timestamp();
    v_deadline   timestamptz;
    v_cutoff     timestamptz;  -- the statement_timeout's, when it comes before the budget's
    v_timeout_ms bigint;
    v_host       text;
    v_pid        integer;
    v_login      integer;
    v_clients    uuid[];
    v_client     uuid;
    v_result     jsonb;
    v_results    jsonb := '[]';
    v_helped     jsonb := '[]';
    v_left       integer := 0;
    v_folded     integer;
    v_fold_error text;
    v_outcome    jsonb;
    v_open       record;
    v_open_runs  jsonb;
    v_lost       uuid[] := '{}';
BEGIN
    PERFORM deenroll.de_enrollment_pin_settings();
    PERFORM deenroll.de_enrollment_run_options(p_batch_size, p_max_runtime_ms, p_lease_ms);
    IF p_client_id IS NOT NULL THEN
        PERFORM deenroll.de_enrollment_require_client(p_client_id);
    END IF;

    -- 1. the deadline
    v_deadline := coalesce(p_deadline, v_start + pg_catalog.make_interval(secs => p_max_runtime_ms / 1000.0));
    IF p_run_group IS NOT NULL THEN
        SELECT j.deadline, j.lost_clients INTO v_deadline, v_lost
          FROM deenroll.de_enrollment_join_run_group(p_run_group, v_deadline) AS j;
    END IF;
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

    -- 2. the clients
    IF p_client_id IS NOT NULL THEN
        v_clients := ARRAY[p_client_id];
    ELSE
        -- first the clients of this run's calls that died, then the queue
        v_clients := v_lost || ARRAY(SELECT q.client_id FROM deenroll.de_enrollment_run_queue(p_idle_ms) AS q
                                      WHERE q.client_id <> ALL (v_lost));
    END IF;
    COMMIT;
    PERFORM deenroll.de_enrollment_pin_settings();
    IF p_progress THEN
        RAISE INFO 'deenroll: %', pg_catalog.jsonb_build_object(
            'event', 'queue', 'clients', pg_catalog.cardinality(v_clients), 'deadline', v_deadline);
    END IF;

    FOREACH v_client IN ARRAY v_clients LOOP
        IF v_cutoff IS NOT NULL AND pg_catalog.clock_timestamp() >= v_cutoff THEN
            v_left := v_left + 1;  -- statement_timeout is near: the next run takes it, first in line
            CONTINUE;
        END IF;
        CALL deenroll.run_de_enrollment_client(
            v_client, p_batch_size, p_max_runtime_ms, p_lease_ms, v_deadline,
            CASE WHEN v_cutoff IS NOT NULL THEN v_timeout_ms END, v_host, v_pid, v_login, p_run_group,
            p_progress, v_result);
        PERFORM deenroll.de_enrollment_pin_settings();
        IF v_result IS NOT NULL THEN
            v_results := v_results || pg_catalog.jsonb_build_array(v_result);
        END IF;
    END LOOP;

    -- 3. help the runs in progress, oldest first
    v_open_runs := (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(o)), '[]')
                      FROM deenroll.de_enrollment_open_runs() AS o
                     WHERE p_client_id IS NULL OR o.client_id = p_client_id);
    FOR v_open IN SELECT * FROM pg_catalog.jsonb_to_recordset(v_open_runs) AS o (run_id uuid, client_id uuid) LOOP
        EXIT WHEN pg_catalog.clock_timestamp() >= v_deadline;
        CALL deenroll.help_de_enrollment_run(v_open.run_id, v_open.client_id, p_batch_size, v_deadline,
                                             p_progress, v_outcome);
        PERFORM deenroll.de_enrollment_pin_settings();
        IF (v_outcome ->> 'batches')::integer > 0 OR v_outcome ->> 'stopped' = 'failed' THEN
            v_helped := v_helped || pg_catalog.jsonb_build_array(
                pg_catalog.jsonb_build_object('run_id', v_open.run_id, 'client_id', v_open.client_id)
                || (v_outcome - 'stopped'));
        END IF;
    END LOOP;

    -- 4. the counter deltas no client's run folded
    IF p_client_id IS NULL AND (v_cutoff IS NULL OR pg_catalog.clock_timestamp() < v_cutoff) THEN
        BEGIN
            v_folded := deenroll.fold_remaining_de_enrollment_deltas(p_max_runtime_ms);
        EXCEPTION WHEN OTHERS THEN
            v_fold_error := 'folding the remaining counter deltas failed: ' || SQLERRM;
        END;
        COMMIT;
        PERFORM deenroll.de_enrollment_pin_settings();
    END IF;

    p_summary := pg_catalog.jsonb_build_object(
        'clients', v_results, 'helped', v_helped, 'not_reached', v_left,
        'deltas_folded', coalesce(v_folded, 0), 'fold_error', v_fold_error);
END
$pr$;

COMMENT ON PROCEDURE deenroll.run_de_enrollment_loop(uuid, integer, integer, integer, timestamptz, text, integer, integer, boolean, uuid, integer, jsonb) IS
    'The loop of a whole de-enrollment run (every client with work, or one): lease, batches each committed, counters folded, run rows closed, failures recorded per client, open runs helped; returns a JSON summary. deenroll run makes one call per connection with one p_run_group; pg_cron calls it through run_de_enrollment.';
