-- get_leads_for_de_enrollment: claim (row-lock) up to p_batch_size of a client's leads that are due for de-enrollment
-- requires: 0027_track_due_campaigns
-- after: de_enrollment_due_outcome, de_enrollment_finished_leads, de_enrollment_opted_out_leads, de_enrollment_marked_campaigns, de_enrollment_unmark_campaigns, de_enrollment_sequence_length
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
-- of campaigns. Opted-out leads first (compliance before bookkeeping:
-- de_enrollment_opted_out_leads), then finished ones (de_enrollment_finished_leads), only in
-- the campaigns deenroll.due_campaigns marks for this client (see migration 0027: the
-- statement that finishes a lead marks its campaign). The dry-run count reads the same two.
-- Marks are kept exact, without locks, by three rules:
--   * a mark is removed only by one statement that sees, in its own snapshot, no finished
--     lead of the client in the campaign (held and locked ones count as there:
--     de_enrollment_unmark_campaigns): the change that added a mark is in the same snapshot
--     as the mark, so a mark is never removed before the lead it stands for can be seen;
--   * the campaigns looked into and found empty lose their marks after the claim, so a run
--     looks into each finished campaign once, and the campaigns a run's last batch emptied
--     lose theirs when the run finishes (finish_de_enrollment_run);
--   * a sequence edit (a mark without a client) is looked into for every client, and is
--     settled into per-client marks only when every transaction that may have judged a lead
--     by the old sequence has ended: first stamped with the next transaction id of a
--     snapshot that sees the edit, then settled by a statement whose oldest running
--     transaction is past that stamp. Rows other runners have locked are skipped.
-- The extra predicates next to de_enrollment_due_outcome() are implied by it and are there
-- for the indexes. The SET clauses rule out sequential and bitmap scans: the planner cannot
-- know a sequence's length when it plans, and plain index scans stop at the batch size.
-- Its statements run on generic plans (plan_cache_mode): planned once per session, not
-- once per batch; every one of them is index-driven whatever the parameters. No JIT: compiling
-- would cost more than a batch's whole claim.
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
SET jit = off
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $fn$
DECLARE
    v_campaigns uuid[];
    v_lead      uuid[];
    v_campaign  uuid[];
    v_position  integer[];
    v_total     integer[];
    v_reason    text[];
    v_last_ord  bigint;      -- the claimed leads' last campaign, by its place in v_campaigns
    v_reached   bigint;
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'batch size must be a positive integer, got %', p_batch_size
              USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Sequence edits are rare: one index probe instead of two statements in every claim.
    IF EXISTS (SELECT 1 FROM deenroll.due_campaigns AS e WHERE e.client_id IS NULL) THEN
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
         CROSS JOIN LATERAL (SELECT nullif(deenroll.de_enrollment_sequence_length(c.messages), 0) AS total) AS t
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
    END IF;

    v_campaigns := ARRAY(SELECT m.campaign_id FROM public.de_enrollment_marked_campaigns(p_client_id) AS m
                          ORDER BY m.campaign_id);

    -- One statement: the outer LIMIT stops pulling rows once the batch is full, and UNION
    -- ALL runs its branches in order, so finished leads are only looked for when the
    -- opted-out ones do not fill the batch, campaign after campaign. Each row is locked as it
    -- is pulled (by its row_id, SKIP LOCKED), so exactly the rows returned are locked; a row
    -- another transaction changed since the scan read it is judged again, as it is now.
    SELECT array_agg(due.lead_id), array_agg(due.campaign_id), array_agg(due.messages_received),
           array_agg(due.total_messages), array_agg(due.outcome), max(due.campaign_ord)
      INTO v_lead, v_campaign, v_position, v_total, v_reason, v_last_ord
      FROM (SELECT d.lead_id, d.campaign_id, d.messages_received, d.total_messages, d.outcome, d.campaign_ord
              FROM (SELECT o.row_id, o.lead_id, o.campaign_id, o.messages_received, o.total_messages,
                           o.campaign_messages, o.outcome, NULL::bigint AS campaign_ord
                      FROM public.de_enrollment_opted_out_leads(p_client_id, true) AS o
                    UNION ALL
                    SELECT f.row_id, f.lead_id, f.campaign_id, f.messages_received, f.total_messages,
                           f.campaign_messages, 'completed'::text, f.campaign_ord
                      FROM public.de_enrollment_finished_leads(p_client_id, v_campaigns, true) AS f) AS d
             CROSS JOIN LATERAL (
                   SELECT 1
                     FROM public.leads AS ll
                    WHERE ll.ctid = d.row_id
                      AND ll.id = d.lead_id
                      AND ll.client_id = p_client_id
                      AND ll.campaign_link_id = d.campaign_id
                      AND public.de_enrollment_due_outcome(ll.is_active, ll.completed_at, ll.opted_out,
                                                           ll.current_message_position, d.campaign_id,
                                                           d.campaign_messages) = d.outcome
                      FOR UPDATE OF ll SKIP LOCKED) AS locked
             LIMIT p_batch_size) AS due;

    -- The campaigns this claim looked into: all of them when the batch is not full, else
    -- those up to the last one it took leads from. The marks of those that gave no lead go
    -- when, in this statement's snapshot, they hold no finished lead of the client at all.
    IF coalesce(cardinality(v_lead), 0) < p_batch_size THEN
        v_reached := cardinality(v_campaigns);
    ELSE
        v_reached := v_last_ord;
    END IF;
    IF coalesce(v_reached, 0) > 0 THEN
        -- those that gave leads are not empty (in this snapshot their leads are still due)
        PERFORM deenroll.de_enrollment_unmark_campaigns(p_client_id, v_campaigns[1:v_reached], v_campaign);
    END IF;

    RETURN QUERY
        SELECT x.lead_id, x.campaign_id, p_client_id, x.position, x.total, x.reason
          FROM unnest(v_lead, v_campaign, v_position, v_total, v_reason)
               AS x (lead_id, campaign_id, position, total, reason);
END
$fn$;

COMMENT ON FUNCTION public.get_leads_for_de_enrollment(uuid, integer) IS
    'Claims (FOR UPDATE SKIP LOCKED) up to p_batch_size leads of a client (leads.client_id) due for de-enrollment, held ones left out: reason completed or opted_out.';
