-- The statements of `deenroll schedule` (deenroll/schedule*.py), by name. First the commands
-- of its pg_cron jobs, each the one statement of its job: pg_cron stores this text and runs it
-- as the role that scheduled it. No comment lines in a command, nor after it (the text up to
-- the next name is the command): it is shown as it is by `deenroll schedule status`.

-- name: job_run
CALL deenroll.run_de_enrollment()

-- name: job_health
CALL deenroll.alert_de_enrollment_health()

-- name: job_cleanup
SELECT public.archive_de_enrollment_history()

-- name: cron_context
-- (The queries below find pg_cron and our jobs, check and install them, read their runs.)
-- Who we are and whether pg_cron's schema is in this database.
SELECT pg_catalog.current_database()                                   AS dbname,
       current_user::text                                              AS login,
       (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user) AS superuser,
       pg_catalog.to_regnamespace('cron') IS NOT NULL                  AS cron_here,
       pg_catalog.current_setting('server_version')                    AS server_version;

-- name: cron_database_name
-- The database pg_cron keeps its jobs in; NULL when the server did not load pg_cron. Only
-- superusers and members of pg_read_all_settings may read it: others get an error.
SELECT pg_catalog.current_setting('cron.database_name', true);

-- name: schedule_job_role
-- The role the jobs would run as (the given one, else the login) and the one reason it may
-- not (NULL when it may): the jobs' functions exist; the role exists, the login may act as
-- it, it may log in and run the functions, and it is no superuser while a login member of
-- deenroll_runner could run the jobs instead (with no such login, `note` says so).
WITH f (name) AS (VALUES ('deenroll.run_de_enrollment'), ('public.archive_de_enrollment_history'),
                         ('public.check_de_enrollment_health'), ('deenroll.alert_de_enrollment_health')),
     runner AS (SELECT pg_catalog.to_regrole('deenroll_runner') AS oid),
     s AS (SELECT (SELECT pg_catalog.string_agg(f.name, ', ' ORDER BY f.name)
                     FROM f
                    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc AS p
                                       WHERE p.pronamespace::regnamespace::text || '.' || p.proname = f.name))
                      AS missing,
                  (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user) AS login_superuser,
                  ARRAY(SELECT r.rolname::text
                          FROM pg_catalog.pg_roles AS r, runner
                         WHERE r.rolcanlogin AND NOT r.rolsuper
                           AND pg_catalog.pg_has_role(r.oid, runner.oid, 'MEMBER')
                         ORDER BY r.rolname) AS runner_logins),
     r AS (SELECT r.rolname::text AS role, r.rolcanlogin AS can_login, r.rolsuper AS superuser,
                  pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER') AS login_may_set_role,
                  runner.oid IS NOT NULL AND pg_catalog.pg_has_role(r.oid, runner.oid, 'MEMBER') AS is_runner,
                  (SELECT pg_catalog.string_agg(f.name, ', ' ORDER BY f.name)
                     FROM f
                    WHERE NOT EXISTS (SELECT 1
                                        FROM pg_catalog.pg_proc AS p
                                       WHERE p.pronamespace::regnamespace::text || '.' || p.proname = f.name
                                         AND pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')
                                         AND pg_catalog.has_schema_privilege(r.oid, p.pronamespace, 'USAGE')))
                      AS cannot_execute
             FROM pg_catalog.pg_roles AS r, runner
            WHERE r.rolname = coalesce(%(role)s::text, current_user::text))
