-- The statements `deenroll run` sends, by name (loaded by deenroll/queries.py). Parameters are
-- psycopg's %(name)s placeholders. The run itself is the procedure deenroll.run_de_enrollment:
-- one CALL per connection, whatever the number of clients.

-- name: run_options_check
-- The database's bounds of a run's options: refuses one out of bounds (invalid_parameter_value).
SELECT deenroll.de_enrollment_run_options(%(batch_size)s::integer, %(max_runtime_ms)s::integer, %(lease_ms)s::integer);

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

-- name: run_call
-- One call of the run's loop: every client (or the one given), shared with the other
-- calls of the same run (p_run_group), then the runs still open helped, then the final fold.
-- Every client each time: `deenroll run` passes none over for having run a moment ago.
CALL deenroll.run_de_enrollment_loop(p_client_id => %(client_id)s::uuid, p_batch_size => %(batch_size)s::integer,
                                     p_max_runtime_ms => %(max_runtime_ms)s::integer,
                                     p_lease_ms => %(lease_ms)s::integer, p_runner_host => %(host)s::text,
                                     p_runner_pid => %(pid)s::integer, p_login_pid => %(login_pid)s::integer,
                                     p_progress => true, p_run_group => %(run_group)s::uuid, p_idle_ms => 0);

-- name: run_close_failed
-- Close runs 'failed' (a stop signal or a lost database cut their procedure); their rows as they
-- are then, named like the clients of the procedure's summary.
SELECT f.id::text AS run_id, f.status, f.leads_evaluated, f.leads_de_enrolled, f.leads_completed AS completed,
       f.leads_opted_out AS opted_out, f.batches, f.duration_ms, f.error_details AS error, f.leads_held AS newly_held
  FROM pg_catalog.unnest(%(run_ids)s::uuid[]) AS r (id),
       LATERAL public.finish_de_enrollment_run(r.id, 'failed', %(message)s::text) AS f;

-- name: dry_run
-- What a run would de-enroll now, per client (nothing is changed).
SELECT client_id::text, campaigns, invalid_campaigns, held
  FROM deenroll.de_enrollment_dry_run(%(client_id)s::uuid);

-- name: run_exit_code
-- The run's exit status from its clients' results, by the database's one rule.
SELECT deenroll.de_enrollment_run_exit_code(%(clients)s::jsonb, %(fold_error)s::text, %(dry_run)s::boolean);
