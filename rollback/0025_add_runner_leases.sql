-- Undo 0025: the functions built on the leases, then the lease table. Runs in progress lose
-- their leases; finish them (or let them end) before rolling back.
SET LOCAL lock_timeout = '5s';

-- functions (functions/*.sql that require 0025)
DROP FUNCTION IF EXISTS public.de_enrollment_heartbeat(uuid);
DROP FUNCTION IF EXISTS public.finish_de_enrollment_run(uuid, text, text);
DROP FUNCTION IF EXISTS public.start_de_enrollment_run(uuid, integer, integer, text, integer);

DROP TABLE IF EXISTS deenroll.client_leases;