SELECT r.role,
       CASE WHEN s.missing IS NOT NULL
                THEN s.missing || ' does not exist in database ' || pg_catalog.current_database()
                     || ': run `deenroll migrate` first'
            WHEN r.role IS NULL THEN '--as ' || %(role)s::text || ': no such role'
            WHEN %(role)s::text IS NOT NULL AND NOT s.login_superuser AND NOT r.login_may_set_role
                THEN 'login ' || current_user::text || ' may not act as role ' || r.role || ': GRANT ' || r.role
                     || ' TO ' || current_user::text || ', or run `deenroll schedule install` logged in as ' || r.role
            WHEN NOT r.can_login
                THEN 'role ' || r.role || ' cannot log in, and pg_cron runs each job as the role that scheduled it: '
                     || 'choose a login role that is a member of deenroll_runner (--as)'
            WHEN r.superuser AND s.runner_logins <> '{}'
                THEN 'the jobs would run as superuser ' || r.role || ': schedule them as a login member of '
                     || 'deenroll_runner instead, with --as ' || s.runner_logins[1]
                     || coalesce(' (or ' || nullif(pg_catalog.array_to_string(s.runner_logins[2:], ', '), '')
                                 || ')', '')
            WHEN r.superuser THEN NULL
            WHEN r.cannot_execute IS NOT NULL AND r.is_runner
                THEN 'deenroll_runner may not run ' || r.cannot_execute
                     || ': `deenroll migrate` applies the grants of this release'
            WHEN r.cannot_execute IS NOT NULL
                THEN 'role ' || r.role || ' may not run the jobs'' commands (' || r.cannot_execute
                     || '): the role that migrated runs `GRANT deenroll_runner TO ' || r.role || ';`'
       END AS problem,
       CASE WHEN r.superuser AND s.runner_logins = '{}'
            THEN 'the jobs run as superuser ' || r.role || ': no login role is a member of deenroll_runner '
                 || '(CREATE ROLE ... LOGIN IN ROLE deenroll_runner, then install again with --as it)'
       END AS note
  FROM s LEFT JOIN r ON true;

-- name: cron_rights
-- In pg_cron's database: why the role may not schedule jobs for the given database, or NULL.
-- It needs USAGE on the schema cron and, for another database, cron.schedule_in_database
-- (pg_cron 1.4+) and EXECUTE on it; the login, a superuser, needs nothing. Who may give a
-- right: a superuser or a role (here, not a superuser) holding it WITH GRANT OPTION; on
-- Supabase, postgres. (Read from the catalog: looking a name up in the schema cron needs USAGE on it.)
WITH f AS (SELECT p.oid, p.proacl, p.proowner FROM pg_catalog.pg_proc AS p
            WHERE p.pronamespace = 'cron'::regnamespace AND p.proname = 'schedule_in_database'),
     n AS (SELECT s.nspacl, s.nspowner FROM pg_catalog.pg_namespace AS s WHERE s.nspname = 'cron'),
     holders AS (SELECT k.privilege,
                        pg_catalog.string_agg(DISTINCT r.rolname::text, ', ' ORDER BY r.rolname::text) AS names
                   FROM (SELECT 'USAGE', n.nspacl, 'n'::"char", n.nspowner FROM n
                         UNION ALL
                         SELECT 'EXECUTE', f.proacl, 'f'::"char", f.proowner FROM f) AS k (privilege, acl, kind, owner)
                  CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(k.acl, pg_catalog.acldefault(k.kind, k.owner))) AS a
                   JOIN pg_catalog.pg_roles AS r ON r.oid = a.grantee
                  WHERE a.privilege_type = k.privilege AND a.is_grantable AND NOT r.rolsuper
                  GROUP BY k.privilege),
     who AS (SELECT p.privilege, 'a superuser or a role holding it WITH GRANT OPTION ('
                                 || coalesce('here ' || h.names || '; ', '') || 'on Supabase, postgres)' AS may_grant
               FROM (VALUES ('USAGE'), ('EXECUTE')) AS p (privilege) LEFT JOIN holders AS h USING (privilege))
