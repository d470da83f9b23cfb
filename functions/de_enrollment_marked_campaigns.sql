-- de_enrollment_marked_campaigns: the campaigns where a client may have finished leads: marked for it, or edited and not settled yet
-- requires: 0027_track_due_campaigns
--
-- deenroll.due_campaigns holds a mark per client and campaign where a statement finished a
-- lead, and a mark without a client for a sequence edit not yet settled into per-client
-- marks (see get_leads_for_de_enrollment). A loose scan: one index probe per campaign,
-- however many marks it has. The claim and the dry-run count look into exactly these.
CREATE FUNCTION public.de_enrollment_marked_campaigns(p_client_id uuid)
RETURNS TABLE (campaign_id uuid)
LANGUAGE sql
STABLE
BEGIN ATOMIC
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
    )
    SELECT k.id FROM k WHERE k.id IS NOT NULL
    UNION
    SELECT m.campaign_id FROM deenroll.due_campaigns AS m WHERE m.client_id IS NULL;
END;

COMMENT ON FUNCTION public.de_enrollment_marked_campaigns(uuid) IS
    'The campaigns where a client may have finished leads (marked for it, or edited and not settled yet): where the claim and the dry run look.';
