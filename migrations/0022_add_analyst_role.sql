-- 0022: a read-only group role for analysts, deenroll_analyst (NOLOGIN): SELECT on
-- the health and summary views, nothing else (not on leads, campaigns or the runs).
-- Give it to people with `GRANT deenroll_analyst TO some_login;`.
--
-- Roles belong to the whole server, grants to one database: the role is created
-- only when missing (another database may have created it), the grants are made
-- here. Views are (re)created by `deenroll migrate` after the migrations; each view
-- file grants itself through grant_analyst_select() (functions/), and this
-- migration grants on the views that already exist.
SET LOCAL lock_timeout = '5s';

DO $role$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'deenroll_analyst') THEN
        BEGIN
            CREATE ROLE deenroll_analyst NOLOGIN;
            -- The mark that tells rollback this role is ours to drop.
            COMMENT ON ROLE deenroll_analyst IS 'deenroll: read-only analyst role, created by migration 0022_add_analyst_role';
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created at the same moment by a migration of another database
        END;
    END IF;
END
$role$;

DO $grant$
DECLARE
    v_view regclass;
BEGIN
    FOR v_view IN
        SELECT c.oid::regclass
          FROM pg_class AS c
         WHERE c.relnamespace = current_schema()::regnamespace
           AND c.relkind = 'v'
           AND c.relname IN ('de_enrollment_health', 'de_enrollment_stuck_leads', 'campaign_stats_drift',
                             'de_enrollment_duplicates', 'de_enrollment_daily_summary')
    LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON %s TO deenroll_analyst', v_view);
    END LOOP;
END
$grant$;
