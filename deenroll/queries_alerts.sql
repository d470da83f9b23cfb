-- The alert documents, built by the database's functions (the same ones the database's own
-- alerts use); the command only delivers them.

-- name: alert_run_document
-- A run's alert from its clients' results (each client as --json shows it), or NULL when
-- nothing in the run needs attention.
SELECT deenroll.de_enrollment_run_alert(%(clients)s::jsonb, %(fold_error)s::text, %(host)s::text);

-- name: alert_health_document
-- The health check's alert (clients in error, row-level security hiding rows), or NULL.
SELECT deenroll.de_enrollment_health_alert(%(host)s::text);
