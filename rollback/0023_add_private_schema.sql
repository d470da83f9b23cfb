-- Undo 0023: every privilege given to deenroll_runner and the row-level security that
-- deenroll_apply_privileges() turned on go; the trigger function
-- returns to what 0020 made; the private schema is dropped; the role deenroll_runner is
-- dropped when 0023 created it and nothing else on the server still uses it.
SET LOCAL lock_timeout = '5s';

DO $undo$
DECLARE
    v_runner oid := (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'deenroll_runner');
    v_obj    text;
BEGIN
    IF to_regprocedure('deenroll.own_tables()') IS NOT NULL THEN
        FOR v_obj IN SELECT t::text FROM deenroll.own_tables() AS t LOOP
            EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', v_obj);
        END LOOP;
    END IF;
    IF v_runner IS NULL THEN
        RETURN;
    END IF;
    FOR v_obj IN
        SELECT DISTINCT c.oid::regclass::text
          FROM pg_catalog.pg_class AS c
         CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
         WHERE a.grantee = v_runner
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM deenroll_runner', v_obj);
    END LOOP;
    FOR v_obj IN
        SELECT DISTINCT p.oid::regprocedure::text
          FROM pg_catalog.pg_proc AS p
         CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) AS a
         WHERE a.grantee = v_runner
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM deenroll_runner', v_obj);
    END LOOP;
END
$undo$;

CREATE OR REPLACE FUNCTION leads_record_stats_delta()
RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- Every lead is gone, so every counter is zero.
        DELETE FROM campaign_stats_delta;
        UPDATE campaigns
           SET active_leads_count = 0, completed_leads_count = 0,
               opted_out_count = 0, booked_count = 0
         WHERE active_leads_count <> 0 OR completed_leads_count <> 0
            OR opted_out_count <> 0 OR booked_count <> 0;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO campaign_stats_delta
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
        INSERT INTO campaign_stats_delta
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
        INSERT INTO campaign_stats_delta
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

DROP FUNCTION IF EXISTS deenroll.own_tables();
DROP SCHEMA IF EXISTS deenroll;

DO $role$
DECLARE
    v_runner oid := (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = 'deenroll_runner');
BEGIN
    IF v_runner IS NULL
       OR coalesce(pg_catalog.shobj_description(v_runner, 'pg_authid'), '') NOT LIKE 'deenroll:%'
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members WHERE roleid = v_runner) THEN
        RETURN;  -- not ours, or logins are members of it: keep it
    END IF;
    BEGIN
        DROP ROLE deenroll_runner;
    EXCEPTION WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'role deenroll_runner kept: another database on this server still grants it privileges';
    END;
END
$role$;
