-- apply_client_stats_deltas: fold the pending counter deltas of one client's campaigns (what the platform changed meanwhile)
-- requires: 0021_add_de_enrollment_monitoring
--
-- The runner calls this after a client's batches; it needs no SELECT on campaigns. The
-- folding itself, and why each delta is folded exactly once, is apply_campaign_stats_deltas.
CREATE FUNCTION public.apply_client_stats_deltas(p_client_id uuid)
RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT public.apply_campaign_stats_deltas(ARRAY(
        SELECT DISTINCT d.campaign_id
          FROM public.campaign_stats_delta AS d
          JOIN public.campaigns AS c ON c.id = d.campaign_id
         WHERE c.client_id = p_client_id))
$fn$;

COMMENT ON FUNCTION public.apply_client_stats_deltas(uuid) IS
    'Folds the pending campaign_stats_delta rows of one client''s campaigns; returns the number folded.';
