-- de_enrollment_run_settings: the settings of a run's transactions: how long a lock is waited for, and whether the commit waits for its WAL flush
-- requires: 0025_add_runner_leases
--
-- start_de_enrollment_run, de_enrollment_heartbeat (first in every batch and in every other
-- statement of a client's run) and finish_de_enrollment_run call it; the settings hold for
-- the caller's transaction only (nothing outlives it, as transaction-mode poolers require):
--   lock_timeout 5 s: a run never queues long behind a lock that a platform write or a
--     migration holds, and nobody queues long behind a run. The statement fails instead and
--     the runner tries the batch again. This bound is the run's own: it does not follow the
--     lease's length nor the run's budget.
--   synchronous_commit on for a run's start and end, which are never lost to a crash; off
--     for its batches (why: de_enrollment_heartbeat).
-- Granted to nobody: only the functions above (running as their owner) call it.
CREATE FUNCTION public.de_enrollment_run_settings(p_durable boolean)
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT set_config('lock_timeout', '5s', true),
           set_config('synchronous_commit', CASE WHEN p_durable THEN 'on' ELSE 'off' END, true);
$fn$;

COMMENT ON FUNCTION public.de_enrollment_run_settings(boolean) IS
    'Sets lock_timeout (5 s) and synchronous_commit (on when p_durable) for the caller''s transaction: the settings of a run''s statements.';
