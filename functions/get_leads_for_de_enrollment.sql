-- get_leads_for_de_enrollment: claim (row-lock) up to p_batch_size of a client's leads that are due for de-enrollment
-- requires: 0021_add_de_enrollment_monitoring
--
-- A lead is due in its campaign (leads.campaign_link_id) when it is active and
--   completed: its sequence is finished: completed_at IS NULL AND
--              current_message_position >= jsonb_array_length(campaign.messages)
--              (SPEC §4; a finished lead is completed, opted out or not);
--   opted_out: it opted out and its sequence is not finished (a STOP never leaves a
--              lead active in a campaign).
-- Only campaigns whose messages is a JSON array take part; the others have no length
-- and are reported by de_enrollment_invalid_campaigns() instead of guessed at.
-- A lead whose campaign_history already holds an entry for the campaign is left out:
-- de-enrolling it again would break the one-entry-per-campaign constraint (and the
-- whole batch with it); such a lead stays visible in de_enrollment_stuck_leads.
--
-- The leads are locked FOR UPDATE SKIP LOCKED until the caller's transaction ends:
-- two runners never get the same lead and never wait for each other, and a lead the
-- platform is writing right now is simply left for the next batch.
--
-- Cost follows the due leads, not the table: for each of the client's campaigns (in
-- id order) a LATERAL subquery range-scans the partial indexes of 0019,
-- de_enrollment_leads_opted_out_idx (campaign_link_id) WHERE is_active AND opted_out and
-- de_enrollment_leads_candidates_idx (campaign_link_id, current_message_position)
-- WHERE is_active AND completed_at IS NULL, from position = length of the sequence
-- upwards. Opted-out leads are claimed first (compliance before bookkeeping), then
-- finished ones fill the rest of the batch.
-- The planner cannot know a campaign's sequence length when it plans, so it may
-- guess that a third of a big campaign's leads qualify and pick a sequential scan
-- of leads (cheap on average, a full table scan per batch when few qualify): the
-- SET clauses below rule that out. Plain index scans rather than bitmap scans also
-- stop at the batch size and mark the index entries of leads already de-enrolled
-- as dead, so later batches do not step over them again.
CREATE FUNCTION get_leads_for_de_enrollment(p_client_id uuid, p_batch_size integer DEFAULT 100)
RETURNS TABLE (
    lead_id                  uuid,
    campaign_id              uuid,
    client_id                uuid,
    current_message_position integer,
    total_messages           integer,
    reason                   text
)
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $fn$
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'batch size must be a positive integer, got %', p_batch_size
              USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- One statement: the outer LIMIT stops pulling rows once the batch is full, and
    -- UNION ALL runs its branches in order, so the finished leads are only looked
    -- for when the opted-out ones do not fill the batch. A row is locked when it
    -- is pulled, so exactly the rows returned are locked. (The locking subqueries
    -- sit one level down: FOR UPDATE is not allowed directly in a UNION branch.)
    RETURN QUERY
    WITH c AS MATERIALIZED (
        SELECT cc.id, cc.client_id, jsonb_array_length(cc.messages) AS total,
               jsonb_build_array(jsonb_build_object('campaign_id', cc.id)) AS history_entry
          FROM campaigns AS cc
         WHERE cc.client_id = p_client_id
           AND jsonb_typeof(cc.messages) = 'array'
         ORDER BY cc.id
    )
    SELECT due.* FROM (
        SELECT l.id, c.id, c.client_id, l.current_message_position, c.total, 'opted_out'::text
          FROM c
         CROSS JOIN LATERAL (
               SELECT ll.id, ll.current_message_position
                 FROM leads AS ll
                WHERE ll.campaign_link_id = c.id
                  AND ll.is_active
                  AND ll.opted_out
                  AND NOT (ll.completed_at IS NULL AND ll.current_message_position >= c.total)
                  AND NOT ll.campaign_history @> c.history_entry
                LIMIT p_batch_size
                  FOR UPDATE OF ll SKIP LOCKED) AS l
        UNION ALL
        SELECT l.id, c.id, c.client_id, l.current_message_position, c.total, 'completed'::text
          FROM c
         CROSS JOIN LATERAL (
               SELECT ll.id, ll.current_message_position
                 FROM leads AS ll
                WHERE ll.campaign_link_id = c.id
                  AND ll.is_active
                  AND ll.completed_at IS NULL
                  AND ll.current_message_position >= c.total
                  AND NOT ll.campaign_history @> c.history_entry
                LIMIT p_batch_size
                  FOR UPDATE OF ll SKIP LOCKED) AS l
    ) AS due
    LIMIT p_batch_size;
END
$fn$;

COMMENT ON FUNCTION get_leads_for_de_enrollment(uuid, integer) IS
    'Claims (FOR UPDATE SKIP LOCKED) up to p_batch_size leads of a client due for de-enrollment: reason completed (sequence finished) or opted_out.';
