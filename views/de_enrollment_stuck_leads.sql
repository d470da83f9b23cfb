-- de_enrollment_stuck_leads: active leads a run should have de-enrolled and has not (yet), with the reason
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_due_leads
--
-- Every lead of de_enrollment_due_leads (due by de_enrollment_due_outcome), with one reason:
--   sequence_finished    finished its sequence: the next run de-enrolls it (completed);
--   opted_out            opted out before the end: the next run de-enrolls it;
--   held:<why>           a run tried and the database refused the change (a constraint or
--                        trigger of the platform); runs skip it until the lead or its
--                        campaign changes, or an operator releases it
--                        (SELECT de_enrollment_release_held_leads(...)); error_message says more;
--   lead_without_client  the lead has no client_id, so no client's run takes it.
-- re_activated: the lead was de-enrolled from this campaign before (a log row or a history
-- entry of ours) and the platform made it active again; the next run de-enrolls it again.
-- campaign_client_id differs from client_id (or is null) when the lead sits in a campaign
-- of another client, or of none: it is still de-enrolled under its own client.
-- A campaign whose messages is not an array, or empty (a draft), finishes nobody: its leads
-- are here only when they opted out. Right after the platform advances a lead it is listed
-- until the next run (<= 15 min).
CREATE VIEW public.de_enrollment_stuck_leads AS
SELECT d.lead_id,
       d.client_id,
       d.campaign_id,
       d.campaign_name,
       CASE WHEN d.held_reason IS NOT NULL THEN 'held:' || d.held_reason
            WHEN d.client_id IS NULL THEN 'lead_without_client'
            WHEN d.outcome = 'completed' THEN 'sequence_finished'
            ELSE 'opted_out' END  AS reason,
       d.messages_received,
       d.total_messages,
       d.opted_out,
       d.updated_at,
       d.outcome,
       d.held_reason,
       d.held_error             AS error_message,
       d.held_since,
       d.campaign_client_id,
       (EXISTS (SELECT 1 FROM public.de_enrollment_lead_log AS g
                 WHERE g.lead_id = d.lead_id AND g.campaign_id = d.campaign_id
                   AND g.outcome IN ('completed', 'opted_out'))
        OR EXISTS (SELECT 1 FROM public.leads AS l
                    WHERE l.id = d.lead_id
                      AND jsonb_typeof(l.campaign_history) = 'array'
                      AND l.campaign_history @> jsonb_build_array(jsonb_build_object('campaign_id', d.campaign_id))
                      AND EXISTS (SELECT 1 FROM jsonb_array_elements(l.campaign_history) AS e
                                   WHERE jsonb_typeof(e.value) = 'object'
                                     AND (e.value -> 'run_id') IS NOT NULL
                                     AND e.value ->> 'campaign_id' = d.campaign_id::text))) AS re_activated
  FROM public.de_enrollment_due_leads AS d;

COMMENT ON VIEW public.de_enrollment_stuck_leads IS
    'Active leads that should have been de-enrolled and were not: finished sequences, active opted-out leads, and leads runs hold (reason held:<why>). Only held leads remain after a complete run.';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.lead_id IS 'The lead (leads.id).';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.client_id IS 'The lead''s own client (the client whose run de-enrolls it).';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.campaign_id IS 'The campaign the lead is still active in (leads.campaign_link_id).';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.campaign_name IS 'The campaign''s name.';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.reason IS 'sequence_finished or opted_out (the next run de-enrolls it), held:<why> (runs hold it), lead_without_client.';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.messages_received IS 'leads.current_message_position: messages of the sequence the lead has received.';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.total_messages IS 'Length of the campaign''s message array; null when messages is not an array.';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.opted_out IS 'Whether the lead opted out.';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.updated_at IS 'When the platform last changed the lead (roughly: since when it is stuck).';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.outcome IS 'What de-enrolling it records: completed or opted_out.';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.held_reason IS 'Why runs hold it (check_violation, refused_by_trigger, ...); null when not held.';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.error_message IS 'The database''s error when a run last tried it (held leads).';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.held_since IS 'When a run first held it.';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.campaign_client_id IS 'The campaign''s client; null or different from client_id for a lead linked to a campaign without a client or of another client.';
COMMENT ON COLUMN public.de_enrollment_stuck_leads.re_activated IS 'True when it was de-enrolled from this campaign before and the platform made it active again.';
