-- de_enrollment_release_held_leads: forget held leads (all, one client's, or the given ones) so the next run tries them again; returns how many
-- requires: 0024_isolate_dirty_platform_data
--
-- For the operator, once the cause is fixed outside the lead's own row (a platform trigger
-- or constraint changed): a held lead whose row or campaign sequence changes is retried on
-- its own. p_client_id NULL and p_lead_ids NULL: every held lead.
CREATE FUNCTION public.de_enrollment_release_held_leads(p_client_id uuid DEFAULT NULL, p_lead_ids uuid[] DEFAULT NULL)
RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH gone AS (
        DELETE FROM deenroll.held_leads AS h
         WHERE (p_client_id IS NULL OR h.client_id = p_client_id)
           AND (p_lead_ids IS NULL OR h.lead_id = ANY (p_lead_ids))
        RETURNING 1
    )
    SELECT count(*)::integer FROM gone
$fn$;

COMMENT ON FUNCTION public.de_enrollment_release_held_leads(uuid, uuid[]) IS
    'Forgets held leads (all, a client''s, or the given ids) so that the next run tries them again; returns how many.';
