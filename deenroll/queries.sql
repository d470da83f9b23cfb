-- The statements the operations commands send, by name (loaded by deenroll/queries.py).
-- Each one starts with a "-- name: <name>" line, then a one-line purpose comment.
-- Parameters are psycopg's %(name)s placeholders, so a literal percent sign is written %%.
-- What decides about data lives in the functions and views; these only read them or call them.

-- name: relation_exists
-- Whether a table or view is visible on the search path.
SELECT to_regclass(%(name)s) IS NOT NULL;

-- name: function_exists
-- Whether a function with this signature is visible on the search path.
SELECT to_regprocedure(%(signature)s) IS NOT NULL;

-- name: database_exists
-- Whether the server has a database of this name.
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = %(name)s);

-- name: create_database
-- Create the embedded server's database ({name}: its name, filled in as an identifier by database.py).
CREATE DATABASE {name};

-- name: server_version
-- The server's version, as it says it.
SHOW server_version;

-- name: health
-- Every client's health (or one client's), errors first, then warnings.
SELECT *
  FROM public.de_enrollment_health
 WHERE %(client_id)s::uuid IS NULL OR client_id = %(client_id)s::uuid
 ORDER BY CASE status WHEN 'error' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, client_id;

-- name: rls_blind_spots
-- Platform tables whose row-level security hides rows from the role the engine runs as.
SELECT reason FROM public.de_enrollment_rls_blind_spots();

-- name: jit_off_here
-- For this transaction only (a transaction-mode pooler hands the session on after it): JIT
-- (on in PostgreSQL 15 by default) would take longer to compile the stuck-lead views' plans than
-- they take to run.
SET LOCAL jit = off;

-- name: stuck_by_reason
-- How many leads are stuck, per reason (every client, or one).
SELECT reason, count(*)
  FROM public.de_enrollment_stuck_leads
 WHERE %(client_id)s::uuid IS NULL OR client_id = %(client_id)s::uuid
 GROUP BY reason
 ORDER BY reason;

-- name: stuck_leads
-- The first stuck leads (every client, or one), in a stable order.
SELECT *
  FROM public.de_enrollment_stuck_leads
 WHERE %(client_id)s::uuid IS NULL OR client_id = %(client_id)s::uuid
 ORDER BY client_id, campaign_id, lead_id
 LIMIT %(limit)s;

-- name: campaign_links_by_link
-- How many leads are linked to a campaign of another client or of none, per kind of link (every client, or one).
SELECT link, count(*)
  FROM public.de_enrollment_campaign_links
 WHERE %(client_id)s::uuid IS NULL OR client_id = %(client_id)s::uuid
 GROUP BY link
 ORDER BY link;

-- name: campaign_links
-- The first leads linked to a campaign of another client or of none, in a stable order.
SELECT *
  FROM public.de_enrollment_campaign_links
 WHERE %(client_id)s::uuid IS NULL OR client_id = %(client_id)s::uuid
 ORDER BY client_id, campaign_id, lead_id
 LIMIT %(limit)s;

-- name: drift
-- Campaigns whose stored counters differ from their leads, largest difference first.
SELECT *
  FROM public.campaign_stats_drift
 ORDER BY max_difference DESC, client_id, campaign_id;

-- name: client_exists
-- Whether a client has at least one campaign or lead.
SELECT public.de_enrollment_client_exists(%(client_id)s::uuid);

-- name: recalculate
-- Recount the counters of one client's campaigns (NULL: all); the campaigns that changed.
SELECT * FROM public.recalculate_campaign_stats(%(client_id)s::uuid);

-- name: archive_history
-- The monthly cleanup: archive old runs, delete old lead logs (or only count, on a dry run).
-- {retention}: the retention the user gave, as named arguments (filled in by maintenance.py);
-- what is not given, the function's own default decides.
SELECT * FROM public.archive_de_enrollment_history({retention}p_dry_run => %(dry_run)s::boolean);

-- name: maintained_tables
-- The tables the cleanup vacuums, in order.
SELECT table_name FROM public.de_enrollment_maintained_tables() ORDER BY ord;