SELECT CASE WHEN %(role)s::text = current_user::text
                 AND (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user) THEN NULL
            WHEN NOT pg_catalog.has_schema_privilege(%(role)s::text, 'cron', 'USAGE')
                THEN 'role ' || %(role)s::text || ' may not use pg_cron: in database ' || pg_catalog.current_database()
                     || ', ' || (SELECT w.may_grant FROM who AS w WHERE w.privilege = 'USAGE')
                     || ' runs `GRANT USAGE ON SCHEMA cron TO ' || %(role)s::text || ';`'
            WHEN %(database)s::text = pg_catalog.current_database() THEN NULL
            WHEN NOT EXISTS (SELECT 1 FROM f)
                THEN 'pg_cron ' || (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron')
                     || ' keeps its jobs in database ' || pg_catalog.current_database() || ' and has no '
                     || 'cron.schedule_in_database (pg_cron 1.4+): upgrade it (ALTER EXTENSION pg_cron UPDATE), '
                     || 'or migrate deenroll into ' || pg_catalog.current_database()
            WHEN NOT EXISTS (SELECT 1 FROM f WHERE pg_catalog.has_function_privilege(%(role)s::text, f.oid, 'EXECUTE'))
                THEN 'role ' || %(role)s::text || ' may not schedule jobs for database ' || %(database)s::text
                     || ' (pg_cron keeps its jobs in ' || pg_catalog.current_database() || '): in database '
                     || pg_catalog.current_database() || ', '
                     || (SELECT w.may_grant FROM who AS w WHERE w.privilege = 'EXECUTE')
                     || ' runs `GRANT EXECUTE ON FUNCTION '
                     || 'cron.schedule_in_database(text,text,text,text,text,boolean) TO ' || %(role)s::text || ';`'
       END AS problem;

-- name: cron_job_named
-- What scheduling a job does to the job of its name and role (pg_cron keys named jobs by
-- both): created, updated or unchanged; with the database it runs in (NULL: no such job yet)
-- and whether it is active.
SELECT j.database,
       coalesce(j.active, true) AS active,
       CASE WHEN j.jobid IS NULL THEN 'created'
            WHEN (j.schedule, j.command) = (%(schedule)s::text, %(command)s::text) THEN 'unchanged'
            ELSE 'updated'
       END AS action
  FROM (SELECT) AS one
  LEFT JOIN cron.job AS j ON j.jobname = %(name)s AND j.username = %(role)s;

-- name: set_role
-- Act as the role the jobs should run as: pg_cron gives a job the role that schedules it.
SELECT pg_catalog.set_config('role', %(role)s, true);

-- name: cron_schedule
-- Create or update (same name, same role) a job in this database, run as the current role.
SELECT cron.schedule(%(name)s, %(schedule)s, %(command)s);

-- name: cron_schedule_in_database
-- Create or update a job that runs in another database (a superuser may name its role).
SELECT cron.schedule_in_database(%(name)s, %(schedule)s, %(command)s, %(database)s, %(username)s);

-- name: cron_our_jobs
-- Our jobs that run in the given database, as the login sees them (pg_cron shows a role only
-- its own rows; superusers and BYPASSRLS roles see every role's): named deenroll-..., or
-- whose command calls one of the jobs' functions, with the job they stand for. The same rule
-- as deenroll.de_enrollment_cron_jobs, which reads every role's jobs where pg_cron is in our
-- database; this one also serves pg_cron in another database. Whether the login may remove
-- each: its own, or any with DELETE on cron.job (superusers have it).
SELECT j.jobid, j.jobname::text AS name, k.kind, j.schedule, j.command, j.username::text, j.active, j.database,
       j.username = current_user::text OR pg_catalog.has_table_privilege('cron.job', 'DELETE') AS may_remove
  FROM cron.job AS j
 CROSS JOIN LATERAL (
       SELECT CASE WHEN j.command ~ '\mrun_de_enrollment\M' OR j.jobname = 'deenroll-run' THEN 'run'
                   WHEN j.command ~ '\m(check|alert)_de_enrollment_health\M' OR j.jobname = 'deenroll-health' THEN 'health'
                   WHEN j.command ~ '\marchive_de_enrollment_history\M' OR j.jobname = 'deenroll-cleanup' THEN 'cleanup'
              END AS kind) AS k
 WHERE j.database = %(database)s
   AND (j.jobname LIKE 'deenroll-%%' OR k.kind IS NOT NULL)
 ORDER BY j.jobid;

-- name: cron_our_jobs_all_roles
-- Our jobs of every role in the given database, read with the rights of the role that
-- migrated (pg_cron in our database only; empty when that role may not read them), as cron_our_jobs.
SELECT j.jobid, j.jobname AS name, j.kind, j.schedule, j.command, j.username, j.active, j.database,
       j.username = current_user::text OR pg_catalog.has_table_privilege('cron.job', 'DELETE') AS may_remove
  FROM deenroll.de_enrollment_cron_jobs(%(database)s) AS j;

-- name: cron_connection_settings
-- How pg_cron's jobs connect, where the login may read it (pg_settings hides what it may not).
SELECT (SELECT s.setting FROM pg_catalog.pg_settings AS s WHERE s.name = 'cron.host') AS host,
       (SELECT s.setting FROM pg_catalog.pg_settings AS s WHERE s.name = 'port') AS port,
       (SELECT s.setting FROM pg_catalog.pg_settings AS s WHERE s.name = 'cron.use_background_workers')
           AS background_workers;

-- name: cron_last_runs
-- The newest runs of each of the given jobs by pg_cron's run id (a run that never connected
-- has no start time), newest first, with their duration in milliseconds, whether the job
-- failed before its command ran (no start time), and the end of its window: a run's window
-- lasts until the job's next run starts (NULL: now), as pg_cron's end_time may come before
-- the last run rows of a CALL that ran in a background worker (the server process that ran
-- the job, recorded in both, tells the runs apart).
SELECT d.jobid, d.runid, d.job_pid, d.status, d.return_message AS message, d.start_time, d.end_time,
       round(extract(epoch FROM coalesce(d.end_time, now()) - d.start_time) * 1000)::bigint AS duration_ms,
       d.status = 'failed' AND d.start_time IS NULL AS failed_before_command,
       (SELECT n.start_time FROM cron.job_run_details AS n
         WHERE n.jobid = d.jobid AND n.runid > d.runid AND n.start_time IS NOT NULL
         ORDER BY n.runid LIMIT 1) AS window_end
  FROM unnest(%(jobids)s::bigint[]) AS j (jobid)
 CROSS JOIN LATERAL (SELECT *
                       FROM cron.job_run_details AS r
                      WHERE r.jobid = j.jobid
                      ORDER BY r.runid DESC
                      LIMIT %(limit)s) AS d
 ORDER BY d.jobid, d.runid DESC;

-- name: cron_unschedule
-- Remove one job by its id (its owner, a superuser, or a role with DELETE on cron.job may).
SELECT cron.unschedule(%(jobid)s::bigint);

-- name: job_command_calls
-- For each command (in the order given, from 1), the functions it calls (schema.name) and
-- which of them do not exist in this database: a job calling those fails every time it runs.
WITH c AS (SELECT t.command, t.i FROM unnest(%(commands)s::text[]) WITH ORDINALITY AS t (command, i)),
     calls AS (SELECT DISTINCT c.i, lower(x[1]) || '.' || lower(x[2]) AS name
                 FROM c CROSS JOIN LATERAL
                      regexp_matches(c.command, '([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s*\(', 'g') AS x)
SELECT c.i::integer AS command_index,
       ARRAY(SELECT m.name FROM calls AS m WHERE m.i = c.i ORDER BY m.name) AS calls,
       ARRAY(SELECT m.name
               FROM calls AS m
              WHERE m.i = c.i
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc AS p
                                 WHERE p.pronamespace::regnamespace::text || '.' || p.proname = m.name)
              ORDER BY m.name) AS missing
  FROM c
 ORDER BY c.i;

