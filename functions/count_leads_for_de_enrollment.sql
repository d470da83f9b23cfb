-- count_leads_for_de_enrollment: per client and campaign, how many leads a run would de-enroll now (the dry run; locks and changes nothing)
-- requires: 0027_track_due_campaigns
-- after: de_enrollment_finished_leads, de_enrollment_opted_out_leads, de_enrollment_marked_campaigns, de_enrollment_sequence_length
-- after: de_enrollment_due_leads
--
-- The same leads as get_leads_for_de_enrollment (see there), from the same functions
-- (de_enrollment_marked_campaigns, de_enrollment_opted_out_leads,
-- de_enrollment_finished_leads), counted instead of claimed: completed = finished
-- sequences, opted_out = opted out before the end.
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
SET jit = off
AS $fn$
DECLARE
    v_campaigns uuid[];
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

    v_campaigns := ARRAY(SELECT m.campaign_id FROM public.de_enrollment_marked_campaigns(p_client_id) AS m);
    RETURN QUERY
    SELECT p_client_id, cc.id, cc.name,
           deenroll.de_enrollment_sequence_length(cc.messages),
           count(*) FILTER (WHERE due.outcome = 'completed'),
           count(*) FILTER (WHERE due.outcome = 'opted_out')
      FROM (SELECT o.campaign_id, o.outcome
              FROM public.de_enrollment_opted_out_leads(p_client_id, true) AS o
            UNION ALL
            SELECT f.campaign_id, 'completed'::text
              FROM public.de_enrollment_finished_leads(p_client_id, v_campaigns, true) AS f) AS due
      JOIN public.campaigns AS cc ON cc.id = due.campaign_id
     GROUP BY cc.id, cc.name, cc.messages
     ORDER BY cc.id;
END
$fn$;

COMMENT ON FUNCTION public.count_leads_for_de_enrollment(uuid) IS
    'Dry run: per client (the lead''s own) and campaign, the leads a de-enrollment run would de-enroll now (completed, opted_out), held ones left out; changes and locks nothing.';
