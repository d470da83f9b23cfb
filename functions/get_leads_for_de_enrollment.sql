-- get_leads_for_de_enrollment: claim (row-lock) up to p_batch_size of a client's leads that are due for de-enrollment
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_due_outcome, de_enrollment_lead_fingerprint
--
-- The client's leads are those whose own leads.client_id is p_client_id, in whatever
-- campaign they are linked to (the client's, another client's, or one without a client).
-- Due means de_enrollment_due_outcome(...) is not NULL; reason is its outcome:
--   completed  finished a non-empty sequence (opted out or not);
--   opted_out  opted out, not finished (a STOP is honoured in any campaign state).
-- A lead held by an earlier batch (deenroll.held_leads) is left out while its fingerprint
-- (de_enrollment_lead_fingerprint: row version, campaign sequence) is unchanged: it is not
-- retried at full cost on every run, and is retried as soon as the data changes.
--
-- The leads are locked FOR UPDATE SKIP LOCKED until the caller's transaction ends: two
-- runners never get the same lead and never wait for each other, and a lead the platform
-- is writing right now is simply left for the next batch.
--
-- Cost follows the due leads, not the table. Opted-out leads first (compliance before
-- bookkeeping): a range of de_enrollment_leads_client_opted_out_idx (client_id) WHERE
-- is_active AND opted_out. Then finished ones, campaign by campaign: the campaigns holding
-- the client's active, not completed leads are read off
-- de_enrollment_leads_client_candidates_idx (client_id, campaign_link_id, position) by a
-- loose index scan (one probe per campaign), and each campaign's finished leads are the
-- range position >= length of its sequence in the same index. The extra predicates next to
-- de_enrollment_due_outcome() are implied by it and are there for the indexes.
-- The SET clauses rule out sequential and bitmap scans: the planner cannot know a
-- sequence's length when it plans, and plain index scans stop at the batch size.
CREATE FUNCTION public.get_leads_for_de_enrollment(p_client_id uuid, p_batch_size integer DEFAULT 100)
RETURNS TABLE (
    lead_id                  uuid,
    campaign_id              uuid,
    client_id                uuid,
    current_message_position integer,
    total_messages           integer,
    reason                   text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $fn$
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'batch size must be a positive integer, got %', p_batch_size
              USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- One statement: the outer LIMIT stops pulling rows once the batch is full, and UNION
    -- ALL runs its branches in order, so finished leads are only looked for when the
    -- opted-out ones do not fill the batch. A row is locked when it is pulled, so exactly
    -- the rows returned are locked.
    RETURN QUERY
    WITH RECURSIVE k AS (
        SELECT (SELECT l.campaign_link_id
                  FROM public.leads AS l
                 WHERE l.client_id = p_client_id AND l.is_active AND l.completed_at IS NULL
                   AND l.campaign_link_id IS NOT NULL
                 ORDER BY l.campaign_link_id LIMIT 1) AS id
        UNION ALL
        SELECT (SELECT l.campaign_link_id
                  FROM public.leads AS l
                 WHERE l.client_id = p_client_id AND l.is_active AND l.completed_at IS NULL
                   AND l.campaign_link_id > k.id
                 ORDER BY l.campaign_link_id LIMIT 1)
          FROM k
         WHERE k.id IS NOT NULL
    ), c AS MATERIALIZED (
        SELECT x.id, x.messages, x.total
          FROM (SELECT cc.id, cc.messages,
                       CASE WHEN jsonb_typeof(cc.messages) = 'array'
                            THEN nullif(jsonb_array_length(cc.messages), 0) END AS total
                  FROM k
                  JOIN public.campaigns AS cc ON cc.id = k.id) AS x
         WHERE x.total IS NOT NULL
         ORDER BY x.id
    )
    SELECT due.* FROM (
        SELECT o.id, o.campaign_link_id, o.client_id, o.current_message_position, o.total, o.outcome
          FROM (SELECT ll.id, ll.campaign_link_id, ll.client_id, ll.current_message_position,
                       CASE WHEN jsonb_typeof(cc.messages) = 'array' THEN jsonb_array_length(cc.messages) END AS total,
                       public.de_enrollment_due_outcome(ll.is_active, ll.completed_at, ll.opted_out,
                                                        ll.current_message_position, cc.id, cc.messages) AS outcome
                  FROM public.leads AS ll
                  LEFT JOIN public.campaigns AS cc ON cc.id = ll.campaign_link_id
                 WHERE ll.client_id = p_client_id
                   AND ll.is_active
                   AND ll.opted_out
                   AND public.de_enrollment_due_outcome(ll.is_active, ll.completed_at, ll.opted_out,
                                                        ll.current_message_position, cc.id, cc.messages) IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM deenroll.held_leads AS h
                                    WHERE h.lead_id = ll.id
                                      AND h.fingerprint = public.de_enrollment_lead_fingerprint(ll.xmin, cc.id, cc.messages))
                 LIMIT p_batch_size
                   FOR UPDATE OF ll SKIP LOCKED) AS o
        UNION ALL
        SELECT f.id, c.id, f.client_id, f.current_message_position, c.total, 'completed'::text
          FROM c
         CROSS JOIN LATERAL (
               SELECT ll.id, ll.client_id, ll.current_message_position
                 FROM public.leads AS ll
                WHERE ll.client_id = p_client_id
                  AND ll.campaign_link_id = c.id
                  AND ll.is_active
                  AND ll.completed_at IS NULL
                  AND ll.current_message_position >= c.total
                  AND ll.opted_out IS NOT TRUE
                  AND public.de_enrollment_due_outcome(ll.is_active, ll.completed_at, ll.opted_out,
                                                       ll.current_message_position, c.id, c.messages) = 'completed'
                  AND NOT EXISTS (SELECT 1 FROM deenroll.held_leads AS h
                                   WHERE h.lead_id = ll.id
                                     AND h.fingerprint = public.de_enrollment_lead_fingerprint(ll.xmin, c.id, c.messages))
                LIMIT p_batch_size
                  FOR UPDATE OF ll SKIP LOCKED) AS f
    ) AS due
    LIMIT p_batch_size;
END
$fn$;

COMMENT ON FUNCTION public.get_leads_for_de_enrollment(uuid, integer) IS
    'Claims (FOR UPDATE SKIP LOCKED) up to p_batch_size leads of a client (leads.client_id) due for de-enrollment, held ones left out: reason completed or opted_out.';
