-- leads_mark_due_campaigns: trigger function on leads marking the campaigns where a statement left a lead finished
-- requires: 0027_track_due_campaigns
-- after: de_enrollment_due_outcome
CREATE FUNCTION deenroll.leads_mark_due_campaigns()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF pg_catalog.to_regprocedure('public.de_enrollment_due_outcome(boolean,timestamptz,boolean,integer,uuid,jsonb)') IS NOT NULL THEN
        INSERT INTO deenroll.due_campaigns (client_id, campaign_id)
        SELECT DISTINCT n.client_id, n.campaign_link_id
          FROM new_rows AS n
          LEFT JOIN public.campaigns AS c ON c.id = n.campaign_link_id
         WHERE n.is_active AND n.completed_at IS NULL AND n.opted_out IS NOT TRUE
           AND n.client_id IS NOT NULL AND n.campaign_link_id IS NOT NULL
           AND (c.id IS NULL
                OR public.de_enrollment_due_outcome(n.is_active, n.completed_at, n.opted_out,
                                                    n.current_message_position, c.id, c.messages) = 'completed');
    ELSE
        INSERT INTO deenroll.due_campaigns (client_id, campaign_id)
        SELECT DISTINCT n.client_id, n.campaign_link_id
          FROM new_rows AS n
         WHERE n.is_active AND n.completed_at IS NULL AND n.opted_out IS NOT TRUE
           AND n.client_id IS NOT NULL AND n.campaign_link_id IS NOT NULL;
    END IF;
    RETURN NULL;
END
$fn$;
