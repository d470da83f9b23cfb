-- pgTAP: the engine's functions exist with their signatures and return columns, the SOP's
-- two functions claim and de-enroll exactly the right leads of a small fixture, the rule for
-- "due" gives the documented outcome for dirty rows, and a lead the database refuses is held
-- (with its reason) while the rest of its batch is de-enrolled.
BEGIN;
SELECT plan(49);

SELECT has_function('get_leads_for_de_enrollment', ARRAY['uuid', 'integer']);
SELECT has_function('process_de_enrollment_batch', ARRAY['uuid', 'uuid[]']);
SELECT has_function('apply_campaign_stats_deltas', ARRAY['uuid[]']);
SELECT has_function('recalculate_campaign_stats', ARRAY['uuid']);
SELECT has_function('start_de_enrollment_run', ARRAY['uuid', 'integer', 'integer', 'text', 'integer', 'integer', 'integer']);
SELECT has_function('finish_de_enrollment_run', ARRAY['uuid', 'text', 'text']);
SELECT has_function('de_enrollment_clients', '{}'::name[]);
SELECT has_function('de_enrollment_invalid_campaigns', ARRAY['uuid']);
SELECT has_function('count_leads_for_de_enrollment', ARRAY['uuid']);
SELECT has_function('de_enrollment_due_outcome', ARRAY['boolean', 'timestamp with time zone', 'boolean', 'integer', 'uuid', 'jsonb']);
SELECT has_function('de_enrollment_lead_fingerprint', ARRAY['xid', 'uuid', 'jsonb']);
SELECT has_function('de_enrollment_held_leads', ARRAY['uuid']);
SELECT has_function('de_enrollment_release_held_leads', ARRAY['uuid', 'uuid[]']);
SELECT function_returns('start_de_enrollment_run', ARRAY['uuid', 'integer', 'integer', 'text', 'integer', 'integer', 'integer'], 'uuid');
SELECT function_returns('apply_campaign_stats_deltas', ARRAY['uuid[]'], 'integer');
SELECT function_returns('de_enrollment_due_outcome', ARRAY['boolean', 'timestamp with time zone', 'boolean', 'integer', 'uuid', 'jsonb'], 'text');
SELECT function_returns('de_enrollment_release_held_leads', ARRAY['uuid', 'uuid[]'], 'integer');
SELECT is(
    (SELECT proargnames::text FROM pg_proc WHERE oid = 'process_de_enrollment_batch(uuid, uuid[])'::regprocedure),
    '{p_run_id,p_lead_ids,lead_id,campaign_id,outcome,messages_received,held_reason}',
    'process_de_enrollment_batch returns lead_id, campaign_id, outcome, messages_received, held_reason'
);
SELECT is(
    (SELECT proargnames::text FROM pg_proc WHERE oid = 'de_enrollment_invalid_campaigns(uuid)'::regprocedure),
    '{p_client_id,client_id,campaign_id,campaign_name,messages_type,active_leads,campaign_client_id}',
    'de_enrollment_invalid_campaigns names the campaign''s own client too'
);

-- The rule for "due" on dirty rows: (is_active, completed_at, opted_out, position, campaign, messages).
SELECT results_eq(
    $$SELECT de_enrollment_due_outcome(a, c, o, p, k, m::jsonb)
        FROM (VALUES (1, true,  NULL::timestamptz, false, 2,    gen_random_uuid(), '[1, 2]'),
                     (2, true,  NULL,              true,  2,    gen_random_uuid(), '[1, 2]'),
                     (3, true,  NULL,              true,  NULL, gen_random_uuid(), '[1, 2]'),
                     (4, true,  NULL,              false, NULL, gen_random_uuid(), '[1, 2]'),
                     (5, true,  NULL,              false, 0,    gen_random_uuid(), '[]'),
                     (6, true,  NULL,              true,  0,    gen_random_uuid(), '[]'),
                     (7, true,  NULL,              false, 9,    gen_random_uuid(), '{"a": 1}'),
                     (8, true,  NULL,              true,  9,    gen_random_uuid(), '"text"'),
                     (9, NULL,  NULL,              true,  2,    gen_random_uuid(), '[1, 2]'),
                     (10, true, NULL,              NULL,  1,    gen_random_uuid(), '[1, 2]'),
                     (11, true, now(),             false, 2,    gen_random_uuid(), '[1, 2]'),
                     (12, true, now(),             true,  2,    gen_random_uuid(), '[1, 2]'),
                     (13, true, NULL,              true,  2,    NULL,              NULL),
                     (14, false, NULL,             true,  2,    gen_random_uuid(), '[1, 2]'))
             AS t (n, a, c, o, p, k, m)
       ORDER BY n$$,
    $$VALUES ('completed'::text), ('completed'), ('opted_out'), (NULL), (NULL), ('opted_out'), (NULL), ('opted_out'),
             (NULL), (NULL), (NULL), ('opted_out'), (NULL), (NULL)$$,
    'due: finished a non-empty sequence, or an active STOP whatever else is wrong; drafts and malformed sequences finish nobody'
);

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
    $$SELECT lead_id, campaign_id, outcome, messages_received, held_reason
        FROM process_de_enrollment_batch((SELECT id FROM t_run),
             ARRAY(SELECT lead_id FROM get_leads_for_de_enrollment('c0000000-0000-4000-8000-000000000001', 10)))
       ORDER BY lead_id$$,
    $$VALUES ('a0000000-0000-4000-8000-000000000001'::uuid, '11111111-1111-4111-8111-111111111111'::uuid,
              'completed'::text, 2, NULL::text),
             ('a0000000-0000-4000-8000-000000000002'::uuid, '11111111-1111-4111-8111-111111111111'::uuid,
              'opted_out'::text, 1, NULL::text)$$,
    'process_de_enrollment_batch de-enrolls both, with their outcome and no held reason'
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
SELECT ok(
    (SELECT count(*) FROM campaign_stats_delta WHERE campaign_id = '11111111-1111-4111-8111-111111111111') > 0,
    'the batch leaves its counter changes as deltas for the client''s fold'
);
SELECT ok(apply_client_stats_deltas('c0000000-0000-4000-8000-000000000001') > 0, 'the client''s fold takes them');
SELECT results_eq(
    $$SELECT active_leads_count, completed_leads_count, opted_out_count, booked_count
        FROM campaigns WHERE id = '11111111-1111-4111-8111-111111111111'$$,
    $$VALUES (1, 1, 1, 0)$$,
    'after the fold the campaign counters are exact, in the same transaction'
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

-- A lead the platform refuses to let go (its trigger raises) is held with its reason; the
-- rest of the batch is de-enrolled, and the run's row counts it.
CREATE FUNCTION pg_temp.refuse_lead() RETURNS trigger LANGUAGE plpgsql AS $t$
BEGIN
    IF NEW.id = 'a0000000-0000-4000-8000-000000000005' AND NOT NEW.is_active THEN
        RAISE EXCEPTION 'lead 5 is locked by the platform';
    END IF;
    RETURN NEW;
END $t$;
CREATE TRIGGER refuse_lead BEFORE UPDATE ON leads FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_lead();
INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, opted_out, is_active) VALUES
    ('a0000000-0000-4000-8000-000000000005', 'c0000000-0000-4000-8000-000000000001', '11111111-1111-4111-8111-111111111111', 2, false, true),
    ('a0000000-0000-4000-8000-000000000006', 'c0000000-0000-4000-8000-000000000001', '11111111-1111-4111-8111-111111111111', 2, false, true);
