-- de_enrollment_stuck_leads: active leads a run should have de-enrolled and has not (yet), with the reason
-- requires: 0021_add_de_enrollment_monitoring
--
-- Two reasons, one branch each so that each uses its partial index from 0019:
--   sequence_finished: the SOP's definition (Step 6.2, daily check #3): active, not
--                      completed, position >= length of the campaign's message array;
--   opted_out:         active, opted out, and not in the first branch (a STOP must
--                      never leave a lead active in a campaign).
-- A campaign whose `messages` is not a JSON array has no length: its leads are never
-- "finished" here (the runner reports such a campaign instead of guessing).
-- Right after the platform advances a lead it is listed until the next run (<= 15 min).
CREATE VIEW de_enrollment_stuck_leads AS
SELECT l.id                         AS lead_id,
       l.client_id,
       c.id                         AS campaign_id,
       c.name                       AS campaign_name,
       'sequence_finished'::text    AS reason,
       l.current_message_position   AS messages_received,
       m.total_messages,
       coalesce(l.opted_out, false) AS opted_out,
       l.updated_at
  FROM campaigns AS c
 CROSS JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(c.messages) = 'array'
                                 THEN jsonb_array_length(c.messages) END AS total_messages) AS m
  JOIN leads AS l ON l.campaign_link_id = c.id
 WHERE l.is_active
   AND l.completed_at IS NULL
   AND l.current_message_position >= m.total_messages
UNION ALL
SELECT l.id,
       l.client_id,
       c.id,
       c.name,
       'opted_out'::text,
       l.current_message_position,
       m.total_messages,
       true,
       l.updated_at
  FROM campaigns AS c
 CROSS JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(c.messages) = 'array'
                                 THEN jsonb_array_length(c.messages) END AS total_messages) AS m
  JOIN leads AS l ON l.campaign_link_id = c.id
 WHERE l.is_active
   AND l.opted_out
   AND NOT (l.completed_at IS NULL AND coalesce(l.current_message_position >= m.total_messages, false));

COMMENT ON VIEW de_enrollment_stuck_leads IS
    'Active leads that should have been de-enrolled and were not: finished sequences (the SOP''s stuck definition) and active opted-out leads. Empty after a complete run.';
COMMENT ON COLUMN de_enrollment_stuck_leads.lead_id IS 'The lead (leads.id).';
COMMENT ON COLUMN de_enrollment_stuck_leads.client_id IS 'The lead''s client.';
COMMENT ON COLUMN de_enrollment_stuck_leads.campaign_id IS 'The campaign the lead is still active in (leads.campaign_link_id).';
COMMENT ON COLUMN de_enrollment_stuck_leads.campaign_name IS 'The campaign''s name.';
COMMENT ON COLUMN de_enrollment_stuck_leads.reason IS 'sequence_finished (received every message) or opted_out (opted out before the end).';
COMMENT ON COLUMN de_enrollment_stuck_leads.messages_received IS 'leads.current_message_position: messages of the sequence the lead has received.';
COMMENT ON COLUMN de_enrollment_stuck_leads.total_messages IS 'Length of the campaign''s message array; null when messages is not an array.';
COMMENT ON COLUMN de_enrollment_stuck_leads.opted_out IS 'Whether the lead opted out.';
COMMENT ON COLUMN de_enrollment_stuck_leads.updated_at IS 'When the platform last changed the lead (roughly: since when it is stuck).';

-- Read access for the analyst role of migration 0022, restored whenever this view is re-created.
-- The REVOKE changes no privilege (PUBLIC has none on a new view); it makes the ACL explicit,
-- so that 0022's grant and its rollback's revoke bring it back to exactly this state.
REVOKE ALL ON de_enrollment_stuck_leads FROM PUBLIC;
DO $grant$
BEGIN
    IF to_regprocedure('grant_analyst_select(regclass)') IS NOT NULL THEN
        PERFORM grant_analyst_select('de_enrollment_stuck_leads');
    END IF;
END
$grant$;
