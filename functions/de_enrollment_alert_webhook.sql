-- de_enrollment_alert_webhook: whether the database sends alerts: its webhook as scheme://host[:port] only, the timeout, when it was set, and what keeps pg_net from sending
-- requires: 0030_alert_webhook
-- after: de_enrollment_webhook_parts de_enrollment_pg_net_problem
--
-- One row, target NULL when no webhook is kept. Runs as its owner (SECURITY DEFINER): the
-- table is the owner's alone, and nothing of the URL beyond scheme and host leaves it.
CREATE FUNCTION deenroll.de_enrollment_alert_webhook()
RETURNS TABLE (target text, timeout_ms integer, set_at timestamptz, pg_net_problem text)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(p.target, CASE WHEN w.url IS NOT NULL THEN '<invalid webhook URL>' END),
           w.timeout_ms, w.set_at, deenroll.de_enrollment_pg_net_problem()
      FROM (SELECT) AS one
      LEFT JOIN deenroll.alert_webhook AS w ON true
      LEFT JOIN LATERAL deenroll.de_enrollment_webhook_parts(w.url) AS p ON w.url IS NOT NULL
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_alert_webhook() IS
    'The database''s alert webhook as scheme://host[:port] (NULL when none), its timeout, when it was set, and why pg_net cannot send (NULL when it can).';
