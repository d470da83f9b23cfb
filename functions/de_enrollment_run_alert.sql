-- de_enrollment_run_alert: the alert document of a run from its clients' results, or NULL when nothing in it needs attention (exit status 0)
-- requires: 0030_alert_webhook
-- after: de_enrollment_run_exit_code de_enrollment_alert_document
--
-- What `deenroll run` posts and what the database sends after a CALL of the run's procedure.
-- p_clients: a JSON array of one object per client as the run's procedure returns them
-- (client_id, run_id, status, leads_evaluated, leads_de_enrolled, completed, opted_out,
-- batches, duration_ms, error, invalid_campaigns, held by reason, newly_held; `deenroll run`
-- adds warnings). Missing counts are 0, missing lists empty; what is not an object is left out.
-- p_fold_error: the final fold's error; p_host: the sender (NULL: this database).
-- details: {"command": "run", "exit_code", "totals" over every client, "clients": the
-- clients that failed, ended partial or hold leads, each with every field above and
-- leads_held, "fold_error"}.
CREATE FUNCTION deenroll.de_enrollment_run_alert(
    p_clients    jsonb,
    p_fold_error text DEFAULT NULL,
    p_host       text DEFAULT NULL
)
RETURNS jsonb
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH input AS (
        SELECT e.value AS r, e.ord
          FROM pg_catalog.jsonb_array_elements(CASE WHEN pg_catalog.jsonb_typeof(p_clients) = 'array'
                                                    THEN p_clients ELSE '[]' END) WITH ORDINALITY AS e (value, ord)
         WHERE pg_catalog.jsonb_typeof(e.value) = 'object'
    ), clients AS (
        SELECT i.ord, c.*,
               (SELECT coalesce(pg_catalog.sum(CASE WHEN pg_catalog.jsonb_typeof(h.value) = 'number'
                                                     THEN h.value::text::numeric END), 0)::bigint
                  FROM pg_catalog.jsonb_each(c.held) AS h) AS leads_held
          FROM input AS i
         CROSS JOIN LATERAL (
            SELECT i.r -> 'client_id' AS client_id,
                   i.r -> 'run_id' AS run_id,
                   i.r ->> 'status' AS status,
                   n.leads_evaluated, n.leads_de_enrolled, n.completed, n.opted_out, n.batches,
                   n.duration_ms, n.newly_held,
                   i.r -> 'error' AS error,
                   CASE WHEN pg_catalog.jsonb_typeof(i.r -> 'invalid_campaigns') = 'array'
                        THEN i.r -> 'invalid_campaigns' ELSE '[]' END AS invalid_campaigns,
                   CASE WHEN pg_catalog.jsonb_typeof(i.r -> 'warnings') = 'array'
                        THEN i.r -> 'warnings' ELSE '[]' END AS warnings,
                   CASE WHEN pg_catalog.jsonb_typeof(i.r -> 'held') = 'object'
                        THEN i.r -> 'held' ELSE '{}' END AS held
              -- the counts, 0 where missing or not a number
              FROM (SELECT (pg_catalog.jsonb_object_agg(k.key, CASE WHEN pg_catalog.jsonb_typeof(i.r -> k.key) = 'number'
                                                                   THEN (i.r ->> k.key)::numeric::bigint ELSE 0 END))
                           AS nums
                      FROM pg_catalog.unnest(ARRAY['leads_evaluated', 'leads_de_enrolled', 'completed', 'opted_out',
                                        'batches', 'duration_ms', 'newly_held']) AS k (key)) AS x
             CROSS JOIN LATERAL pg_catalog.jsonb_to_record(x.nums) AS n (
                leads_evaluated bigint, leads_de_enrolled bigint, completed bigint, opted_out bigint,
                batches bigint, duration_ms bigint, newly_held bigint)
         ) AS c
    ), summary AS (
        SELECT deenroll.de_enrollment_run_exit_code(p_clients, p_fold_error) AS exit_code,
               pg_catalog.jsonb_build_object(
                   'clients', pg_catalog.count(*),
                   'success', pg_catalog.count(*) FILTER (WHERE c.status = 'success'),
                   'partial', pg_catalog.count(*) FILTER (WHERE c.status = 'partial'),
                   'failed', pg_catalog.count(*) FILTER (WHERE c.status = 'failed'),
                   'skipped', pg_catalog.count(*) FILTER (WHERE c.status = 'skipped'),
                   'leads_evaluated', coalesce(pg_catalog.sum(c.leads_evaluated), 0),
                   'leads_de_enrolled', coalesce(pg_catalog.sum(c.leads_de_enrolled), 0),
                   'completed', coalesce(pg_catalog.sum(c.completed), 0),
                   'opted_out', coalesce(pg_catalog.sum(c.opted_out), 0),
                   'batches', coalesce(pg_catalog.sum(c.batches), 0),
                   'leads_held', coalesce(pg_catalog.sum(c.leads_held), 0)) AS totals,
               coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'client_id', c.client_id, 'run_id', c.run_id, 'status', c.status,
                   'leads_evaluated', c.leads_evaluated, 'leads_de_enrolled', c.leads_de_enrolled,
                   'completed', c.completed, 'opted_out', c.opted_out, 'batches', c.batches,
                   'duration_ms', c.duration_ms, 'error', c.error, 'invalid_campaigns', c.invalid_campaigns,
                   'warnings', c.warnings, 'leads_held', c.leads_held, 'held', c.held,
                   'newly_held', c.newly_held) ORDER BY c.ord)
                   FILTER (WHERE c.status IN ('failed', 'partial') OR c.held <> '{}'), '[]') AS flagged
          FROM clients AS c
    )
    -- the text names the sender as the document does
    SELECT pg_catalog.jsonb_set(d.doc, '{text}', pg_catalog.to_jsonb(
               pg_catalog.format('deenroll run on %s: %s failed, %s partial of %s client(s)',
                                 d.doc ->> 'host', s.totals -> 'failed', s.totals -> 'partial', s.totals -> 'clients')
               || CASE WHEN (s.totals ->> 'leads_held')::bigint > 0
                       THEN pg_catalog.format(', %s lead(s) held', s.totals -> 'leads_held') ELSE '' END))
      FROM summary AS s
     CROSS JOIN LATERAL (
        SELECT deenroll.de_enrollment_alert_document(
                   'run', NULL,
                   pg_catalog.jsonb_build_object('command', 'run', 'exit_code', s.exit_code, 'totals', s.totals,
                                                 'clients', s.flagged, 'fold_error', p_fold_error),
                   p_host) AS doc) AS d
     WHERE s.exit_code <> 0
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_run_alert(jsonb, text, text) IS
    'The alert document of a run (kind run) from its clients'' results and the final fold''s error; NULL when its exit status is 0.';
