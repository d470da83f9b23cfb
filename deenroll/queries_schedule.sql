-- The commands of deenroll's pg_cron jobs (deenroll/schedule.py), by name. Each is the one
-- statement of its job: pg_cron stores this text and runs it as the role that scheduled it.
-- No comment lines in a command, nor after it (the text up to the next name is the command):
-- it is shown as it is by `deenroll schedule status`.

-- name: job_run
CALL deenroll.run_de_enrollment()

-- name: job_health
CALL deenroll.alert_de_enrollment_health()

-- name: job_cleanup
SELECT public.archive_de_enrollment_history()

-- name: alert_webhook_state
-- (The queries below serve `schedule install --alert-webhook`, `status`, `remove
-- --alert-webhook`. The URL never leaves the database: only scheme://host[:port] does.)
-- Whether the database sends alerts: its webhook as scheme://host (NULL: none), and why pg_net
-- cannot send (NULL when it can).
SELECT w.target, w.timeout_ms, w.set_at, w.pg_net_problem
  FROM deenroll.de_enrollment_alert_webhook() AS w;

-- name: alert_webhook_rights
-- Whether the login may keep or clear the webhook (the functions are the owner's, granted to
-- nobody), and who owns them.
SELECT coalesce(pg_catalog.has_function_privilege(
                    pg_catalog.to_regprocedure('deenroll.set_de_enrollment_alert_webhook(text,integer)'), 'EXECUTE'),
                false) AS may_set,
       coalesce(pg_catalog.has_function_privilege(
                    pg_catalog.to_regprocedure('deenroll.clear_de_enrollment_alert_webhook()'), 'EXECUTE'),
                false) AS may_clear,
       (SELECT p.proowner::regrole::text FROM pg_catalog.pg_proc AS p
         WHERE p.oid = pg_catalog.to_regprocedure('deenroll.set_de_enrollment_alert_webhook(text,integer)')) AS owner;

-- name: alert_webhook_set
-- Keep the webhook; returns scheme://host[:port]. Refuses a bad URL and a database without
-- pg_net in one line.
SELECT deenroll.set_de_enrollment_alert_webhook(%(url)s);

-- name: alert_webhook_clear
-- Forget the webhook; whether there was one.
SELECT deenroll.clear_de_enrollment_alert_webhook();

-- name: alert_deliveries
-- The newest alerts the database queued, with pg_net's answer (HTTP status or error).
SELECT d.request_id, d.kind, d.target, d.queued_at, d.answered, d.status_code, d.error_msg, d.timed_out,
       d.answered_at
  FROM deenroll.de_enrollment_alert_deliveries(%(limit)s) AS d;
