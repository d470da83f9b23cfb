-- de_enrollment_alert_document: the JSON document every alert of deenroll carries (who sends it, which release, what kind, a line of text, from where, when, the details)
-- requires: 0030_alert_webhook
-- after: de_enrollment_version
--
-- One shape for `deenroll run`, `deenroll health-check` and the database's own alerts:
-- {"source": "deenroll", "version", "kind" ("run" or "health-check"), "text" (one line:
-- Slack-style webhooks show it), "host" (the sender: the machine of the command, or
-- "database <name>" when the database sends it), "sent_at" (UTC, to the second),
-- "details"}.
CREATE FUNCTION deenroll.de_enrollment_alert_document(
    p_kind    text,
    p_text    text,
    p_details jsonb,
    p_host    text DEFAULT NULL
)
RETURNS jsonb
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_catalog.jsonb_build_object(
        'source', 'deenroll',
        'version', deenroll.de_enrollment_version(),
        'kind', p_kind,
        'text', coalesce(p_text, pg_catalog.format('deenroll %s alert', p_kind)),
        'host', coalesce(nullif(p_host, ''), 'database ' || pg_catalog.current_database()),
        'sent_at', pg_catalog.to_char(pg_catalog.clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
        'details', p_details)
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_alert_document(text, text, jsonb, text) IS
    'The JSON document of an alert: source, version, kind, text, host, sent_at, details.';
