-- set_de_enrollment_alert_webhook: keep the webhook the database sends its alerts to (the owner's function); returns what may be shown of it, scheme://host[:port]
-- requires: 0030_alert_webhook
-- after: de_enrollment_webhook_parts de_enrollment_pg_net_problem
--
-- SELECT deenroll.set_de_enrollment_alert_webhook('https://hooks.slack.com/services/...');
-- Refuses, in one line and changing nothing, a URL that is not http(s) with a host, a timeout
-- out of 1..600000 ms, and a database without pg_net (how to enable it is in the message).
-- No message shows more of the URL than its scheme and host. The record of past deliveries
-- is for the previous webhook: it is emptied.
-- Granted to nobody: only the owner of deenroll's tables (the role that migrates) keeps it.
CREATE FUNCTION deenroll.set_de_enrollment_alert_webhook(
    p_url        text,
    p_timeout_ms integer DEFAULT 10000
)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_parts   record;
    v_problem text := deenroll.de_enrollment_pg_net_problem();
BEGIN
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION '%', v_problem USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT * INTO v_parts FROM deenroll.de_enrollment_webhook_parts(p_url);
    IF v_parts.problem IS NOT NULL THEN
        RAISE EXCEPTION '%', v_parts.problem USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_timeout_ms IS NULL OR p_timeout_ms NOT BETWEEN 1 AND 600000 THEN
        RAISE EXCEPTION 'the alert timeout must be between 1 and 600000 milliseconds, got %',
              coalesce(p_timeout_ms::text, 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO deenroll.alert_webhook AS w (singleton, url, timeout_ms, set_at)
    VALUES (true, p_url, p_timeout_ms, pg_catalog.now())
    ON CONFLICT (singleton) DO UPDATE SET url = excluded.url, timeout_ms = excluded.timeout_ms, set_at = excluded.set_at;
    DELETE FROM deenroll.alert_deliveries;
    RETURN v_parts.target;
END;
$fn$;

COMMENT ON FUNCTION deenroll.set_de_enrollment_alert_webhook(text, integer) IS
    'Keeps the webhook the database posts its alerts to (needs pg_net); returns scheme://host[:port]. The owner''s function.';
