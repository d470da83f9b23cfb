-- de_enrollment_rls_blind_spots: platform tables whose row-level security would hide rows from deenroll's functions (empty when none)
-- requires: 0021_add_de_enrollment_monitoring
--
-- The engine's functions run as their owner (SECURITY DEFINER). If leads or campaigns have
-- row-level security enabled and that owner neither owns the table nor has SUPERUSER or
-- BYPASSRLS (or the table FORCEs row-level security), the policies decide which rows the
-- engine sees, and a run would report "0 de-enrolled" for leads it simply cannot see.
-- The runner, health-check and verify call this and say so instead.
CREATE FUNCTION public.de_enrollment_rls_blind_spots()
RETURNS TABLE (table_name text, function_owner text, reason text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT c.oid::regclass::text,
           current_user::text,
           CASE WHEN c.relforcerowsecurity
                THEN format('row-level security is FORCEd on %s, so its policies filter even its owner', c.oid::regclass)
                ELSE format('row-level security is enabled on %s and %s, which runs deenroll''s functions, '
                            'neither owns it nor has BYPASSRLS', c.oid::regclass, current_user) END
      FROM pg_class AS c
      JOIN pg_roles AS me ON me.rolname = current_user
     WHERE c.oid IN ('public.leads'::regclass, 'public.campaigns'::regclass)
       AND c.relrowsecurity
       AND NOT me.rolsuper
       AND NOT me.rolbypassrls
       AND (c.relforcerowsecurity OR NOT pg_has_role(me.oid, c.relowner, 'USAGE'))
     ORDER BY 1
$fn$;

COMMENT ON FUNCTION public.de_enrollment_rls_blind_spots() IS
    'Platform tables (leads, campaigns) whose row-level security hides rows from the role deenroll''s functions run as, with the reason; empty when the engine sees every row.';
