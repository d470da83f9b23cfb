-- de_enrollment_cron_jobs: deenroll's pg_cron jobs that run in a database, whichever role scheduled them
-- requires: 0024_isolate_dirty_platform_data
--
-- pg_cron shows a role only its own rows of cron.job (a policy; superusers and BYPASSRLS roles
-- see all), so a login could not tell that another role already runs deenroll in its database
-- and would schedule a second run. This reads cron.job with its owner's rights (the role that
-- migrated: on Supabase `postgres`, which has BYPASSRLS) and returns only jobs of ours: named
-- deenroll-..., or whose command calls one of the jobs' functions. `kind` says which job it
-- stands for (run, health, cleanup; NULL for another deenroll-... job). Empty when pg_cron
-- keeps its jobs in another database, or the owner may not read them. The same rule, for
-- pg_cron in another database, is the named query cron_our_jobs.
CREATE FUNCTION deenroll.de_enrollment_cron_jobs(p_database text)
RETURNS TABLE (
    jobid    bigint,
    jobname  text,
    schedule text,
    command  text,
    database text,
    username text,
    active   boolean,
    kind     text
)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF to_regnamespace('cron') IS NULL OR NOT has_schema_privilege('cron', 'USAGE')
       OR to_regclass('cron.job') IS NULL OR NOT has_table_privilege('cron.job', 'SELECT') THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT j.jobid, j.jobname::text, j.schedule::text, j.command::text, j.database::text, j.username::text,
           j.active, k.kind
      FROM cron.job AS j
     CROSS JOIN LATERAL (
           SELECT CASE WHEN j.command ~ '\mrun_de_enrollment\M' OR j.jobname = 'deenroll-run' THEN 'run'
                       WHEN j.command ~ '\m(check|alert)_de_enrollment_health\M' OR j.jobname = 'deenroll-health'
                           THEN 'health'
                       WHEN j.command ~ '\marchive_de_enrollment_history\M' OR j.jobname = 'deenroll-cleanup'
                           THEN 'cleanup'
                  END AS kind) AS k
     WHERE j.database = p_database
       AND (j.jobname LIKE 'deenroll-%' OR k.kind IS NOT NULL)
     ORDER BY j.jobid;
END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_cron_jobs(text) IS
    'deenroll''s pg_cron jobs (named deenroll-... or calling the jobs'' functions) that run in the given database, of every role, with the job they stand for (run, health, cleanup).';
