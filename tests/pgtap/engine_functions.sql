-- pgTAP: the engine's functions exist with their signatures, and the SOP's two
-- functions claim and de-enroll exactly the right leads of a small fixture.
BEGIN;
SELECT plan(29);

SELECT has_function('get_leads_for_de_enrollment', ARRAY['uuid', 'integer']);
SELECT has_function('process_de_enrollment_batch', ARRAY['uuid', 'uuid[]']);
SELECT has_function('apply_campaign_stats_deltas', ARRAY['uuid[]']);
SELECT has_function('recalculate_campaign_stats', ARRAY['uuid']);
SELECT has_function('start_de_enrollment_run', ARRAY['uuid', 'integer', 'integer', 'text', 'integer']);
SELECT has_function('finish_de_enrollment_run', ARRAY['uuid', 'text', 'text']);
SELECT has_function('de_enrollment_clients', '{}'::name[]);
SELECT has_function('de_enrollment_invalid_campaigns', ARRAY['uuid']);
SELECT has_function('count_leads_for_de_enrollment', ARRAY['uuid']);
SELECT function_returns('start_de_enrollment_run', ARRAY['uuid', 'integer', 'integer', 'text', 'integer'], 'uuid');
SELECT function_returns('apply_campaign_stats_deltas', ARRAY['uuid[]'], 'integer');

-- Fixture: one client, a two-message campaign, four leads.
INSERT INTO campaigns (id, client_id, name, messages) VALUES
    ('11111111-1111-4111-8111-111111111111', 'c0000000-0000-4000-8000-000000000001', 'Welcome', '["hi", "follow up"]');
INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, opted_out, is_active) VALUES
    ('a0000000-0000-4000-8000-000000000001', 'c0000000-0000-4000-8000-000000000001', '11111111-1111-4111-8111-111111111111', 2, false, true),
    ('a0000000-0000-4000-8000-000000000002', 'c0000000-0000-4000-8000-000000000001', '11111111-1111-4111-8111-111111111111', 1, true, true),
    ('a0000000-0000-4000-8000-000000000003', 'c0000000-0000-4000-8000-000000000001', '11111111-1111-4111-8111-111111111111', 1, false, true),
    ('a0000000-0000-4000-8000-000000000004', 'c0000000-0000-4000-8000-000000000001', '11111111-1111-4111-8111-111111111111', 2, false, false);

SELECT results_eq(
    $$SELECT lead_id, reason, current_message_position, total_messages
        FROM get_leads_for_de_enrollment('c0000000-0000-4000-8000-000000000001', 10) ORDER BY lead_id$$,
    $$VALUES ('a0000000-0000-4000-8000-000000000001'::uuid, 'completed'::text, 2, 2),
             ('a0000000-0000-4000-8000-000000000002'::uuid, 'opted_out'::text, 1, 2)$$,
    'get_leads_for_de_enrollment claims the finished lead and the opted-out one, nothing else'
);
SELECT is(
    (SELECT count(*)::integer FROM get_leads_for_de_enrollment('c0000000-0000-4000-8000-000000000001', 1)),
    1, 'the batch size caps the claim'
);
SELECT throws_ok(
    $$SELECT * FROM get_leads_for_de_enrollment('c0000000-0000-4000-8000-000000000001', 0)$$,
    '22023', NULL, 'a batch size of 0 is refused'
);

CREATE TEMP TABLE t_run AS
SELECT start_de_enrollment_run('c0000000-0000-4000-8000-000000000001', 10, 60000, 'pgtap', 1) AS id;
SELECT isnt((SELECT id FROM t_run), NULL, 'start_de_enrollment_run opens a run');

