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
--                     stats, maintenance cleanup, the run's procedure in schema deenroll, with
--                     USAGE on that schema for it); no privilege on any table: those functions
--                     run as their owner (SECURITY DEFINER) and do the writing; the procedure
--                     runs with its caller's rights and only calls them. On PostgreSQL 17+
--                     also MAINTAIN on the monitoring tables, for the cleanup's VACUUM.
--   both              EXECUTE on every function one of our views calls, and on what the
--                     bound bodies of those (not SECURITY DEFINER) call in turn (read from
--                     the catalog): a view runs the functions it calls with its reader's
--                     rights, and so do the functions inlined into it.
--   PUBLIC            EXECUTE on the helpers that CHECK constraints of ours call (read from
--                     the catalog): a constraint runs with the rights of whoever writes the
--                     row. They are IMMUTABLE, not SECURITY DEFINER, and free of side effects.
-- Trigger functions (ours in public, and those of the private schema) are granted to nobody:
-- a trigger fires its function whatever the writer's privileges.
-- Our tables get row-level security with no policy: only their owner (the migrating role)
-- and roles with BYPASSRLS see their rows, which keeps them out of reach of any API even if
-- a grant slips through.
-- Only what differs from that is changed: a privilege present and wanted is not granted
-- again, an absent one is not revoked, and a table whose row-level security is on is not
-- altered. On a database already right this runs no GRANT, REVOKE or ALTER at all, so an
-- upgrade migrate takes no lock on our tables here (ALTER TABLE would take an ACCESS
-- EXCLUSIVE lock that runs in progress, and through their triggers the platform's writes,
-- would queue behind).
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
        'de_enrollment_held_leads', 'de_enrollment_heartbeat',
        -- the run's loop in the database (schema deenroll): it runs with its caller's rights
        'run_de_enrollment', 'run_de_enrollment_batches', 'help_de_enrollment_run', 'de_enrollment_run_options',
        'de_enrollment_run_lock', 'de_enrollment_open_runs', 'fold_remaining_de_enrollment_deltas',
        'de_enrollment_run_queue', 'run_de_enrollment_loop', 'run_de_enrollment_client', 'de_enrollment_pin_settings',
        'de_enrollment_retry_lock_race', 'de_enrollment_join_run_group', 'de_enrollment_take_client',
        'de_enrollment_require_client', 'de_enrollment_dry_run',
        -- the pg_cron jobs' health check and `deenroll schedule status`
        'check_de_enrollment_health', 'count_de_enrollment_runs_in_windows', 'count_de_enrollment_held_in_windows',
        'de_enrollment_cron_jobs',
        -- the tables the cleanup vacuums
        'de_enrollment_maintained_tables',
        -- alerts: the documents `deenroll run` and `health-check` post; the database's own alerts
        -- (queued through pg_net by a definer function, the health job that alerts); whether they
        -- are on and how their deliveries went. Keeping or clearing the webhook is the owner's.
        'de_enrollment_version', 'de_enrollment_run_exit_code', 'de_enrollment_alert_document',
        'de_enrollment_run_alert', 'de_enrollment_health_alert', 'send_de_enrollment_alert',
        'alert_de_enrollment_health', 'de_enrollment_alert_webhook', 'de_enrollment_alert_deliveries'];
    -- Our trigger function in public (the platform's leads fire it); the others live in deenroll.
    c_public_trigger_functions CONSTANT text[] := ARRAY['leads_record_stats_delta'];
    c_maintained CONSTANT text[] := ARRAY(SELECT 'public.' || m.table_name
                                           FROM public.de_enrollment_maintained_tables() AS m ORDER BY m.ord);
    v_secured boolean := to_regnamespace('deenroll') IS NOT NULL;
    v_runner  oid     := (SELECT oid FROM pg_roles WHERE rolname = 'deenroll_runner' AND v_secured);
    v_analyst oid     := (SELECT oid FROM pg_roles WHERE rolname = 'deenroll_analyst');
    -- PUBLIC (grantee 0 in an ACL) and the API roles of a Supabase-style database
    v_closed  oid[]   := ARRAY[0::oid] || ARRAY(SELECT oid FROM pg_roles
                                                 WHERE rolname IN ('anon', 'authenticated', 'service_role'));
    v_maintain boolean := current_setting('server_version_num')::integer >= 170000;
    v_own     oid[]   := '{}';
    v_sql     text;
BEGIN
    IF v_secured THEN
        v_own := ARRAY(SELECT t FROM deenroll.own_tables() AS t);
        IF v_runner IS NOT NULL AND NOT has_schema_privilege(v_runner, 'deenroll', 'USAGE') THEN
            GRANT USAGE ON SCHEMA deenroll TO deenroll_runner;
        END IF;
    END IF;

    -- the statements are gathered first: no query of the catalog is open while they run
    FOREACH v_sql IN ARRAY ARRAY(
        WITH RECURSIVE ours AS (
            SELECT p.oid, p.proname::text AS name
              FROM pg_proc AS p
             WHERE (p.pronamespace = 'public'::regnamespace
                    AND (p.proname IN (SELECT d.name FROM public._deenroll_definitions AS d WHERE d.kind = 'function')
                         OR (p.proname = ANY (c_public_trigger_functions) AND p.prorettype = 'trigger'::regtype)))
                OR p.pronamespace = to_regnamespace('deenroll')
        ), called_by_views AS (
            SELECT DISTINCT d.refobjid AS oid
              FROM pg_depend AS d
              JOIN pg_rewrite AS w ON w.oid = d.objid
              JOIN pg_class AS v ON v.oid = w.ev_class
              JOIN public._deenroll_definitions AS k ON k.name = v.relname AND k.kind = 'view'
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_proc'::regclass
               AND v.relnamespace = 'public'::regnamespace
            UNION
            -- and what their bound bodies call, with the same reader's rights (not SECURITY DEFINER)
            SELECT d.refobjid
              FROM called_by_views AS c
              JOIN pg_proc AS p ON p.oid = c.oid AND NOT p.prosecdef
              JOIN pg_depend AS d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                 AND d.refclassid = 'pg_proc'::regclass
        ), called_by_checks AS (
            SELECT DISTINCT d.refobjid AS oid
              FROM pg_depend AS d
              JOIN pg_constraint AS k ON k.oid = d.objid
             WHERE d.classid = 'pg_constraint'::regclass AND d.refclassid = 'pg_proc'::regclass
               AND k.contype = 'c'
        ), wanted AS (
            SELECT o.oid, 0::oid AS grantee FROM ours AS o WHERE o.oid IN (SELECT oid FROM called_by_checks)
            UNION
            SELECT o.oid, v_runner FROM ours AS o
             WHERE v_runner IS NOT NULL
               AND (o.name = ANY (c_runner_functions) OR o.oid IN (SELECT oid FROM called_by_views))
            UNION
            SELECT o.oid, v_analyst FROM ours AS o
             WHERE v_analyst IS NOT NULL AND o.oid IN (SELECT oid FROM called_by_views)
        ), held AS (
            SELECT p.oid, a.grantee
              FROM pg_proc AS p
             CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a
             WHERE p.oid IN (SELECT oid FROM ours) AND a.privilege_type = 'EXECUTE'
        )
        SELECT format('REVOKE ALL ON ROUTINE %s FROM %s', h.oid::regprocedure,
                      CASE WHEN h.grantee = 0 THEN 'PUBLIC' ELSE h.grantee::regrole::text END)
          FROM held AS h
         WHERE h.grantee = ANY (v_closed)
           AND NOT EXISTS (SELECT 1 FROM wanted AS w WHERE w.oid = h.oid AND w.grantee = h.grantee)
        UNION ALL
        SELECT format('GRANT EXECUTE ON ROUTINE %s TO %s', w.oid::regprocedure,
                      CASE WHEN w.grantee = 0 THEN 'PUBLIC' ELSE w.grantee::regrole::text END)
          FROM wanted AS w
         WHERE NOT EXISTS (SELECT 1 FROM held AS h WHERE h.oid = w.oid AND h.grantee = w.grantee)
    ) LOOP
        EXECUTE v_sql;
    END LOOP;

    -- Views, tables and sequences: the closed roles lose every privilege; the views are
    -- readable by both roles; the runner may MAINTAIN (PostgreSQL 17+) the monitoring tables.
    -- the statements are gathered first: no query of the catalog is open while they run
    FOREACH v_sql IN ARRAY ARRAY(
        WITH rels AS (
            SELECT c.oid, c.relkind, c.relowner, c.relacl, c.relrowsecurity
              FROM pg_class AS c
             WHERE (c.relkind = 'v' AND c.relnamespace = 'public'::regnamespace
                    AND c.relname IN (SELECT d.name FROM public._deenroll_definitions AS d WHERE d.kind = 'view'))
                OR c.oid = ANY (v_own)
                OR (c.relkind = 'S'
                    AND EXISTS (SELECT 1 FROM pg_depend AS d
                                 WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass
                                   AND d.refobjid = ANY (v_own)))
        ), wanted AS (
            SELECT r.oid, g.grantee, 'SELECT'::text AS privilege
              FROM rels AS r CROSS JOIN unnest(ARRAY[v_runner, v_analyst]) AS g (grantee)
             WHERE r.relkind = 'v' AND g.grantee IS NOT NULL
            UNION ALL
            SELECT r.oid, v_runner, 'MAINTAIN'
              FROM rels AS r
             WHERE v_maintain AND v_runner IS NOT NULL AND r.relkind IN ('r', 'p')
               AND r.oid::regclass::text = ANY (c_maintained)
        ), held AS (
            SELECT r.oid, a.grantee, a.privilege_type AS privilege
              FROM rels AS r
             CROSS JOIN LATERAL aclexplode(coalesce(r.relacl, acldefault(CASE WHEN r.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                                        r.relowner))) AS a
        )
        SELECT DISTINCT format('REVOKE ALL ON %s %s FROM %s',
                               CASE WHEN r.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, r.oid::regclass,
                               CASE WHEN h.grantee = 0 THEN 'PUBLIC' ELSE h.grantee::regrole::text END)
          FROM held AS h JOIN rels AS r ON r.oid = h.oid
         WHERE h.grantee = ANY (v_closed)
        UNION ALL
        SELECT format('GRANT %s ON %s TO %s', w.privilege, w.oid::regclass, w.grantee::regrole::text)
          FROM wanted AS w
         WHERE NOT EXISTS (SELECT 1 FROM held AS h
                            WHERE h.oid = w.oid AND h.grantee = w.grantee AND h.privilege = w.privilege)
        UNION ALL
        SELECT format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', r.oid::regclass)
          FROM rels AS r
         WHERE r.relkind IN ('r', 'p') AND NOT r.relrowsecurity
    ) LOOP
        EXECUTE v_sql;
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION public.deenroll_apply_privileges() IS
    'Closes every deenroll object to PUBLIC and API roles and grants deenroll_analyst and deenroll_runner exactly what the list in this function says, changing only what differs; row-level security on our tables.';
