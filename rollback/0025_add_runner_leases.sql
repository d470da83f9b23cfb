-- Undo 0025: the functions built on the leases, then the lease table. Runs in progress lose
-- their leases; finish them (or let them end) before rolling back.
SET LOCAL lock_timeout = '5s';

-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment_loop;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment_client;
DROP FUNCTION IF EXISTS public.finish_de_enrollment_run;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_take_client;
DROP FUNCTION IF EXISTS public.start_de_enrollment_run;
DROP FUNCTION IF EXISTS public.de_enrollment_heartbeat;
DROP FUNCTION IF EXISTS public.de_enrollment_run_settings;
-- end of the functions and views

DROP TABLE IF EXISTS deenroll.client_leases;
