-- de_enrollment_due_leads: every lead due for de-enrollment now, with its outcome and, when a run holds it, why
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_due_outcome, de_enrollment_lead_fingerprint, de_enrollment_sequence_length
--
-- Due is de_enrollment_due_outcome() (see there). One branch per partial index of 0019:
-- finished leads campaign by campaign (position >= length of a non-empty sequence), then
-- active opted-out leads that have not finished. client_id is the lead's own client: the
-- client whose run de-enrolls it, whatever the campaign's client (campaign_client_id).
-- held_* are set when deenroll.held_leads holds the lead in the state it is in now (same
-- fingerprint): runs skip it until the data changes or an operator releases it
-- (de_enrollment_release_held_leads). The stuck view, the dry-run count for all clients
-- and the client list read this view.
CREATE VIEW public.de_enrollment_due_leads AS
SELECT d.lead_id,
       d.client_id,
       d.campaign_id,
       d.campaign_name,
       d.campaign_client_id,
       d.outcome,
       d.messages_received,
       d.total_messages,
       d.opted_out,
       d.updated_at,
       h.reason        AS held_reason,
       h.error_message AS held_error,
       h.first_held_at AS held_since
  FROM (SELECT l.id                         AS lead_id,
               l.client_id,
               c.id                         AS campaign_id,
               c.name                       AS campaign_name,
               c.client_id                  AS campaign_client_id,
               'completed'::text            AS outcome,
               l.current_message_position   AS messages_received,
               m.total                      AS total_messages,
               coalesce(l.opted_out, false) AS opted_out,
               l.updated_at,
               public.de_enrollment_lead_fingerprint(l.xmin, c.id, c.messages) AS fingerprint
          FROM public.campaigns AS c
         CROSS JOIN LATERAL (SELECT nullif(deenroll.de_enrollment_sequence_length(c.messages), 0) AS total) AS m
         -- per campaign, the range position >= length (OFFSET 0 keeps it a parameterized index scan)
         CROSS JOIN LATERAL (SELECT ll.id, ll.client_id, ll.is_active, ll.completed_at, ll.opted_out,
                                    ll.current_message_position, ll.updated_at, ll.xmin
                               FROM public.leads AS ll
                              WHERE ll.campaign_link_id = c.id
                                AND ll.is_active
                                AND ll.completed_at IS NULL
                                AND ll.current_message_position >= m.total
                             OFFSET 0) AS l
         WHERE l.opted_out IS NOT TRUE
           AND public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                                l.current_message_position, c.id, c.messages) = 'completed'
        UNION ALL
        SELECT l.id,
               l.client_id,
               c.id,
               c.name,
               c.client_id,
               public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                                l.current_message_position, c.id, c.messages),
               l.current_message_position,
               deenroll.de_enrollment_sequence_length(c.messages),
               true,
               l.updated_at,
               public.de_enrollment_lead_fingerprint(l.xmin, c.id, c.messages)
          FROM public.leads AS l
          JOIN public.campaigns AS c ON c.id = l.campaign_link_id
         WHERE l.is_active
           AND l.opted_out
           AND public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                                l.current_message_position, c.id, c.messages) IS NOT NULL) AS d
  LEFT JOIN deenroll.held_leads AS h ON h.lead_id = d.lead_id AND h.fingerprint = d.fingerprint;

COMMENT ON VIEW public.de_enrollment_due_leads IS
    'Every lead due for de-enrollment now (de_enrollment_due_outcome), with the outcome a run gives it, or why a run holds it.';
COMMENT ON COLUMN public.de_enrollment_due_leads.lead_id IS 'The lead (leads.id).';
COMMENT ON COLUMN public.de_enrollment_due_leads.client_id IS 'The lead''s own client: the client whose run de-enrolls it.';
COMMENT ON COLUMN public.de_enrollment_due_leads.campaign_id IS 'The campaign the lead is active in (leads.campaign_link_id).';
COMMENT ON COLUMN public.de_enrollment_due_leads.campaign_name IS 'The campaign''s name.';
COMMENT ON COLUMN public.de_enrollment_due_leads.campaign_client_id IS 'The campaign''s client (may be null, or another client than the lead''s).';
COMMENT ON COLUMN public.de_enrollment_due_leads.outcome IS 'completed (finished the sequence) or opted_out (opted out before the end).';
COMMENT ON COLUMN public.de_enrollment_due_leads.messages_received IS 'leads.current_message_position.';
COMMENT ON COLUMN public.de_enrollment_due_leads.total_messages IS 'Length of the campaign''s message array; null when messages is not an array.';
COMMENT ON COLUMN public.de_enrollment_due_leads.opted_out IS 'Whether the lead opted out.';
COMMENT ON COLUMN public.de_enrollment_due_leads.updated_at IS 'When the platform last changed the lead.';
COMMENT ON COLUMN public.de_enrollment_due_leads.held_reason IS 'Why runs hold the lead (null: the next run de-enrolls it).';
COMMENT ON COLUMN public.de_enrollment_due_leads.held_error IS 'The database''s error when the lead was last tried.';
COMMENT ON COLUMN public.de_enrollment_due_leads.held_since IS 'When the lead was first held.';
