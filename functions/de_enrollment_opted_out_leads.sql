-- de_enrollment_opted_out_leads: a client's active opted-out leads that are due, with their outcome; reads, locks nothing
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_due_outcome, de_enrollment_lead_fingerprint, de_enrollment_sequence_length
--
-- The opted-out half of "due": leads whose own client is p_client_id, active and opted out
-- (a range of de_enrollment_leads_client_opted_out_idx), for which de_enrollment_due_outcome()
-- is not NULL: 'completed' when they also finished the sequence, else 'opted_out' (a STOP is
-- honoured in a draft or a paused campaign too). Held leads are left out when p_without_held.
-- Read by the claim (compliance first: before the finished leads) and the dry-run count;
-- a plain SQL function the planner inlines, like de_enrollment_finished_leads.
CREATE FUNCTION public.de_enrollment_opted_out_leads(p_client_id uuid, p_without_held boolean)
RETURNS TABLE (
    row_id            tid,
    lead_id           uuid,
    campaign_id       uuid,
    messages_received integer,
    total_messages    integer,
    campaign_messages jsonb,
    outcome           text
)
LANGUAGE sql
STABLE
BEGIN ATOMIC
    SELECT o.ctid, o.id, o.campaign_link_id, o.current_message_position, o.total, o.messages, o.outcome
      FROM (SELECT ll.ctid, ll.id, ll.campaign_link_id, ll.current_message_position, ll.xmin, cc.messages,
                   cc.id AS campaign_id,
                   deenroll.de_enrollment_sequence_length(cc.messages) AS total,
                   public.de_enrollment_due_outcome(ll.is_active, ll.completed_at, ll.opted_out,
                                                    ll.current_message_position, cc.id, cc.messages) AS outcome
              FROM public.leads AS ll
              -- one index probe per lead (OFFSET 0 keeps it a parameterized lookup): a join
              -- the planner may turn into a hash over every campaign, built again by each
              -- batch's claim however few leads it takes
              LEFT JOIN LATERAL (SELECT c.id, c.messages
                                   FROM public.campaigns AS c
                                  WHERE c.id = ll.campaign_link_id
                                 OFFSET 0) AS cc ON true
             WHERE ll.client_id = p_client_id
               AND ll.is_active
               AND ll.opted_out) AS o
     WHERE o.outcome IS NOT NULL
       AND NOT (p_without_held
                AND EXISTS (SELECT 1 FROM deenroll.held_leads AS h
                             WHERE h.lead_id = o.id
                               AND h.fingerprint = public.de_enrollment_lead_fingerprint(o.xmin, o.campaign_id, o.messages)));
END;

COMMENT ON FUNCTION public.de_enrollment_opted_out_leads(uuid, boolean) IS
    'A client''s active opted-out leads due for de-enrollment, with their outcome (held ones left out on request); locks nothing.';