-- name: vacuum_table
-- Reclaim the space of archived runs or deleted lead logs and refresh the planner's
-- statistics ({table}: the table's name, filled in as an identifier by maintenance.py).
VACUUM (ANALYZE) public.{table};

-- name: demo_outcomes
-- What the runs did for the given clients: de-enrolled per outcome, stuck, drifted, duplicated.
SELECT (SELECT count(*) FROM de_enrollment_lead_log
         WHERE client_id = ANY (%(client_ids)s::uuid[]) AND outcome = 'completed') AS completed,
       (SELECT count(*) FROM de_enrollment_lead_log
         WHERE client_id = ANY (%(client_ids)s::uuid[]) AND outcome = 'opted_out') AS opted_out,
       (SELECT count(*) FROM de_enrollment_stuck_leads
         WHERE client_id = ANY (%(client_ids)s::uuid[])) AS stuck,
       (SELECT count(*) FROM campaign_stats_drift
         WHERE client_id = ANY (%(client_ids)s::uuid[])) AS drifted,
       (SELECT count(*) FROM de_enrollment_duplicates AS d
         WHERE EXISTS (SELECT 1 FROM leads AS l
                        WHERE l.id = d.lead_id AND l.client_id = ANY (%(client_ids)s::uuid[]))) AS duplicates;

-- name: cron_context
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
-- The role a job would run as (the given one, else the login): whether it exists, may log in,
-- is a superuser, and which of the jobs' functions (schema.name) is missing or not executable.
SELECT r.rolname::text AS role,
       r.rolcanlogin   AS can_login,
       r.rolsuper      AS superuser,
       pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER') AS login_may_set_role,
       pg_catalog.to_regrole('deenroll_runner') IS NOT NULL
           AND pg_catalog.pg_has_role(r.oid, 'deenroll_runner', 'MEMBER') AS is_runner,
       ARRAY(SELECT f.name
               FROM unnest(%(functions)s::text[]) AS f (name)
              WHERE NOT EXISTS (SELECT 1
                                  FROM pg_catalog.pg_proc AS p
                                 WHERE p.pronamespace::regnamespace::text || '.' || p.proname = f.name
                                   AND pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')
                                   AND pg_catalog.has_schema_privilege(r.oid, p.pronamespace, 'USAGE'))
              ORDER BY f.name) AS cannot_execute
  FROM pg_catalog.pg_roles AS r
 WHERE r.rolname = coalesce(%(role)s::text, current_user::text);

-- name: runner_logins
-- Login roles that are members of deenroll_runner and not superusers: who jobs should run as.
SELECT r.rolname::text
  FROM pg_catalog.pg_roles AS r
 WHERE r.rolcanlogin AND NOT r.rolsuper
   AND pg_catalog.to_regrole('deenroll_runner') IS NOT NULL
   AND pg_catalog.pg_has_role(r.oid, 'deenroll_runner', 'MEMBER')
 ORDER BY r.rolname;

-- name: cron_rights
-- In pg_cron's database: whether the role may use the schema cron and schedule in another
-- database, and whether this pg_cron has schedule_in_database at all (1.4+); and who, not
-- being a superuser, holds each right WITH GRANT OPTION and so may give it (on Supabase,
-- postgres). (Read from the catalog: looking a name up in the schema cron needs USAGE on it.)
WITH f AS (SELECT p.oid, p.proacl, p.proowner FROM pg_catalog.pg_proc AS p
            WHERE p.pronamespace = 'cron'::regnamespace AND p.proname = 'schedule_in_database'),
     n AS (SELECT s.nspacl, s.nspowner FROM pg_catalog.pg_namespace AS s WHERE s.nspname = 'cron')
SELECT pg_catalog.has_schema_privilege(%(role)s::text, 'cron', 'USAGE') AS usage_on_cron,
       EXISTS (SELECT 1 FROM f) AS has_schedule_in_database,
       EXISTS (SELECT 1 FROM f WHERE pg_catalog.has_function_privilege(%(role)s::text, f.oid, 'EXECUTE'))
           AS may_schedule_in_database,
       (SELECT e.extversion FROM pg_catalog.pg_extension AS e WHERE e.extname = 'pg_cron') AS version,
       ARRAY(SELECT DISTINCT r.rolname::text
               FROM n CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) AS a
               JOIN pg_catalog.pg_roles AS r ON r.oid = a.grantee
              WHERE a.privilege_type = 'USAGE' AND a.is_grantable AND NOT r.rolsuper
              ORDER BY 1) AS usage_grantors,
       ARRAY(SELECT DISTINCT r.rolname::text
               FROM f CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(f.proacl, pg_catalog.acldefault('f', f.proowner))) AS a
               JOIN pg_catalog.pg_roles AS r ON r.oid = a.grantee
              WHERE a.privilege_type = 'EXECUTE' AND a.is_grantable AND NOT r.rolsuper
              ORDER BY 1) AS schedule_in_database_grantors;

