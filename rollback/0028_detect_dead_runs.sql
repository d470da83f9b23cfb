-- Undo 0028: the functions built on it, the lease sessions (runs in progress fall back to
-- their leases' expiry), 0019's helper as 0019 made it, the helpers' search_path as 0024
-- left it. Every statement can be run again.
SET LOCAL lock_timeout = '5s';

-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment_loop;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment_client;
DROP PROCEDURE IF EXISTS deenroll.help_de_enrollment_run;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment_batches;
DROP FUNCTION IF EXISTS deenroll.fold_remaining_de_enrollment_deltas;
DROP FUNCTION IF EXISTS public.finish_de_enrollment_run;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_take_client;
DROP FUNCTION IF EXISTS public.start_de_enrollment_run;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_run_queue;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_run_options;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_run_lock;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_retry_lock_race;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_join_run_group;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_open_runs;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_dry_run;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_require_client;
DROP PROCEDURE IF EXISTS deenroll.alert_de_enrollment_health;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_pin_settings;
-- end of the functions and views

DROP TABLE IF EXISTS deenroll.lease_sessions;

CREATE OR REPLACE FUNCTION public.campaign_history_has_no_repeats(p_history jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT count(*) = count(DISTINCT e ->> 'campaign_id')
      FROM jsonb_array_elements(p_history) AS e
     WHERE e ? 'campaign_id'
$fn$;

DO $reset$
BEGIN
    IF to_regprocedure('deenroll.campaign_history_has_no_repeats_of_ours(jsonb)') IS NOT NULL THEN
        ALTER FUNCTION deenroll.campaign_history_has_no_repeats_of_ours(jsonb) RESET search_path;
    END IF;
    IF to_regprocedure('deenroll.json_timestamptz(text)') IS NOT NULL THEN
        ALTER FUNCTION deenroll.json_timestamptz(text) RESET search_path;
    END IF;
END
$reset$;
