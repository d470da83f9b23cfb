-- pgTAP: the health and analyst views the SOP and the analysts query, their columns, the
-- analyst role's privileges, and the health status of a few crafted clients.
BEGIN;
SELECT plan(41);

SELECT has_view('de_enrollment_health');
SELECT has_view('de_enrollment_stuck_leads');
SELECT has_view('campaign_stats_drift');
SELECT has_view('de_enrollment_duplicates');
SELECT has_view('de_enrollment_daily_summary');

-- The SOP's morning query reads these three.
SELECT has_column('de_enrollment_health', 'client_id');
SELECT has_column('de_enrollment_health', 'failed_runs_24h');
SELECT has_column('de_enrollment_health', 'hours_since_success');
SELECT col_type_is('de_enrollment_health', 'client_id', 'uuid');
SELECT col_type_is('de_enrollment_health', 'failed_runs_24h', 'bigint');
SELECT col_type_is('de_enrollment_health', 'hours_since_success', 'numeric');
SELECT has_column('de_enrollment_health', 'runs_24h');
SELECT has_column('de_enrollment_health', 'successful_runs_24h');
SELECT has_column('de_enrollment_health', 'partial_runs_24h');
SELECT has_column('de_enrollment_health', 'success_rate_24h');
SELECT has_column('de_enrollment_health', 'last_run_at');
SELECT has_column('de_enrollment_health', 'last_success_at');
SELECT has_column('de_enrollment_health', 'leads_de_enrolled_24h');
SELECT has_column('de_enrollment_health', 'avg_duration_ms_24h');
SELECT has_column('de_enrollment_health', 'stuck_leads');
SELECT col_type_is('de_enrollment_health', 'status', 'text');
SELECT col_type_is('de_enrollment_health', 'status_reasons', 'text[]');

SELECT has_column('de_enrollment_stuck_leads', 'lead_id');
SELECT has_column('de_enrollment_stuck_leads', 'reason');
SELECT has_column('campaign_stats_drift', 'stored_active');
SELECT has_column('campaign_stats_drift', 'actual_active');
SELECT has_column('de_enrollment_duplicates', 'kind');
SELECT has_column('de_enrollment_daily_summary', 'day');
SELECT has_column('de_enrollment_daily_summary', 'leads_de_enrolled');

-- The analyst role (migration 0022): SELECT on the views, nothing on the tables.
SELECT has_role('deenroll_analyst');
SELECT table_privs_are('de_enrollment_health', 'deenroll_analyst', ARRAY['SELECT']);
SELECT table_privs_are('de_enrollment_daily_summary', 'deenroll_analyst', ARRAY['SELECT']);
SELECT table_privs_are('leads', 'deenroll_analyst', ARRAY[]::text[]);
SELECT table_privs_are('de_enrollment_runs', 'deenroll_analyst', ARRAY[]::text[]);
SELECT has_function('deenroll_apply_privileges');
SELECT has_function('archive_de_enrollment_history', ARRAY['integer', 'integer', 'boolean']);

-- Crafted clients: ok, warning (success rate), error (no success for 3 hours).
INSERT INTO campaigns (id, client_id, name, messages, created_at) VALUES
    ('a0000000-0000-0000-0000-00000000000a', 'c0000000-0000-0000-0000-00000000000a', 'ok', '[1,2]', now() - interval '3 days'),
    ('a0000000-0000-0000-0000-00000000000b', 'c0000000-0000-0000-0000-00000000000b', 'warn', '[1,2]', now() - interval '3 days'),
    ('a0000000-0000-0000-0000-00000000000c', 'c0000000-0000-0000-0000-00000000000c', 'err', '[1,2]', now() - interval '3 days');
INSERT INTO de_enrollment_runs (client_id, status, run_at, duration_ms) VALUES
    ('c0000000-0000-0000-0000-00000000000a', 'success', now() - interval '5 minutes', 100),
    ('c0000000-0000-0000-0000-00000000000b', 'success', now() - interval '5 minutes', 100),
    ('c0000000-0000-0000-0000-00000000000b', 'failed', now() - interval '20 minutes', 100),
    ('c0000000-0000-0000-0000-00000000000c', 'success', now() - interval '3 hours', 100);
INSERT INTO leads (client_id, campaign_link_id, current_message_position, is_active) VALUES
    ('c0000000-0000-0000-0000-00000000000a', 'a0000000-0000-0000-0000-00000000000a', 2, true);

SELECT results_eq(
    $$SELECT client_id::text, status FROM de_enrollment_health ORDER BY client_id$$,
    $$VALUES ('c0000000-0000-0000-0000-00000000000a', 'ok'),
             ('c0000000-0000-0000-0000-00000000000b', 'warning'),
             ('c0000000-0000-0000-0000-00000000000c', 'error')$$,
    'status by the SOP thresholds'
);
SELECT is(
    (SELECT stuck_leads FROM de_enrollment_health WHERE client_id = 'c0000000-0000-0000-0000-00000000000a'),
    1::bigint,
    'a finished active lead is a stuck lead'
);
SELECT results_eq(
    $$SELECT client_id::text FROM de_enrollment_health
       WHERE failed_runs_24h > 0 OR hours_since_success > 2 ORDER BY client_id$$,
    $$VALUES ('c0000000-0000-0000-0000-00000000000b'), ('c0000000-0000-0000-0000-00000000000c')$$,
    'the SOP''s morning query lists the failing and the stale client'
);
SELECT is_empty($$SELECT * FROM de_enrollment_duplicates$$, 'no duplicate de-enrollment');
SELECT is(
    (SELECT failed_runs + successful_runs FROM de_enrollment_daily_summary
      WHERE client_id = 'c0000000-0000-0000-0000-00000000000b' AND day = (now() - interval '5 minutes')::date),
    CASE WHEN (now() - interval '20 minutes')::date = (now() - interval '5 minutes')::date THEN 2::bigint ELSE 1::bigint END,
    'daily summary counts the day''s runs'
);

SELECT * FROM finish();
ROLLBACK;
