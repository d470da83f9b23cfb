-- de_enrollment_pin_settings: the settings of one transaction of the run's procedures (search_path, jit), pinned whatever the caller's session has
-- requires: 0028_detect_dead_runs
--
-- A procedure that commits can carry no SET clause, so it calls this first and after every
-- COMMIT (set_config(..., true) lasts until the transaction ends). Its body is SQL-standard,
-- bound to pg_catalog's functions when it was created: no search_path can redirect it, and
-- it carries no SET clause itself (one would undo these settings when it returned).
--   search_path  pg_catalog first, then pg_temp: nothing a neighbour creates in another
--                schema can stand in for a name the procedures use;
--   jit          off: the run's statements are short; a server with JIT on (Debian's and
--                many managed ones) would compile the queue's plan, estimated costly, in
--                every run, which costs several times the run when there is nothing to do.
-- The batches' lock_timeout and synchronous_commit are the heartbeat's (de_enrollment_run_settings).
CREATE FUNCTION deenroll.de_enrollment_pin_settings()
RETURNS void
LANGUAGE sql
VOLATILE
BEGIN ATOMIC
    SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true),
           pg_catalog.set_config('jit', 'off', true);
END;

COMMENT ON FUNCTION deenroll.de_enrollment_pin_settings() IS
    'Pins search_path and jit for the current transaction of the run''s procedures (called first and after every COMMIT).';
