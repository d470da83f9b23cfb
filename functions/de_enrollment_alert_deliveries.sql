-- de_enrollment_alert_deliveries: the alerts the database queued lately, newest first, with pg_net's answer to each (HTTP status or error) once it has one
-- requires: 0030_alert_webhook
--
-- status_code and error_msg are NULL while pg_net has not sent the request yet, and again
-- once pg_net forgot its answer (pg_net.ttl, 6 hours by default): `answered` tells them
-- apart from an answer. target is the webhook as scheme://host[:port]; nothing else of the
-- URL is kept with a delivery. Runs as its owner (SECURITY DEFINER): the record of deliveries
-- is the owner's, and pg_net's response table is read only when pg_net is there.
CREATE FUNCTION deenroll.de_enrollment_alert_deliveries(p_limit integer DEFAULT 10)
RETURNS TABLE (request_id bigint, kind text, target text, queued_at timestamptz, answered boolean,
               status_code integer, error_msg text, timed_out boolean, answered_at timestamptz)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF pg_catalog.to_regclass('net._http_response') IS NULL THEN
        RETURN QUERY
            SELECT d.request_id, d.kind, d.target, d.queued_at, false, NULL::integer, NULL::text,
                   NULL::boolean, NULL::timestamptz
              FROM deenroll.alert_deliveries AS d
             ORDER BY d.queued_at DESC, d.request_id DESC
             LIMIT greatest(coalesce(p_limit, 10), 0);
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT d.request_id, d.kind, d.target, d.queued_at, r.id IS NOT NULL, r.status_code, r.error_msg,
                r.timed_out, r.created
           FROM deenroll.alert_deliveries AS d
           LEFT JOIN net._http_response AS r ON r.id = d.request_id
          ORDER BY d.queued_at DESC, d.request_id DESC
          LIMIT $1'
        USING greatest(coalesce(p_limit, 10), 0);
END;
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_alert_deliveries(integer) IS
    'The alerts the database queued lately, newest first: kind, webhook as scheme://host, when, and pg_net''s answer (status_code or error_msg) once there is one.';
