-- The statements `deenroll run` sends, by name (loaded by deenroll/queries.py). Parameters are
-- psycopg's %(name)s placeholders. The run itself is the procedure deenroll.run_de_enrollment.

-- name: run_options_check
-- The database's bounds of a run's options: refuses one out of bounds (invalid_parameter_value).
SELECT deenroll.de_enrollment_run_options(%(batch_size)s::integer, %(max_runtime_ms)s::integer, %(lease_ms)s::integer);

-- name: run_clients
-- The clients a run processes, least recently run first.
SELECT client_id::text FROM public.de_enrollment_clients();

-- name: run_client_exists
-- Whether a client has campaigns or leads (what --client-id may name).
SELECT public.de_enrollment_client_exists(%(client_id)s::uuid);

-- name: run_deadline
-- The end of a run's budget on the database's clock: every connection of the run stops at it.
SELECT pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => %(max_runtime_ms)s::integer / 1000.0);

-- name: run_missing_definitions
-- Which of the function and view files of this version have no object in the database.
SELECT o.kind || ' ' || o.schema || '.' || o.name
  FROM ROWS FROM (pg_catalog.unnest(%(kinds)s::text[]), pg_catalog.unnest(%(schemas)s::text[]),
                  pg_catalog.unnest(%(names)s::text[])) WITH ORDINALITY AS o (kind, schema, name, n)
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_proc AS p
                    WHERE o.kind = 'function' AND p.proname = o.name
                      AND p.pronamespace = pg_catalog.to_regnamespace(o.schema))
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_class AS c
                    WHERE o.kind = 'view' AND c.relname = o.name AND c.relkind = 'v'
                      AND c.relnamespace = pg_catalog.to_regnamespace(o.schema))
 ORDER BY o.n;

-- name: run_client
-- One client's run, whole, by the run's procedure: lease, batches, fold, close; its JSON summary.
CALL deenroll.run_de_enrollment(p_client_id => %(client_id)s::uuid, p_batch_size => %(batch_size)s::integer,
                                p_max_runtime_ms => %(max_runtime_ms)s::integer, p_lease_ms => %(lease_ms)s::integer,
                                p_deadline => %(deadline)s::timestamptz, p_runner_host => %(host)s::text,
                                p_runner_pid => %(pid)s::integer, p_login_pid => %(login_pid)s::integer,
                                p_progress => true);

-- name: run_help
-- Batches of another connection's run, under that run, until they come back short.
CALL deenroll.help_de_enrollment_run(p_run_id => %(run_id)s::uuid, p_client_id => %(client_id)s::uuid,
                                     p_batch_size => %(batch_size)s::integer,
                                     p_deadline => %(deadline)s::timestamptz, p_progress => true);

-- name: run_close_failed
-- Close a run 'failed' (a stop signal cut its procedure); its row as it is then, named like
-- a client of the procedure's summary.
SELECT id::text AS run_id, status, leads_evaluated, leads_de_enrolled, leads_completed AS completed,
       leads_opted_out AS opted_out, batches, duration_ms, error_details AS error, leads_held AS newly_held
  FROM public.finish_de_enrollment_run(%(run_id)s::uuid, 'failed', %(message)s::text);

-- name: run_fold_remaining
-- The run's last step over every client: fold the counter deltas no client's run folded.
SELECT deenroll.fold_remaining_de_enrollment_deltas(%(max_runtime_ms)s::integer);

-- name: run_batch
-- One batch of a run in one statement (heartbeat, claim, process); what the run's procedure does per batch.
SELECT b.lead_id, b.campaign_id, b.outcome, b.messages_received, b.held_reason
  FROM public.de_enrollment_heartbeat(%s::uuid) AS h (run_id)
 CROSS JOIN LATERAL public.process_de_enrollment_batch(h.run_id,
       ARRAY(SELECT g.lead_id FROM public.get_leads_for_de_enrollment(%s::uuid, %s::integer) AS g)) AS b;

-- name: dry_run_counts
-- What a run would de-enroll for one client, per campaign (nothing is changed).
SELECT campaign_id, campaign_name, total_messages, completed, opted_out
  FROM public.count_leads_for_de_enrollment(%(client_id)s::uuid);

-- name: invalid_campaigns
-- One client's campaigns whose messages is not a JSON array.
SELECT campaign_id, campaign_name, messages_type, active_leads
  FROM public.de_enrollment_invalid_campaigns(%(client_id)s::uuid);

-- name: held_by_reason
-- One client's held leads, counted by reason.
SELECT h.reason, pg_catalog.count(*) AS leads FROM public.de_enrollment_held_leads(%(client_id)s::uuid) AS h
 GROUP BY h.reason ORDER BY h.reason;
