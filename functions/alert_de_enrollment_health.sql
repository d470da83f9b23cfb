-- alert_de_enrollment_health: the health job that alerts: when a client is in error, queue the health alert through pg_net, commit it, then fail like check_de_enrollment_health
-- requires: 0030_alert_webhook
-- after: de_enrollment_health_alert send_de_enrollment_alert check_de_enrollment_health de_enrollment_pin_settings
--
-- CALL deenroll.alert_de_enrollment_health();   (the only statement of a pg_cron job's command)
-- A job whose command raises is recorded as failed, and its transaction rolls back: an alert
-- queued in it would never be sent. So the alert is queued and committed first, then
-- public.check_de_enrollment_health() raises its message as it always has (or returns its
-- summary when nothing is in error, and then nothing is sent). Without a webhook or pg_net
-- it is check_de_enrollment_health. `SELECT public.check_de_enrollment_health()` keeps its
-- meaning and sends nothing.
-- A procedure that commits: no SET clause, not SECURITY DEFINER; it runs with its caller's
-- rights (a member of deenroll_runner), pins its settings (de_enrollment_pin_settings) first
-- and after the COMMIT, and calls only functions the runner may execute.
CREATE PROCEDURE deenroll.alert_de_enrollment_health()
LANGUAGE plpgsql
AS $pr$
DECLARE
    v_document jsonb;
    v_summary  text;
BEGIN
    PERFORM deenroll.de_enrollment_pin_settings();
    v_document := deenroll.de_enrollment_health_alert();
    IF v_document IS NOT NULL THEN
        PERFORM deenroll.send_de_enrollment_alert(v_document);
        COMMIT;
        PERFORM deenroll.de_enrollment_pin_settings();
    END IF;
    v_summary := public.check_de_enrollment_health();
    RAISE NOTICE '%', v_summary;
END
$pr$;

COMMENT ON PROCEDURE deenroll.alert_de_enrollment_health() IS
    'The health job that alerts: queues and commits the health alert through pg_net when a client is in error, then raises like check_de_enrollment_health() so that pg_cron records the run as failed.';