CREATE TEMP TABLE t_run2 AS
SELECT start_de_enrollment_run('c0000000-0000-4000-8000-000000000001', 10, 60000, 'pgtap', 1) AS id;
SELECT results_eq(
    $$SELECT lead_id, outcome, held_reason
        FROM process_de_enrollment_batch((SELECT id FROM t_run2),
             ARRAY['a0000000-0000-4000-8000-000000000005', 'a0000000-0000-4000-8000-000000000006']::uuid[])
       ORDER BY lead_id$$,
    $$VALUES ('a0000000-0000-4000-8000-000000000005'::uuid, 'held'::text, 'refused_by_trigger'::text),
             ('a0000000-0000-4000-8000-000000000006'::uuid, 'completed'::text, NULL::text)$$,
    'a refused lead is held with its reason, the rest of the batch is de-enrolled'
);
SELECT results_eq(
    $$SELECT leads_de_enrolled, leads_held FROM de_enrollment_runs WHERE id = (SELECT id FROM t_run2)$$,
    $$VALUES (1, 1)$$,
    'the run row counts the de-enrolled lead and the held one'
);
SELECT results_eq(
    $$SELECT lead_id, outcome, reason, error_message FROM de_enrollment_held_leads('c0000000-0000-4000-8000-000000000001')$$,
    $$VALUES ('a0000000-0000-4000-8000-000000000005'::uuid, 'completed'::text, 'refused_by_trigger'::text,
              'lead 5 is locked by the platform'::text)$$,
    'de_enrollment_held_leads lists it with the database''s error'
);
SELECT is_empty(
    $$SELECT * FROM get_leads_for_de_enrollment('c0000000-0000-4000-8000-000000000001', 10)$$,
    'a held lead is not claimed again while it is unchanged'
);
SELECT is(
    (SELECT reason FROM de_enrollment_stuck_leads WHERE lead_id = 'a0000000-0000-4000-8000-000000000005'),
    'held:refused_by_trigger', 'the stuck view gives the held reason'
);
SELECT is(de_enrollment_release_held_leads('c0000000-0000-4000-8000-000000000001'), 1, 'releasing forgets it');
SELECT results_eq(
    $$SELECT lead_id FROM get_leads_for_de_enrollment('c0000000-0000-4000-8000-000000000001', 10)$$,
    $$VALUES ('a0000000-0000-4000-8000-000000000005'::uuid)$$,
    'a released lead is claimed again'
);
SELECT is(
    (SELECT status FROM finish_de_enrollment_run((SELECT id FROM t_run2), 'success')),
    'success', 'a run that held a lead still succeeds'
);

-- A campaign whose messages is not an array is reported under the leads' own client, with the campaign's.
INSERT INTO campaigns (id, client_id, name, messages) VALUES
    ('22222222-2222-4222-8222-222222222222', 'c0000000-0000-4000-8000-000000000002', 'Broken', '{"not": "an array"}');
INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, opted_out, is_active) VALUES
    ('a0000000-0000-4000-8000-000000000007', 'c0000000-0000-4000-8000-000000000001', '22222222-2222-4222-8222-222222222222', 1, false, true);
SELECT results_eq(
    $$SELECT client_id, campaign_id, messages_type, active_leads, campaign_client_id
        FROM de_enrollment_invalid_campaigns('c0000000-0000-4000-8000-000000000001')$$,
    $$VALUES ('c0000000-0000-4000-8000-000000000001'::uuid, '22222222-2222-4222-8222-222222222222'::uuid,
              'object'::text, 1::bigint, 'c0000000-0000-4000-8000-000000000002'::uuid)$$,
    'de_enrollment_invalid_campaigns: the leads'' client, the campaign''s client'
);

SELECT * FROM finish();
ROLLBACK;
