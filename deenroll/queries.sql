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

-- name: backend_pid
-- The server session's process id (a pooler that hands out sessions per transaction changes it).
SELECT pg_catalog.pg_backend_pid();
