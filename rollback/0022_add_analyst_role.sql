-- Undo 0022: revoke every privilege deenroll_analyst holds in this database, drop
-- grant_analyst_select(), then drop the role if 0022 created it and nothing else
-- on the server still uses it (grants in another database, members).
SET LOCAL lock_timeout = '5s';

DROP FUNCTION IF EXISTS grant_analyst_select(regclass);
-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)
DROP FUNCTION IF EXISTS public.deenroll_apply_privileges;
-- end of the functions and views

DO $revoke$
DECLARE
    v_rel regclass;
    v_fn  regprocedure;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'deenroll_analyst') THEN
        RETURN;
    END IF;
    FOR v_rel IN
        SELECT DISTINCT c.oid::regclass
          FROM pg_class AS c
         CROSS JOIN LATERAL aclexplode(c.relacl) AS a
         WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = 'deenroll_analyst')
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM deenroll_analyst', v_rel);
    END LOOP;
    -- the functions our views call, which the grant list opened to the analyst
    FOR v_fn IN
        SELECT DISTINCT p.oid::regprocedure
          FROM pg_proc AS p
         CROSS JOIN LATERAL aclexplode(p.proacl) AS a
         WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = 'deenroll_analyst')
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM deenroll_analyst', v_fn);
    END LOOP;

    IF coalesce(shobj_description((SELECT oid FROM pg_roles WHERE rolname = 'deenroll_analyst'), 'pg_authid'), '')
           NOT LIKE 'deenroll:%'
       OR EXISTS (SELECT 1 FROM pg_auth_members
                   WHERE roleid = (SELECT oid FROM pg_roles WHERE rolname = 'deenroll_analyst')
                     AND NOT admin_option) THEN
        RETURN;  -- not ours, or people are members of it: keep it
    END IF;
    BEGIN
        DROP ROLE deenroll_analyst;
    EXCEPTION WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'role deenroll_analyst kept: another database on this server still grants it privileges';
    END;
END
$revoke$;

-- The grant list closed the counters' trigger function (0020) to PUBLIC; before it, PUBLIC
-- could execute it, as it can any new function (calling a trigger function directly fails anyway).
DO $reopen$
BEGIN
    IF to_regprocedure('public.leads_record_stats_delta()') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION public.leads_record_stats_delta() TO PUBLIC;
    END IF;
END
$reopen$;
