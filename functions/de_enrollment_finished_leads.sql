-- de_enrollment_finished_leads: a client's leads that finished the sequence of one of the given campaigns, campaign by campaign in the given order; reads, locks nothing
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_due_outcome, de_enrollment_lead_fingerprint, de_enrollment_sequence_length
--
-- The finished half of "due" (de_enrollment_due_outcome() = 'completed') for the leads whose
-- own client is p_client_id, looked for only in p_campaign_ids: per campaign, the range
-- position >= length of its sequence in de_enrollment_leads_client_candidates_idx (a draft or
-- a sequence that is not an array has no range). Held leads are left out when
-- p_without_held (deenroll.held_leads with the lead's current fingerprint). No limit inside:
-- the claim skips rows other runners have locked, so only its own LIMIT may count rows.
-- The claim, the dry-run count, the claim's clearing of marks and the client list all read
-- their finished leads here. It is a plain SQL function with a standard body, so the planner
-- inlines it into the caller's statement: a caller's LIMIT stops the index scans early, and
-- the claim locks the rows (row_id) as it pulls them.
CREATE FUNCTION public.de_enrollment_finished_leads(p_client_id uuid, p_campaign_ids uuid[], p_without_held boolean)
RETURNS TABLE (
    row_id            tid,
    lead_id           uuid,
    campaign_id       uuid,
    messages_received integer,
    total_messages    integer,
    campaign_messages jsonb,
    campaign_ord      bigint
)
LANGUAGE sql
STABLE
BEGIN ATOMIC
    SELECT l.ctid, l.id, c.id, l.current_message_position, c.total, c.messages, c.ord
      FROM (SELECT x.id, x.messages, x.total, x.ord
              FROM (SELECT cc.id, cc.messages, u.ord,
                           nullif(deenroll.de_enrollment_sequence_length(cc.messages), 0) AS total
                      FROM unnest(p_campaign_ids) WITH ORDINALITY AS u (id, ord)
                      JOIN public.campaigns AS cc ON cc.id = u.id) AS x
             WHERE x.total IS NOT NULL
             ORDER BY x.ord) AS c
     CROSS JOIN LATERAL (
           SELECT ll.ctid, ll.id, ll.current_message_position
             FROM public.leads AS ll
            WHERE ll.client_id = p_client_id
              AND ll.campaign_link_id = c.id
              AND ll.is_active
              AND ll.completed_at IS NULL
              AND ll.current_message_position >= c.total
              AND ll.opted_out IS NOT TRUE
              AND public.de_enrollment_due_outcome(ll.is_active, ll.completed_at, ll.opted_out,
                                                   ll.current_message_position, c.id, c.messages) = 'completed'
              AND NOT (p_without_held
                       AND EXISTS (SELECT 1 FROM deenroll.held_leads AS h
                                    WHERE h.lead_id = ll.id
                                      AND h.fingerprint = public.de_enrollment_lead_fingerprint(ll.xmin, c.id, c.messages)))
            OFFSET 0) AS l;  -- a parameterized index scan per campaign, never a join over the table
END;

COMMENT ON FUNCTION public.de_enrollment_finished_leads(uuid, uuid[], boolean) IS
    'A client''s active leads that finished the sequence of the given campaigns, campaign by campaign (held ones left out on request); locks nothing.';
