-- de_enrollment_client_exists: whether a client has any campaign or lead (checks a --client-id before anything runs)
-- requires: 0021_add_de_enrollment_monitoring
--
-- For roles without SELECT on the platform's tables (deenroll_runner): they learn only
-- whether the client exists. Two index probes (campaigns and leads by client_id).
CREATE FUNCTION public.de_enrollment_client_exists(p_client_id uuid)
RETURNS boolean
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT EXISTS (SELECT 1 FROM public.campaigns AS c WHERE c.client_id = p_client_id)
        OR EXISTS (SELECT 1 FROM public.leads AS l WHERE l.client_id = p_client_id)
$fn$;

COMMENT ON FUNCTION public.de_enrollment_client_exists(uuid) IS
    'True when the client has a campaign or a lead; for checking a --client-id without SELECT on the platform''s tables.';
