-- campaigns_mark_edited: trigger function on campaigns marking a new or edited sequence for the next run
-- requires: 0027_track_due_campaigns
-- after: de_enrollment_due_outcome, de_enrollment_sequence_length
CREATE FUNCTION deenroll.campaigns_mark_edited()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'INSERT'
       AND pg_catalog.to_regprocedure('public.de_enrollment_due_outcome(boolean,timestamptz,boolean,integer,uuid,jsonb)') IS NOT NULL THEN
        INSERT INTO deenroll.due_campaigns (client_id, campaign_id)
        SELECT DISTINCT l.client_id, NEW.id
          FROM public.leads AS l
         WHERE l.campaign_link_id = NEW.id
           AND l.is_active AND l.completed_at IS NULL AND l.opted_out IS NOT TRUE
           AND l.client_id IS NOT NULL
           AND l.current_message_position >= nullif(deenroll.de_enrollment_sequence_length(NEW.messages), 0)
           AND public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                                l.current_message_position, NEW.id, NEW.messages) = 'completed';
    ELSE
        INSERT INTO deenroll.due_campaigns (client_id, campaign_id) VALUES (NULL, NEW.id);
    END IF;
    RETURN NULL;
END
$fn$;
