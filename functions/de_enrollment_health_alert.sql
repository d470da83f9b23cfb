-- de_enrollment_health_alert: the alert document of a health check (clients in error by de_enrollment_health, row-level security hiding rows from deenroll), or NULL when there is no error
-- requires: 0030_alert_webhook
-- after: de_enrollment_health de_enrollment_rls_blind_spots de_enrollment_alert_document
--
-- What `deenroll health-check` posts and what the database's health job sends. Warnings page
-- nobody: only an error makes a document. details: {"counts": clients per status (ok,
-- warning, error), "clients": the rows of de_enrollment_health in error, by client_id}; the
-- text names the hidden tables and the first five clients with their reasons.
-- Runs with its caller's rights: it reads the view and de_enrollment_rls_blind_spots().
CREATE FUNCTION deenroll.de_enrollment_health_alert(p_host text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH h AS (
        SELECT h.*, pg_catalog.row_number() OVER (PARTITION BY h.status ORDER BY h.client_id) AS nth
          FROM public.de_enrollment_health AS h
    ), blind AS (
        SELECT coalesce(pg_catalog.array_agg(b.reason ORDER BY b.table_name), '{}') AS reasons
          FROM public.de_enrollment_rls_blind_spots() AS b
    ), judged AS (
        SELECT pg_catalog.jsonb_build_object(
                   'ok', pg_catalog.count(*) FILTER (WHERE h.status = 'ok'),
                   'warning', pg_catalog.count(*) FILTER (WHERE h.status = 'warning'),
                   'error', pg_catalog.count(*) FILTER (WHERE h.status = 'error')) AS counts,
               pg_catalog.count(*) FILTER (WHERE h.status = 'error') AS errors,
               coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(h) - 'nth' ORDER BY h.client_id)
                            FILTER (WHERE h.status = 'error'), '[]') AS clients,
               coalesce(pg_catalog.array_agg(pg_catalog.format('%s: %s', h.client_id,
                                                               pg_catalog.array_to_string(h.status_reasons, ', '))
                                             ORDER BY h.client_id)
                            FILTER (WHERE h.status = 'error' AND h.nth <= 5), '{}') AS shown
          FROM h
    )
    SELECT deenroll.de_enrollment_alert_document(
               'health-check',
               pg_catalog.format('deenroll health check: %s client(s) in error: %s', j.errors,
                                 pg_catalog.array_to_string(b.reasons || j.shown, '; ')),
               pg_catalog.jsonb_build_object('counts', j.counts, 'clients', j.clients),
               p_host)
      FROM judged AS j CROSS JOIN blind AS b
     WHERE j.errors > 0 OR pg_catalog.cardinality(b.reasons) > 0
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_health_alert(text) IS
    'The alert document of a health check (kind health-check): the clients in error and any row-level security hiding rows from deenroll; NULL when there is no error.';
