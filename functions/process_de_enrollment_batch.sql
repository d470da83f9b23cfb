-- process_de_enrollment_batch: de-enroll the given leads atomically for a run; returns what it did
-- requires: 0021_add_de_enrollment_monitoring
-- after: apply_campaign_stats_deltas
--
-- For each lead of p_lead_ids that is (still) due in a campaign of the run's client,
-- in one transaction (the caller's):
--   leads:                  is_active = false; completed_at = now() for outcome
--                           'completed' (unchanged, normally NULL, for 'opted_out');
--                           updated_at = now(); one entry appended to campaign_history:
--                           {campaign_id, campaign_name, outcome, completed_at,
--                            de_enrolled_at, messages_received, total_messages, run_id}
--   de_enrollment_lead_log: one row, action 'de_enrolled', with the outcome
--   campaigns:              counters adjusted (the leads triggers of 0020 record the
--                           change, apply_campaign_stats_deltas folds it right here)
--   de_enrollment_runs:     leads_evaluated (+ number of ids given), leads_de_enrolled,
--                           leads_completed, leads_opted_out, batches (+1)
-- Eligibility is checked again by the UPDATE itself, under the row lock (READ
-- COMMITTED re-evaluates the WHERE clause on the newest row version): a lead already
-- de-enrolled, or changed since it was claimed, is skipped, never processed twice.
-- The outcome rule is get_leads_for_de_enrollment's: finished sequence -> completed,
-- else opted out -> opted_out.
--
-- The runner claims and processes in one round trip, the claim locks held to commit:
--   SELECT * FROM process_de_enrollment_batch(run_id,
--          ARRAY(SELECT lead_id FROM get_leads_for_de_enrollment(client_id, batch_size)));
-- Set-based throughout: one UPDATE, one INSERT, one run-row UPDATE, one fold per batch.
CREATE FUNCTION process_de_enrollment_batch(p_run_id uuid, p_lead_ids uuid[])
RETURNS TABLE (
    lead_id           uuid,
    campaign_id       uuid,
    outcome           text,
    messages_received integer
)
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_client    uuid;
    v_status    text;
    v_leads     uuid[];
    v_campaigns uuid[];
    v_outcomes  text[];
    v_received  integer[];
BEGIN
    SELECT r.client_id, r.status INTO v_client, v_status
      FROM de_enrollment_runs AS r
     WHERE r.id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'de-enrollment run % does not exist', p_run_id
              USING ERRCODE = 'no_data_found';
    ELSIF v_status <> 'running' THEN
        RAISE EXCEPTION 'de-enrollment run % is %, not running', p_run_id, v_status
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    IF coalesce(cardinality(p_lead_ids), 0) = 0 THEN
        RETURN;
    END IF;

    WITH done AS (
        UPDATE leads AS l
           SET is_active        = false,
               completed_at     = CASE WHEN l.completed_at IS NULL AND l.current_message_position >= c.total
                                       THEN now() ELSE l.completed_at END,
               updated_at       = now(),
               campaign_history = l.campaign_history || jsonb_build_array(jsonb_build_object(
                   'campaign_id',       c.id,
                   'campaign_name',     c.name,
                   'outcome',           CASE WHEN l.completed_at IS NULL AND l.current_message_position >= c.total
                                             THEN 'completed' ELSE 'opted_out' END,
                   'completed_at',      CASE WHEN l.completed_at IS NULL AND l.current_message_position >= c.total
                                             THEN now() ELSE l.completed_at END,
                   'de_enrolled_at',    now(),
                   'messages_received', l.current_message_position,
                   'total_messages',    c.total,
                   'run_id',            p_run_id))
          FROM (SELECT cc.id, cc.name,
                       CASE WHEN jsonb_typeof(cc.messages) = 'array'
                            THEN jsonb_array_length(cc.messages) END AS total,
                       jsonb_build_array(jsonb_build_object('campaign_id', cc.id)) AS history_entry
                  FROM campaigns AS cc
                 WHERE cc.client_id = v_client) AS c
         WHERE l.id = ANY (p_lead_ids)
           AND l.campaign_link_id = c.id
           AND c.total IS NOT NULL
           AND l.is_active
           AND ((l.completed_at IS NULL AND l.current_message_position >= c.total) OR l.opted_out)
           AND NOT l.campaign_history @> c.history_entry
        RETURNING l.id, c.id AS campaign_id, l.campaign_history -> -1 ->> 'outcome' AS outcome,
                  l.current_message_position AS received, c.total
    ), logged AS (
        INSERT INTO de_enrollment_lead_log
               (run_id, lead_id, client_id, campaign_id, action, outcome, messages_received, total_messages)
        SELECT p_run_id, d.id, v_client, d.campaign_id, 'de_enrolled', d.outcome, d.received, d.total
          FROM done AS d
    ), counted AS (
        UPDATE de_enrollment_runs AS r
           SET leads_evaluated   = r.leads_evaluated + cardinality(p_lead_ids),
               leads_de_enrolled = r.leads_de_enrolled + s.n,
               leads_completed   = r.leads_completed + s.completed,
               leads_opted_out   = r.leads_opted_out + s.opted_out,
               batches           = r.batches + 1
          FROM (SELECT count(*)::integer AS n,
                       count(*) FILTER (WHERE d.outcome = 'completed')::integer AS completed,
                       count(*) FILTER (WHERE d.outcome = 'opted_out')::integer AS opted_out
                  FROM done AS d) AS s
         WHERE r.id = p_run_id
    )
    SELECT coalesce(array_agg(d.id), '{}'), coalesce(array_agg(d.campaign_id), '{}'),
           coalesce(array_agg(d.outcome), '{}'), coalesce(array_agg(d.received), '{}')
      INTO v_leads, v_campaigns, v_outcomes, v_received
      FROM done AS d;

    -- A separate statement: the leads triggers have appended their deltas by now.
    IF cardinality(v_campaigns) > 0 THEN
        PERFORM apply_campaign_stats_deltas(ARRAY(SELECT DISTINCT unnest(v_campaigns)));
    END IF;

    RETURN QUERY SELECT * FROM unnest(v_leads, v_campaigns, v_outcomes, v_received);
END
$fn$;

COMMENT ON FUNCTION process_de_enrollment_batch(uuid, uuid[]) IS
    'De-enrolls the given leads for a run in one transaction (lead, history entry, lead log, counters, run totals), re-checking eligibility under the row lock; returns what it did.';
