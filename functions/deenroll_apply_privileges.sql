-- deenroll_apply_privileges: the one list of who may use deenroll's objects, applied to the database (migrate runs it)
-- requires: 0022_add_analyst_role
--
-- Every object of ours (the functions and views recorded in _deenroll_definitions, the
-- functions and tables of the private schema, the tables of deenroll.own_tables()) is first
-- closed to PUBLIC and to the API roles of a Supabase-style database (anon, authenticated,
-- service_role), whatever default privileges handed them, then opened exactly so:
--   deenroll_analyst  SELECT on every view of ours
--   deenroll_runner   SELECT on every view of ours; EXECUTE on the functions the scheduler's
--                     commands call (the list below: run, run --dry-run, health-check, stuck,
--                     stats, maintenance cleanup); no privilege on any table: those functions
--                     run as their owner (SECURITY DEFINER) and do the writing. On PostgreSQL
--                     17+ also MAINTAIN on the monitoring tables, for the cleanup's VACUUM.
--   both              EXECUTE on every function one of our views calls (read from the
--                     catalog): a view runs the functions it calls with its reader's rights.
--   PUBLIC            EXECUTE on the helpers that CHECK constraints of ours call (read from
--                     the catalog): a constraint runs with the rights of whoever writes the
--                     row. They are IMMUTABLE, not SECURITY DEFINER, and free of side effects.
-- Our tables get row-level security with no policy: only their owner (the migrating role)
-- and roles with BYPASSRLS see their rows, which keeps them out of reach of any API even if
-- a grant slips through. Trigger functions in public are left alone (they cannot be called directly
-- and need no grant to fire); those of the private schema are closed like the rest.
-- The runner role and the private schema exist once 0023 is applied; before that, only the
-- analyst part applies. Safe to run any number of times.
CREATE FUNCTION public.deenroll_apply_privileges()
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- The scheduler's functions: the one list.
    c_runner_functions CONSTANT text[] := ARRAY[
        'get_leads_for_de_enrollment', 'process_de_enrollment_batch', 'count_leads_for_de_enrollment',
        'de_enrollment_clients', 'de_enrollment_invalid_campaigns', 'start_de_enrollment_run',
        'finish_de_enrollment_run', 'apply_campaign_stats_deltas', 'apply_client_stats_deltas', 'recalculate_campaign_stats',
        'archive_de_enrollment_history', 'de_enrollment_rls_blind_spots', 'de_enrollment_client_exists',
        'de_enrollment_held_leads', 'de_enrollment_heartbeat'];
    c_maintained CONSTANT text[] := ARRAY['public.de_enrollment_runs', 'public.de_enrollment_lead_log'];
    v_secured boolean := to_regnamespace('deenroll') IS NOT NULL;
    v_runner  boolean := v_secured AND EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'deenroll_runner');
    v_analyst boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'deenroll_analyst');
    v_closed  text    := (SELECT string_agg(quote_ident(rolname), ', ' ORDER BY rolname)
                            FROM pg_roles WHERE rolname IN ('anon', 'authenticated', 'service_role'));
    v_obj     record;
BEGIN
    v_closed := concat_ws(', ', 'PUBLIC', v_closed);

    FOR v_obj IN
        WITH ours AS (
            SELECT p.oid, p.proname::text AS name
              FROM pg_proc AS p
             WHERE (p.prorettype <> 'trigger'::regtype OR p.pronamespace = to_regnamespace('deenroll'))
               AND ((p.pronamespace = 'public'::regnamespace
                     AND p.proname IN (SELECT d.name FROM public._deenroll_definitions AS d WHERE d.kind = 'function'))
                    OR p.pronamespace = to_regnamespace('deenroll'))
        ), called_by_views AS (
            SELECT DISTINCT d.refobjid AS oid
              FROM pg_depend AS d
              JOIN pg_rewrite AS w ON w.oid = d.objid
              JOIN pg_class AS v ON v.oid = w.ev_class
              JOIN public._deenroll_definitions AS k ON k.name = v.relname AND k.kind = 'view'
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_proc'::regclass
               AND v.relnamespace = 'public'::regnamespace
        ), called_by_checks AS (
            SELECT DISTINCT d.refobjid AS oid
              FROM pg_depend AS d
              JOIN pg_constraint AS k ON k.oid = d.objid
             WHERE d.classid = 'pg_constraint'::regclass AND d.refclassid = 'pg_proc'::regclass
               AND k.contype = 'c'
        )
        SELECT o.oid::regprocedure::text AS sig, o.name,
               o.oid IN (SELECT oid FROM called_by_views) AS in_views,
               o.oid IN (SELECT oid FROM called_by_checks) AS in_checks
          FROM ours AS o
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', v_obj.sig, v_closed);
        IF v_obj.in_checks THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', v_obj.sig);
        END IF;
        IF v_runner AND (v_obj.name = ANY (c_runner_functions) OR v_obj.in_views) THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO deenroll_runner', v_obj.sig);
        END IF;
        IF v_analyst AND v_obj.in_views THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO deenroll_analyst', v_obj.sig);
        END IF;
    END LOOP;

    FOR v_obj IN
        SELECT c.oid::regclass::text AS rel
          FROM pg_class AS c
          JOIN public._deenroll_definitions AS d ON d.name = c.relname AND d.kind = 'view'
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'v'
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %s', v_obj.rel, v_closed);
        IF v_analyst THEN
            EXECUTE format('GRANT SELECT ON %s TO deenroll_analyst', v_obj.rel);
        END IF;
        IF v_runner THEN
            EXECUTE format('GRANT SELECT ON %s TO deenroll_runner', v_obj.rel);
        END IF;
    END LOOP;

    IF NOT v_secured THEN
        RETURN;
    END IF;
    FOR v_obj IN SELECT t::text AS rel FROM deenroll.own_tables() AS t LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %s', v_obj.rel, v_closed);
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', v_obj.rel);
        IF v_runner AND v_obj.rel = ANY (c_maintained) AND current_setting('server_version_num')::integer >= 170000 THEN
            EXECUTE format('GRANT MAINTAIN ON %s TO deenroll_runner', v_obj.rel);
        END IF;
    END LOOP;
    FOR v_obj IN
        SELECT s.oid::regclass::text AS rel
          FROM pg_class AS s
         WHERE s.relkind = 'S'
           AND s.relnamespace IN ('public'::regnamespace, 'deenroll'::regnamespace)
           AND EXISTS (SELECT 1 FROM pg_depend AS d
                        WHERE d.objid = s.oid AND d.classid = 'pg_class'::regclass
                          AND d.refobjid IN (SELECT t FROM deenroll.own_tables() AS t))
    LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %s', v_obj.rel, v_closed);
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION public.deenroll_apply_privileges() IS
    'Closes every deenroll object to PUBLIC and API roles, then grants deenroll_analyst and deenroll_runner exactly what the list in this function says; row-level security on our tables.';
