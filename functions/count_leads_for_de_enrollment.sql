-- count_leads_for_de_enrollment: per campaign, how many leads a run would de-enroll now (the dry run; locks and changes nothing)
-- requires: 0021_add_de_enrollment_monitoring
--
-- The same rules as get_leads_for_de_enrollment (see there), counted instead of
-- claimed: completed = finished sequences, opted_out = opted out before the end.
-- One row per campaign with something due, of one client (or all when NULL).
-- Leads locked by a runner at this moment are counted too.
-- Index-driven like the claim (see there for why sequential scans are ruled out).
CREATE FUNCTION count_leads_for_de_enrollment(p_client_id uuid DEFAULT NULL)
RETURNS TABLE (
    client_id      uuid,
    campaign_id    uuid,
    campaign_name  text,
    total_messages integer,
    completed      bigint,
    opted_out      bigint
)
LANGUAGE sql
STABLE
SET enable_seqscan = off
AS $fn$
    SELECT c.client_id, c.id, c.name, m.total, k.completed, o.opted_out
      FROM campaigns AS c
     CROSS JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(c.messages) = 'array'
                                     THEN jsonb_array_length(c.messages) END AS total) AS m
     CROSS JOIN LATERAL (SELECT count(*) AS completed
                           FROM leads AS l
                          WHERE l.campaign_link_id = c.id
                            AND l.is_active
                            AND l.completed_at IS NULL
                            AND l.current_message_position >= m.total
                            AND NOT l.campaign_history @> jsonb_build_array(jsonb_build_object('campaign_id', c.id))) AS k
     CROSS JOIN LATERAL (SELECT count(*) AS opted_out
                           FROM leads AS l
                          WHERE l.campaign_link_id = c.id
                            AND l.is_active
                            AND l.opted_out
                            AND NOT (l.completed_at IS NULL AND l.current_message_position >= m.total)
                            AND NOT l.campaign_history @> jsonb_build_array(jsonb_build_object('campaign_id', c.id))) AS o
     WHERE (p_client_id IS NULL OR c.client_id = p_client_id)
       AND m.total IS NOT NULL
       AND k.completed + o.opted_out > 0
     ORDER BY c.client_id, c.id
$fn$;

COMMENT ON FUNCTION count_leads_for_de_enrollment(uuid) IS
    'Dry run: per campaign, the leads a de-enrollment run would de-enroll now (completed, opted_out); changes and locks nothing.';
