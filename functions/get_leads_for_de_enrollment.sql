-- get_leads_for_de_enrollment: claim (row-lock) up to p_batch_size of a client's leads that are due for de-enrollment
-- requires: 0027_track_due_campaigns
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
-- Cost follows the due leads and the campaigns that hold them, not the table nor the number
-- of campaigns. Opted-out leads first (compliance before bookkeeping): a range of
-- de_enrollment_leads_client_opted_out_idx (client_id) WHERE is_active AND opted_out. Then
-- finished ones, only in the campaigns deenroll.due_campaigns marks for this client (see
-- migration 0027: the statement that finishes a lead marks its campaign), each one the range
-- position >= length of its sequence in de_enrollment_leads_client_candidates_idx.
-- Marks are kept exact, without locks, by three rules:
--   * a mark is removed only by one statement that sees, in its own snapshot, no finished
--     lead of the client in the campaign (held and locked ones count as there): the change
--     that added a mark is in the same snapshot as the mark, so a mark is never removed
--     before the lead it stands for can be seen;
--   * the campaigns looked into and found empty lose their marks after the claim, so a run
--     looks into each finished campaign once;
--   * a sequence edit (a mark without a client) is looked into for every client, and is
--     settled into per-client marks only when every transaction that may have judged a lead
--     by the old sequence has ended: first stamped with the next transaction id of a
--     snapshot that sees the edit, then settled by a statement whose oldest running
--     transaction is past that stamp. Rows other runners have locked are skipped.
-- The extra predicates next to de_enrollment_due_outcome() are implied by it and are there
-- for the indexes. The SET clauses rule out sequential and bitmap scans: the planner cannot
-- know a sequence's length when it plans, and plain index scans stop at the batch size.
-- Its statements run on generic plans (plan_cache_mode): planned once per session, not
-- once per batch; every one of them is index-driven whatever the parameters.
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
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $fn$
DECLARE
    v_campaigns uuid[];
    v_lead      uuid[];
    v_campaign  uuid[];
    v_client    uuid[];
    v_position  integer[];
    v_total     integer[];
    v_reason    text[];
    v_ord       bigint[];
    v_reached   bigint;
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'batch size must be a positive integer, got %', p_batch_size
              USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Sequence edits: stamp the ones seen committed for the first time, ...
    UPDATE deenroll.due_campaigns AS m
       SET settle_after = pg_snapshot_xmax(pg_current_snapshot())
      FROM (SELECT e.ctid AS row_id
              FROM deenroll.due_campaigns AS e
             WHERE e.client_id IS NULL AND e.settle_after IS NULL
               FOR UPDATE SKIP LOCKED) AS x
     WHERE m.ctid = x.row_id;
    -- ... and settle the ones no running transaction can still have judged by the old sequence:
    -- one mark per client with finished leads in the campaign now.
    WITH settled AS (
        DELETE FROM deenroll.due_campaigns AS m
         USING (SELECT e.ctid AS row_id
                  FROM deenroll.due_campaigns AS e
                 WHERE e.client_id IS NULL
                   AND e.settle_after <= pg_snapshot_xmin(pg_current_snapshot())
                   FOR UPDATE SKIP LOCKED) AS x
         WHERE m.ctid = x.row_id
        RETURNING m.campaign_id
    )
    INSERT INTO deenroll.due_campaigns (client_id, campaign_id)
    SELECT DISTINCT l.client_id, c.id
      FROM (SELECT DISTINCT s.campaign_id FROM settled AS s) AS s
      JOIN public.campaigns AS c ON c.id = s.campaign_id
     CROSS JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(c.messages) = 'array'
                                     THEN nullif(jsonb_array_length(c.messages), 0) END AS total) AS t
     CROSS JOIN LATERAL (SELECT ll.client_id, ll.is_active, ll.completed_at, ll.opted_out, ll.current_message_position
                           FROM public.leads AS ll
                          WHERE ll.campaign_link_id = c.id
                            AND ll.is_active
                            AND ll.completed_at IS NULL
                            AND ll.current_message_position >= t.total
                         OFFSET 0) AS l
     WHERE l.client_id IS NOT NULL
       AND l.opted_out IS NOT TRUE
       AND public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                            l.current_message_position, c.id, c.messages) = 'completed';

    -- The campaigns to look into: marked for this client (a loose scan: one probe per
    -- campaign, however many marks it has), or edited and not settled yet.
    v_campaigns := ARRAY(
        WITH RECURSIVE k AS (
            SELECT (SELECT m.campaign_id FROM deenroll.due_campaigns AS m
                     WHERE m.client_id = p_client_id
                     ORDER BY m.campaign_id LIMIT 1) AS id
            UNION ALL
            SELECT (SELECT m.campaign_id FROM deenroll.due_campaigns AS m
                     WHERE m.client_id = p_client_id AND m.campaign_id > k.id
                     ORDER BY m.campaign_id LIMIT 1)
              FROM k
             WHERE k.id IS NOT NULL
        )
        SELECT x.id
          FROM (SELECT k.id FROM k WHERE k.id IS NOT NULL
                UNION
                SELECT m.campaign_id FROM deenroll.due_campaigns AS m WHERE m.client_id IS NULL) AS x
         ORDER BY x.id);

    -- One statement: the outer LIMIT stops pulling rows once the batch is full, and UNION
    -- ALL runs its branches in order, so finished leads are only looked for when the
    -- opted-out ones do not fill the batch, campaign after campaign. A row is locked when it
    -- is pulled, so exactly the rows returned are locked.
    SELECT array_agg(due.id), array_agg(due.campaign_id), array_agg(due.client_id),
           array_agg(due.current_message_position), array_agg(due.total), array_agg(due.outcome),
           array_agg(due.ord)
      INTO v_lead, v_campaign, v_client, v_position, v_total, v_reason, v_ord
      FROM (
        SELECT o.id, o.campaign_link_id AS campaign_id, o.client_id, o.current_message_position, o.total,
               o.outcome, NULL::bigint AS ord
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
        SELECT f.id, c.id, f.client_id, f.current_message_position, c.total, 'completed'::text, c.ord
          FROM (SELECT x.id, x.messages, x.total, x.ord
                  FROM (SELECT cc.id, cc.messages, u.ord,
                               CASE WHEN jsonb_typeof(cc.messages) = 'array'
                                    THEN nullif(jsonb_array_length(cc.messages), 0) END AS total
                          FROM unnest(v_campaigns) WITH ORDINALITY AS u (id, ord)
                          JOIN public.campaigns AS cc ON cc.id = u.id) AS x
                 WHERE x.total IS NOT NULL
                 ORDER BY x.ord) AS c
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
        LIMIT p_batch_size) AS due;

    -- The campaigns this claim looked into: all of them when the batch is not full, else
    -- those up to the last one it took leads from. The marks of those that gave no lead go
    -- when, in this statement's snapshot, they hold no finished lead of the client at all.
    IF coalesce(cardinality(v_lead), 0) < p_batch_size THEN
        v_reached := cardinality(v_campaigns);
    ELSE
        v_reached := (SELECT max(o) FROM unnest(v_ord) AS o);
    END IF;
    IF coalesce(v_reached, 0) > 0 THEN
        DELETE FROM deenroll.due_campaigns AS m
         USING (SELECT e.ctid AS row_id
                  FROM deenroll.due_campaigns AS e
                 WHERE e.client_id = p_client_id
                   AND e.campaign_id = ANY (v_campaigns[1:v_reached])
                   AND e.campaign_id <> ALL (coalesce(v_campaign, '{}'))  -- it gave leads: not empty
                   AND NOT EXISTS (
                       SELECT 1
                         FROM (SELECT c.id, c.messages,
                                      CASE WHEN jsonb_typeof(c.messages) = 'array'
                                           THEN nullif(jsonb_array_length(c.messages), 0) END AS total
                                 FROM public.campaigns AS c
                                WHERE c.id = e.campaign_id
                               OFFSET 0) AS c
                        CROSS JOIN LATERAL (
                              SELECT 1
                                FROM public.leads AS ll
                               WHERE ll.client_id = p_client_id
                                 AND ll.campaign_link_id = c.id
                                 AND ll.is_active
                                 AND ll.completed_at IS NULL
                                 AND ll.current_message_position >= c.total
                                 AND ll.opted_out IS NOT TRUE
                                 AND public.de_enrollment_due_outcome(ll.is_active, ll.completed_at, ll.opted_out,
                                                                      ll.current_message_position, c.id, c.messages) = 'completed'
                               LIMIT 1) AS d)
                   FOR UPDATE OF e SKIP LOCKED) AS x
         WHERE m.ctid = x.row_id;
    END IF;

    RETURN QUERY
        SELECT x.lead_id, x.campaign_id, x.client_id, x.position, x.total, x.reason
          FROM unnest(v_lead, v_campaign, v_client, v_position, v_total, v_reason)
               AS x (lead_id, campaign_id, client_id, position, total, reason);
END
$fn$;

COMMENT ON FUNCTION public.get_leads_for_de_enrollment(uuid, integer) IS
    'Claims (FOR UPDATE SKIP LOCKED) up to p_batch_size leads of a client (leads.client_id) due for de-enrollment, held ones left out: reason completed or opted_out.';
