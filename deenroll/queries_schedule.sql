-- The commands of deenroll's pg_cron jobs (deenroll/schedule.py), by name. Each is the one
-- statement of its job: pg_cron stores this text and runs it as the role that scheduled it.
-- No comment lines in a command: it is shown as it is by `deenroll schedule status`.

-- name: job_run
CALL deenroll.run_de_enrollment()

-- name: job_health
SELECT public.check_de_enrollment_health()

-- name: job_cleanup
SELECT public.archive_de_enrollment_history()