-- name: runs_of_job_runs
-- The de-enrollment runs each job run made (its window: start, end or NULL, server process),
-- by pg_cron's run id.
SELECT w.runid,
       pg_catalog.json_build_object('runs', c.runs, 'success', c.success, 'partial', c.partial, 'failed', c.failed,
                                    'running', c.running, 'leads_de_enrolled', c.leads_de_enrolled) AS made
  FROM public.count_de_enrollment_runs_in_windows(%(starts)s::timestamptz[], %(ends)s::timestamptz[],
                                                  %(pids)s::integer[]) AS c
  JOIN unnest(%(runids)s::bigint[]) WITH ORDINALITY AS w (runid, i) ON w.i = c.window_index;

-- name: held_of_job_runs
-- The leads still held by the de-enrollment runs each job run made, by reason, by pg_cron's run id.
SELECT w.runid, pg_catalog.json_object_agg(h.reason, h.leads ORDER BY h.reason) AS held
  FROM public.count_de_enrollment_held_in_windows(%(starts)s::timestamptz[], %(ends)s::timestamptz[],
                                                  %(pids)s::integer[]) AS h
  JOIN unnest(%(runids)s::bigint[]) WITH ORDINALITY AS w (runid, i) ON w.i = h.window_index
 GROUP BY w.runid;

