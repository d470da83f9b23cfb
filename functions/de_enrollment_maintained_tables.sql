-- de_enrollment_maintained_tables: the monitoring tables the monthly cleanup shrinks (VACUUM ANALYZE after archiving), in the order it vacuums them
-- requires: 0021_add_de_enrollment_monitoring
--
-- The one list: `deenroll maintenance cleanup` vacuums these, and deenroll_apply_privileges
-- grants deenroll_runner MAINTAIN on them (PostgreSQL 17+) so that the cleanup can.
CREATE FUNCTION public.de_enrollment_maintained_tables()
RETURNS TABLE (table_name text, ord integer)
LANGUAGE sql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    VALUES ('de_enrollment_runs', 1), ('de_enrollment_lead_log', 2)
$fn$;

COMMENT ON FUNCTION public.de_enrollment_maintained_tables() IS
    'The monitoring tables the monthly cleanup vacuums (and deenroll_runner may MAINTAIN), in order.';
