-- clear_de_enrollment_alert_webhook: forget the database's alert webhook (the owner's function); returns whether there was one
-- requires: 0030_alert_webhook
--
-- SELECT deenroll.clear_de_enrollment_alert_webhook();  -- alerts from the database stop.
-- Alerts already queued in pg_net are sent all the same. Granted to nobody.
CREATE FUNCTION deenroll.clear_de_enrollment_alert_webhook()
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    DELETE FROM deenroll.alert_deliveries;
    DELETE FROM deenroll.alert_webhook;
    RETURN FOUND;
END;
$fn$;

COMMENT ON FUNCTION deenroll.clear_de_enrollment_alert_webhook() IS
    'Forgets the database''s alert webhook; returns whether there was one. The owner''s function.';