-- name: cron_job_named
-- A job of this name scheduled by this role (pg_cron keys named jobs by name and role).
SELECT j.jobid, j.schedule, j.command, j.database, j.username, j.active
  FROM cron.job AS j
 WHERE j.jobname = %(name)s AND j.username = %(role)s;

-- name: set_role
-- Act as the role the jobs should run as: pg_cron gives a job the role that schedules it.
SELECT pg_catalog.set_config('role', %(role)s, true);

-- name: reset_role
-- Back to the login, within the transaction.
SELECT pg_catalog.set_config('role', 'none', true);

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
-- database; this one also serves pg_cron in another database.
SELECT j.jobid, j.jobname, j.schedule, j.command, j.database, j.username, j.active, k.kind
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
-- migrated (pg_cron in our database only; empty when that role may not read them).
SELECT j.jobid, j.jobname, j.schedule, j.command, j.database, j.username, j.active, j.kind
  FROM deenroll.de_enrollment_cron_jobs(%(database)s) AS j;

-- name: cron_login_rights
-- Who the login is in pg_cron's database and whether it may remove any role's job
-- (cron.unschedule of another role's job needs DELETE on cron.job; superusers have it).
SELECT current_user::text AS login,
       pg_catalog.has_table_privilege('cron.job', 'DELETE') AS may_remove_any;

-- name: cron_connection_settings
-- How pg_cron's jobs connect, where the login may read it (pg_settings hides what it may not).
SELECT (SELECT s.setting FROM pg_catalog.pg_settings AS s WHERE s.name = 'cron.host') AS host,
       (SELECT s.setting FROM pg_catalog.pg_settings AS s WHERE s.name = 'port') AS port,
       (SELECT s.setting FROM pg_catalog.pg_settings AS s WHERE s.name = 'cron.use_background_workers')
           AS background_workers;

-- name: cron_last_runs
-- The newest runs of each of the given jobs by pg_cron's run id (a run that never connected
-- has no start time), newest first, with their duration in milliseconds, whether the job
-- failed before its command ran (no start time), and how many runs pg_cron keeps for it.
SELECT d.jobid, d.runid, d.job_pid, d.status, d.return_message, d.start_time, d.end_time,
       round(extract(epoch FROM coalesce(d.end_time, now()) - d.start_time) * 1000)::bigint AS duration_ms,
       d.status = 'failed' AND d.start_time IS NULL AS failed_before_command
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
-- The de-enrollment runs each job run made (windows in the order given, numbered from 1).
SELECT * FROM public.count_de_enrollment_runs_in_windows(%(starts)s::timestamptz[], %(ends)s::timestamptz[],
                                                         %(pids)s::integer[]);

-- name: held_of_job_runs
-- The leads still held by the de-enrollment runs each job run made, by reason.
SELECT * FROM public.count_de_enrollment_held_in_windows(%(starts)s::timestamptz[], %(ends)s::timestamptz[],
                                                         %(pids)s::integer[]);

-- name: missing_functions
-- Which of the given functions (schema.name) do not exist in this database.
SELECT f.name
  FROM unnest(%(functions)s::text[]) AS f (name)
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc AS p
                    WHERE p.pronamespace::regnamespace::text || '.' || p.proname = f.name)
 ORDER BY f.name;

-- name: backend_pid
-- The server session's process id (a pooler that hands out sessions per transaction changes it).
SELECT pg_catalog.pg_backend_pid();