SELECT results_eq(
    $$SELECT lead_id, outcome, messages_received
        FROM process_de_enrollment_batch((SELECT id FROM t_run),
             ARRAY(SELECT lead_id FROM get_leads_for_de_enrollment('c0000000-0000-4000-8000-000000000001', 10)))
       ORDER BY lead_id$$,
    $$VALUES ('a0000000-0000-4000-8000-000000000001'::uuid, 'completed'::text, 2),
             ('a0000000-0000-4000-8000-000000000002'::uuid, 'opted_out'::text, 1)$$,
    'process_de_enrollment_batch de-enrolls both, with their outcome'
);
SELECT results_eq(
    $$SELECT id, is_active, completed_at IS NOT NULL FROM leads ORDER BY id$$,
    $$VALUES ('a0000000-0000-4000-8000-000000000001'::uuid, false, true),
             ('a0000000-0000-4000-8000-000000000002'::uuid, false, false),
             ('a0000000-0000-4000-8000-000000000003'::uuid, true, false),
             ('a0000000-0000-4000-8000-000000000004'::uuid, false, false)$$,
    'completed leads get completed_at, opted-out ones stay without, the others are untouched'
);
SELECT is(
    (SELECT campaign_history -> 0 ->> 'outcome' FROM leads WHERE id = 'a0000000-0000-4000-8000-000000000002'),
    'opted_out', 'the history entry says why'
);
SELECT is(
    (SELECT campaign_history -> 0 ->> 'campaign_name' FROM leads WHERE id = 'a0000000-0000-4000-8000-000000000001'),
    'Welcome', 'the history entry names the campaign'
);
SELECT is(
    (SELECT (campaign_history -> 0 ->> 'run_id')::uuid FROM leads WHERE id = 'a0000000-0000-4000-8000-000000000001'),
    (SELECT id FROM t_run), 'the history entry names the run'
);
SELECT is(
    (SELECT jsonb_array_length(campaign_history) FROM leads WHERE id = 'a0000000-0000-4000-8000-000000000003'),
    0, 'an untouched lead has no history entry'
);
SELECT results_eq(
    $$SELECT lead_id, campaign_id, action, outcome, messages_received, total_messages
        FROM de_enrollment_lead_log ORDER BY lead_id$$,
    $$VALUES ('a0000000-0000-4000-8000-000000000001'::uuid, '11111111-1111-4111-8111-111111111111'::uuid,
              'de_enrolled'::text, 'completed'::text, 2, 2),
             ('a0000000-0000-4000-8000-000000000002'::uuid, '11111111-1111-4111-8111-111111111111'::uuid,
              'de_enrolled'::text, 'opted_out'::text, 1, 2)$$,
    'one lead-log row per de-enrolled lead'
);
SELECT results_eq(
    $$SELECT leads_evaluated, leads_de_enrolled, leads_completed, leads_opted_out, batches
        FROM de_enrollment_runs WHERE id = (SELECT id FROM t_run)$$,
    $$VALUES (2, 2, 1, 1, 1)$$,
    'the run row counts the batch'
);
SELECT results_eq(
    $$SELECT active_leads_count, completed_leads_count, opted_out_count, booked_count
        FROM campaigns WHERE id = '11111111-1111-4111-8111-111111111111'$$,
    $$VALUES (1, 1, 1, 0)$$,
    'the campaign counters are exact in the same transaction'
);
SELECT is_empty(
    $$SELECT * FROM get_leads_for_de_enrollment('c0000000-0000-4000-8000-000000000001', 10)$$,
    'nothing is left to claim'
);
SELECT is_empty(
    $$SELECT * FROM process_de_enrollment_batch((SELECT id FROM t_run),
             ARRAY['a0000000-0000-4000-8000-000000000001', 'a0000000-0000-4000-8000-000000000003']::uuid[])$$,
    'processing a done lead or a lead not due does nothing'
);
SELECT is((SELECT count(*)::integer FROM de_enrollment_lead_log), 2, 'still exactly two log rows');

SELECT is(
    (SELECT status FROM finish_de_enrollment_run((SELECT id FROM t_run), 'success')),
    'success', 'finish_de_enrollment_run closes the run'
);
SELECT is_empty(
    $$SELECT * FROM recalculate_campaign_stats('c0000000-0000-4000-8000-000000000001')$$,
    'a recount finds nothing to repair'
);

SELECT * FROM finish();
ROLLBACK;
