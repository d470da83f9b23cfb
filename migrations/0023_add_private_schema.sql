-- 0023: secure installation into a shared database.
--   * a schema of deenroll's own, `deenroll`, for what the operating procedure does not name
--     (bookkeeping, held leads, helpers): only its owner (the role that migrates) creates
--     objects in it and nobody else gets USAGE, so no API role or other login reaches it;
--   * the NOLOGIN role deenroll_runner, for schedulers: `GRANT deenroll_runner TO a_login`;
--     what it may execute and read is granted by deenroll_apply_privileges() (functions/);
--   * the trigger function on leads becomes SECURITY DEFINER with a pinned search_path and
--     schema-qualified names (the pending-delta table stays in public, closed to every role
--     but its owner by deenroll_apply_privileges()), so that any
--     platform login with plain DML on leads, whatever its search_path, keeps working and
--     nothing it planted in a schema it can write to ever runs inside the trigger.
-- A role that already exists under one of our names is adopted only when it is NOLOGIN and
-- holds no SUPERUSER, CREATEROLE or BYPASSRLS; otherwise this migration stops and names it.
SET LOCAL lock_timeout = '5s';

DO $roles$
DECLARE
    v_bad text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (%s)', r.rolname, pg_catalog.concat_ws(', ',
               CASE WHEN r.rolcanlogin THEN 'LOGIN' END, CASE WHEN r.rolsuper THEN 'SUPERUSER' END,
               CASE WHEN r.rolcreaterole THEN 'CREATEROLE' END, CASE WHEN r.rolbypassrls THEN 'BYPASSRLS' END)),
               ', ' ORDER BY r.rolname)
      INTO v_bad
      FROM pg_catalog.pg_roles AS r
     WHERE r.rolname IN ('deenroll_runner', 'deenroll_analyst')
       AND (r.rolcanlogin OR r.rolsuper OR r.rolcreaterole OR r.rolbypassrls);
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'refusing to adopt existing role(s) %: deenroll''s roles must be NOLOGIN without SUPERUSER, CREATEROLE or BYPASSRLS', v_bad
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Drop or alter the role (ALTER ROLE ... NOLOGIN NOSUPERUSER NOCREATEROLE NOBYPASSRLS), then migrate again.';
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'deenroll_runner') THEN
        BEGIN
            CREATE ROLE deenroll_runner NOLOGIN;
            -- The mark that tells rollback this role is ours to drop.
            COMMENT ON ROLE deenroll_runner IS 'deenroll: scheduler role (run, health-check, stuck, stats, maintenance), created by migration 0023_add_private_schema';
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created at the same moment by a migration of another database
        END;
    END IF;
END
$roles$;

CREATE SCHEMA deenroll;
REVOKE ALL ON SCHEMA deenroll FROM PUBLIC;
COMMENT ON SCHEMA deenroll IS 'deenroll: private objects of the de-enrollment package (not exposed to API roles).';

-- own_tables: every table of deenroll's, wherever it lives (the one list of them): the
-- private schema, the monitoring tables, bookkeeping (yoyo's, the definitions record), the
-- runs archive and the operating procedure's backup copies, which hold personal data.
CREATE FUNCTION deenroll.own_tables()
RETURNS SETOF regclass
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT c.oid::regclass
      FROM pg_catalog.pg_class AS c
      JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p')
       AND (n.nspname = 'deenroll'
            OR (n.nspname = 'public'
                AND (c.relname IN ('campaign_stats_delta', 'de_enrollment_runs', 'de_enrollment_lead_log',
                                   'de_enrollment_runs_archive',
                                   '_deenroll_definitions', '_yoyo_migration', '_yoyo_log', '_yoyo_version',
                                   'yoyo_lock')
                     OR c.relname ~ '^(leads|campaigns)_backup_[0-9]{8}$')))
     ORDER BY 1::text
$fn$;
REVOKE ALL ON FUNCTION deenroll.own_tables() FROM PUBLIC;

-- Trigger function: appends the per-campaign change in counted leads made by one statement.
-- Runs with its owner's rights (the platform's logins need no privilege on deenroll's
-- objects) and a search_path nobody else can write to; every name is qualified.
CREATE OR REPLACE FUNCTION public.leads_record_stats_delta()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- Every lead is gone, so every counter is zero.
        DELETE FROM public.campaign_stats_delta;
        UPDATE public.campaigns
           SET active_leads_count = 0, completed_leads_count = 0,
               opted_out_count = 0, booked_count = 0
         WHERE active_leads_count <> 0 OR completed_leads_count <> 0
            OR opted_out_count <> 0 OR booked_count <> 0;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO public.campaign_stats_delta
               (campaign_id, active_delta, completed_delta, opted_out_delta, booked_delta, last_enrollment_at)
        SELECT campaign_link_id,
               count(*) FILTER (WHERE is_active AND NOT coalesce(opted_out, false)),
               count(*) FILTER (WHERE completed_at IS NOT NULL),
               count(*) FILTER (WHERE opted_out),
               count(*) FILTER (WHERE booked),
               max(created_at)
          FROM new_rows
         WHERE campaign_link_id IS NOT NULL
         GROUP BY campaign_link_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO public.campaign_stats_delta
               (campaign_id, active_delta, completed_delta, opted_out_delta, booked_delta)
        SELECT d.*
          FROM (SELECT campaign_link_id,
                       -count(*) FILTER (WHERE is_active AND NOT coalesce(opted_out, false)) AS a,
                       -count(*) FILTER (WHERE completed_at IS NOT NULL) AS c,
                       -count(*) FILTER (WHERE opted_out) AS o,
                       -count(*) FILTER (WHERE booked) AS b
                  FROM old_rows
                 WHERE campaign_link_id IS NOT NULL
                 GROUP BY campaign_link_id) AS d
         WHERE d.a <> 0 OR d.c <> 0 OR d.o <> 0 OR d.b <> 0;
    ELSE
        INSERT INTO public.campaign_stats_delta
               (campaign_id, active_delta, completed_delta, opted_out_delta, booked_delta)
        SELECT d.*
          FROM (SELECT x.campaign_id, sum(x.a)::int AS a, sum(x.c)::int AS c,
                       sum(x.o)::int AS o, sum(x.b)::int AS b
                  FROM (SELECT campaign_link_id AS campaign_id,
                               (is_active AND NOT coalesce(opted_out, false))::int AS a,
                               (completed_at IS NOT NULL)::int AS c,
                               coalesce(opted_out, false)::int AS o,
                               coalesce(booked, false)::int AS b
                          FROM new_rows
                        UNION ALL
                        SELECT campaign_link_id,
                               -(is_active AND NOT coalesce(opted_out, false))::int,
                               -(completed_at IS NOT NULL)::int,
                               -coalesce(opted_out, false)::int,
                               -coalesce(booked, false)::int
                          FROM old_rows) AS x
                 WHERE x.campaign_id IS NOT NULL
                 GROUP BY x.campaign_id) AS d
         WHERE d.a <> 0 OR d.c <> 0 OR d.o <> 0 OR d.b <> 0;
    END IF;
    RETURN NULL;
END
$fn$;
-- (A trigger function cannot be called directly; its EXECUTE grant is left as PostgreSQL makes it.)
