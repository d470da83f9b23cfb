-- run_de_enrollment: a whole de-enrollment run in the database, as pg_cron calls it: every client with work (or the one given), by the run's one loop (run_de_enrollment_loop)
-- requires: 0030_alert_webhook
-- after: de_enrollment_pin_settings, run_de_enrollment_loop, de_enrollment_run_alert, send_de_enrollment_alert
--
-- `CALL deenroll.run_de_enrollment()` is the command of pg_cron's job, stored in cron.job by
-- whichever release scheduled it: its parameters never change (a procedure dropped while a
-- CALL of it runs, as a new signature would have it, breaks that CALL), and its meaning stays
-- run_de_enrollment_loop's with its defaults (clients with nothing due, run less than 5
-- minutes ago, passed over). Options go in the call:
-- `CALL deenroll.run_de_enrollment(p_batch_size => 500, p_max_runtime_ms => 600000)`.
-- When a client failed, ended partial or holds leads (or the final fold failed), the run's
-- alert document, the one `deenroll run` posts, is queued for the database's webhook through
-- pg_net (send_de_enrollment_alert: only when a webhook is set and pg_net is installed; it
-- never raises), once per CALL; pg_net posts it once the CALL commits. `deenroll run` calls
-- the loop itself and posts its own.
-- A procedure that commits: its caller's rights, its settings pinned first and after the
-- loop (which pins them again after each of its COMMITs).
CREATE PROCEDURE deenroll.run_de_enrollment(
    p_client_id      uuid        DEFAULT NULL,
    p_batch_size     integer     DEFAULT 100,
    p_max_runtime_ms integer     DEFAULT 240000,
    p_lease_ms       integer     DEFAULT NULL,
    p_deadline       timestamptz DEFAULT NULL,
    p_runner_host    text        DEFAULT NULL,
    p_runner_pid     integer     DEFAULT NULL,
    p_login_pid      integer     DEFAULT NULL,
    p_progress       boolean     DEFAULT false,
    INOUT p_summary  jsonb       DEFAULT NULL
)
LANGUAGE plpgsql
AS $pr$
BEGIN
    PERFORM deenroll.de_enrollment_pin_settings();
    CALL deenroll.run_de_enrollment_loop(
        p_client_id => p_client_id, p_batch_size => p_batch_size, p_max_runtime_ms => p_max_runtime_ms,
        p_lease_ms => p_lease_ms, p_deadline => p_deadline, p_runner_host => p_runner_host,
        p_runner_pid => p_runner_pid, p_login_pid => p_login_pid, p_progress => p_progress,
        p_summary => p_summary);
    PERFORM deenroll.de_enrollment_pin_settings();
    PERFORM deenroll.send_de_enrollment_alert(
        deenroll.de_enrollment_run_alert(p_summary -> 'clients', p_summary ->> 'fold_error'));
END
$pr$;

COMMENT ON PROCEDURE deenroll.run_de_enrollment(uuid, integer, integer, integer, timestamptz, text, integer, integer, boolean, jsonb) IS
    'A whole de-enrollment run (every client with work, or one) by the run''s loop (run_de_enrollment_loop), its alert queued for the database''s webhook when something needs attention; returns a JSON summary. CALL deenroll.run_de_enrollment() from pg_cron.';
