-- Undo 0030: the alert functions, then the webhook and the record of deliveries. Alerts
-- already queued in pg_net are sent all the same. Every statement can be run again.
SET LOCAL lock_timeout = '5s';

-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)
DROP FUNCTION IF EXISTS deenroll.set_de_enrollment_alert_webhook;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_run_alert;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_run_exit_code;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_alert_webhook;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_alert_deliveries;
DROP FUNCTION IF EXISTS deenroll.clear_de_enrollment_alert_webhook;
DROP PROCEDURE IF EXISTS deenroll.alert_de_enrollment_health;
DROP FUNCTION IF EXISTS deenroll.send_de_enrollment_alert;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_pg_net_problem;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_webhook_parts;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_health_alert;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_alert_document;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_version;
-- end of the functions and views

DROP TABLE IF EXISTS deenroll.alert_deliveries;
DROP TABLE IF EXISTS deenroll.alert_webhook;