-- name: alert_webhook_state
-- (The queries below serve `schedule install --alert-webhook`, `status`, `remove
-- --alert-webhook`. The URL never leaves the database: only scheme://host[:port] does.)
-- Whether the database sends alerts (on: a webhook, and pg_net can send): its webhook as
-- scheme://host (NULL: none), and why pg_net cannot send (NULL when it can).
SELECT w.target IS NOT NULL AND w.pg_net_problem IS NULL AS "on", w.target AS webhook, w.timeout_ms, w.set_at,
       w.pg_net_problem
  FROM deenroll.de_enrollment_alert_webhook() AS w;

-- name: alert_webhook_rights
-- Why the login may not set or clear the webhook (what: 'set' or 'clear'), or NULL when it
-- may: the functions are the owner's, granted to nobody; the reason names the owner and what
-- to run as it.
WITH o AS (SELECT coalesce((SELECT p.proowner::regrole::text FROM pg_catalog.pg_proc AS p
                             WHERE p.oid = pg_catalog.to_regprocedure(
                                               'deenroll.set_de_enrollment_alert_webhook(text,integer)')),
                           'the role that migrated deenroll') AS owner)
SELECT CASE WHEN NOT coalesce(pg_catalog.has_function_privilege(pg_catalog.to_regprocedure(f.signature), 'EXECUTE'),
                              false)
            THEN 'login ' || current_user::text || ' may not ' || f.what || ' the database''s alert webhook: only '
                 || o.owner || ' (the role that migrated deenroll) or a superuser may; as ' || o.owner
                 || ', `' || f.statement || '`'
       END AS problem
  FROM o, (VALUES ('set', 'deenroll.set_de_enrollment_alert_webhook(text,integer)',
                   'SELECT deenroll.set_de_enrollment_alert_webhook(''https://...'');'),
                  ('clear', 'deenroll.clear_de_enrollment_alert_webhook()',
                   'SELECT deenroll.clear_de_enrollment_alert_webhook();')) AS f (what, signature, statement)
 WHERE f.what = %(what)s;

-- name: alert_webhook_set
-- Keep the webhook; returns scheme://host[:port]. Refuses a bad URL and a database without
-- pg_net in one line.
SELECT deenroll.set_de_enrollment_alert_webhook(%(url)s);

-- name: alert_webhook_clear
-- Forget the webhook; whether there was one.
SELECT deenroll.clear_de_enrollment_alert_webhook();

-- name: alert_deliveries
-- The newest alerts the database queued, with pg_net's answer (HTTP status or error).
SELECT d.request_id, d.kind, d.target, d.queued_at, d.answered, d.status_code, d.error_msg, d.timed_out,
       d.answered_at
  FROM deenroll.de_enrollment_alert_deliveries(%(limit)s) AS d;
