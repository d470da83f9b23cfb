-- count_leads_for_de_enrollment: per client and campaign, how many leads a run would de-enroll now (the dry run; locks and changes nothing)
-- requires: 0027_track_due_campaigns
-- after: de_enrollment_due_outcome, de_enrollment_lead_fingerprint
--
-- The same rule and the same leads as get_leads_for_de_enrollment (see there), counted
-- instead of claimed: completed = finished sequences, opted_out = opted out before the end.
-- client_id is the lead's own client (the client whose run de-enrolls it); leads a run
-- holds are not counted here (de_enrollment_held_leads counts them). One row per client and
-- campaign with something due, of one client (by the claim's indexes, in the campaigns
-- deenroll.due_campaigns marks for it or that were edited: the claim looks in the same ones)
-- or of all when NULL (from the view de_enrollment_due_leads, which reads every campaign).
-- Leads locked by a runner now are counted too.
CREATE FUNCTION public.count_leads_for_de_enrollment(p_client_id uuid DEFAULT NULL)
RETURNS TABLE (
    client_id      uuid,
    campaign_id    uuid,
    campaign_name  text,
    total_messages integer,
    completed      bigint,
    opted_out      bigint
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $fn$
BEGIN
    IF p_client_id IS NULL THEN
        RETURN QUERY
        SELECT d.client_id, d.campaign_id, d.campaign_name, d.total_messages,
               count(*) FILTER (WHERE d.outcome = 'completed'),
               count(*) FILTER (WHERE d.outcome = 'opted_out')
          FROM public.de_enrollment_due_leads AS d
         WHERE d.held_reason IS NULL AND d.client_id IS NOT NULL
         GROUP BY d.client_id, d.campaign_id, d.campaign_name, d.total_messages
         ORDER BY d.client_id, d.campaign_id;
        RETURN;
    END IF;

    RETURN QUERY
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
    ), marked AS (
        SELECT k.id FROM k WHERE k.id IS NOT NULL
        UNION
        SELECT m.campaign_id FROM deenroll.due_campaigns AS m WHERE m.client_id IS NULL
    ), c AS MATERIALIZED (
        SELECT x.id, x.messages, x.total
          FROM (SELECT cc.id, cc.messages,
                       CASE WHEN jsonb_typeof(cc.messages) = 'array'
                            THEN nullif(jsonb_array_length(cc.messages), 0) END AS total
                  FROM marked AS k
                  JOIN public.campaigns AS cc ON cc.id = k.id) AS x
         WHERE x.total IS NOT NULL
    ), due AS (
        SELECT ll.campaign_link_id AS campaign_id,
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
        UNION ALL
        SELECT c.id, 'completed'::text
          FROM c
         CROSS JOIN LATERAL (SELECT x.id, x.is_active, x.completed_at, x.opted_out, x.current_message_position, x.xmin
                               FROM public.leads AS x
                              WHERE x.client_id = p_client_id
                                AND x.campaign_link_id = c.id
                                AND x.is_active
                                AND x.completed_at IS NULL
                                AND x.current_message_position >= c.total
                             OFFSET 0) AS ll
         WHERE ll.opted_out IS NOT TRUE
           AND public.de_enrollment_due_outcome(ll.is_active, ll.completed_at, ll.opted_out,
                                                ll.current_message_position, c.id, c.messages) = 'completed'
           AND NOT EXISTS (SELECT 1 FROM deenroll.held_leads AS h
                            WHERE h.lead_id = ll.id
                              AND h.fingerprint = public.de_enrollment_lead_fingerprint(ll.xmin, c.id, c.messages))
    )
    SELECT p_client_id, cc.id, cc.name,
           CASE WHEN jsonb_typeof(cc.messages) = 'array' THEN jsonb_array_length(cc.messages) END,
           count(*) FILTER (WHERE due.outcome = 'completed'),
           count(*) FILTER (WHERE due.outcome = 'opted_out')
      FROM due
      JOIN public.campaigns AS cc ON cc.id = due.campaign_id
     GROUP BY cc.id, cc.name, cc.messages
     ORDER BY cc.id;
END
$fn$;

COMMENT ON FUNCTION public.count_leads_for_de_enrollment(uuid) IS
    'Dry run: per client (the lead''s own) and campaign, the leads a de-enrollment run would de-enroll now (completed, opted_out), held ones left out; changes and locks nothing.';
