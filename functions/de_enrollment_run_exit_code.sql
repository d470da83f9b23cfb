-- de_enrollment_run_exit_code: a run's exit status from its clients' results: 2 a client or the final fold failed, 1 a client ended partial or leads are held, else 0
-- requires: 0030_alert_webhook
--
-- The one rule of what in a run needs someone's attention: `deenroll run` exits with it, and a
-- run sends its alert when it is not 0 (de_enrollment_run_alert). p_clients: a JSON array of
-- one object per client as the run's procedure returns them ("status", "held" by reason,
-- "invalid_campaigns"); anything else in it counts for nothing. A dry run (p_dry_run) that
-- finds campaigns whose messages is not an array also exits 1.
CREATE FUNCTION deenroll.de_enrollment_run_exit_code(
    p_clients    jsonb,
    p_fold_error text    DEFAULT NULL,
    p_dry_run    boolean DEFAULT false
)
RETURNS integer
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH c AS (
        SELECT e.value AS r
          FROM pg_catalog.jsonb_array_elements(CASE WHEN pg_catalog.jsonb_typeof(p_clients) = 'array'
                                                    THEN p_clients ELSE '[]' END) AS e
         WHERE pg_catalog.jsonb_typeof(e.value) = 'object'
    )
    SELECT CASE
        WHEN nullif(p_fold_error, '') IS NOT NULL
          OR EXISTS (SELECT FROM c WHERE c.r ->> 'status' = 'failed') THEN 2
        WHEN EXISTS (SELECT FROM c
                      WHERE c.r ->> 'status' = 'partial'
                         OR (pg_catalog.jsonb_typeof(c.r -> 'held') = 'object' AND c.r -> 'held' <> '{}')) THEN 1
        WHEN coalesce(p_dry_run, false)
         AND EXISTS (SELECT FROM c
                      WHERE pg_catalog.jsonb_typeof(c.r -> 'invalid_campaigns') = 'array'
                        AND c.r -> 'invalid_campaigns' <> '[]') THEN 1
        ELSE 0 END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_run_exit_code(jsonb, text, boolean) IS
    'A run''s exit status from its clients'' results: 2 when a client or the final fold failed, 1 when a client ended partial or leads are held (or a dry run found invalid campaigns), else 0.';
