-- de_enrollment_pg_net_problem: why the database cannot send alerts through pg_net here, in one line, or NULL when it can
-- requires: 0030_alert_webhook
--
-- pg_net queues a request in the calling transaction and its background worker sends it
-- after the commit; the worker serves one database (pg_net.database_name). So alerts need
-- the extension in this database and its worker serving it.
CREATE FUNCTION deenroll.de_enrollment_pg_net_problem()
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE
        WHEN pg_catalog.to_regprocedure('net.http_post(text,jsonb,jsonb,jsonb,integer)') IS NULL THEN
            'pg_net is not installed in this database, and the database sends alerts through it '
            || '(on Supabase: Database > Extensions > pg_net; elsewhere build or install pg_net, add it to '
            || 'shared_preload_libraries, restart the server, then CREATE EXTENSION pg_net)'
        WHEN pg_catalog.current_setting('pg_net.database_name', true) IS DISTINCT FROM pg_catalog.current_database()
         AND pg_catalog.current_setting('pg_net.database_name', true) IS NOT NULL THEN
            pg_catalog.format('pg_net''s worker sends the requests of the database %s, not of this one '
                              '(set pg_net.database_name = %s and restart the server)',
                              pg_catalog.current_setting('pg_net.database_name', true),
                              pg_catalog.quote_literal(pg_catalog.current_database()))
    END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_pg_net_problem() IS
    'Why this database cannot send alerts through pg_net (not installed, or its worker serves another database), or NULL.';
