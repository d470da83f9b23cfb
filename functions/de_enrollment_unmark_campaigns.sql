-- de_enrollment_unmark_campaigns: drop a client's campaign marks where no finished lead of the client is left; returns how many marks went
-- requires: 0027_track_due_campaigns
-- after: de_enrollment_finished_leads
--
-- The one place a client's mark in deenroll.due_campaigns is removed (get_leads_for_de_enrollment
-- says what the marks are and settles the marks of sequence edits). The client's marks on p_campaign_ids (NULL: all of the client's
-- marks), less those on p_except, go when this statement's snapshot holds no finished lead of
-- the client in the campaign; held leads and leads locked by others count as there, so a
-- mark never goes before the lead it stands for. Marks other transactions hold are skipped.
-- Called by the claim, for the campaigns it looked into and found empty, and when a run
-- closes (finish_de_enrollment_run): the campaigns its last batch emptied would otherwise
-- keep their marks, and every later queue check and claim would walk their de-enrolled
-- leads again until the next claim.
CREATE FUNCTION deenroll.de_enrollment_unmark_campaigns(p_client_id uuid, p_campaign_ids uuid[],
                                                        p_except uuid[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan  -- planned once per session, like the claim
SET enable_seqscan = off                  -- index probes only, like the claim's
SET enable_bitmapscan = off
AS $fn$
DECLARE
    v_gone integer;
BEGIN
    DELETE FROM deenroll.due_campaigns AS m
     USING (SELECT e.ctid AS row_id
              FROM deenroll.due_campaigns AS e
             WHERE e.client_id = p_client_id
               AND (p_campaign_ids IS NULL OR e.campaign_id = ANY (p_campaign_ids))
               AND e.campaign_id <> ALL (coalesce(p_except, '{}'))
               AND NOT EXISTS (SELECT 1
                                 FROM public.de_enrollment_finished_leads(p_client_id, ARRAY[e.campaign_id], false) AS f)
               FOR UPDATE OF e SKIP LOCKED) AS x
     WHERE m.ctid = x.row_id;
    GET DIAGNOSTICS v_gone = ROW_COUNT;
    RETURN v_gone;
END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_unmark_campaigns(uuid, uuid[], uuid[]) IS
    'Drops a client''s marks (deenroll.due_campaigns) on campaigns that hold no finished lead of the client in this statement''s snapshot; the only place marks are removed.';
