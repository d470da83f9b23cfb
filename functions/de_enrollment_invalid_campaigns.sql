-- de_enrollment_invalid_campaigns: campaigns whose messages is not a JSON array yet have active leads (one client, or all when NULL)
-- requires: 0021_add_de_enrollment_monitoring
--
-- Such a campaign has no sequence length, so none of its leads can be judged finished:
-- get_leads_for_de_enrollment leaves them alone, and the run records these campaigns
-- in error_details and ends 'partial' while the client's other campaigns proceed.
-- messages_type is jsonb_typeof(messages) ('object', 'string', ...), or 'missing' for SQL NULL.
-- active_leads counts the campaign's active leads not completed (those a sequence
-- length would decide on), read from the candidates index of 0019: the cost follows
-- the campaign's leads, never the table.
CREATE FUNCTION de_enrollment_invalid_campaigns(p_client_id uuid DEFAULT NULL)
RETURNS TABLE (
    client_id     uuid,
    campaign_id   uuid,
    campaign_name text,
    messages_type text,
    active_leads  bigint
)
LANGUAGE sql
STABLE
SET enable_seqscan = off
AS $fn$
    SELECT c.client_id, c.id, c.name, coalesce(jsonb_typeof(c.messages), 'missing'), n.active_leads
      FROM campaigns AS c
     CROSS JOIN LATERAL (SELECT count(*) AS active_leads
                           FROM leads AS l
                          WHERE l.campaign_link_id = c.id AND l.is_active AND l.completed_at IS NULL) AS n
     WHERE (p_client_id IS NULL OR c.client_id = p_client_id)
       AND jsonb_typeof(c.messages) IS DISTINCT FROM 'array'
       AND n.active_leads > 0
     ORDER BY c.client_id, c.id
$fn$;

COMMENT ON FUNCTION de_enrollment_invalid_campaigns(uuid) IS
    'Campaigns whose messages is not a JSON array and that have active leads; a run skips their leads and ends partial.';
