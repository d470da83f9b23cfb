-- Undo 0021: the views and functions installed on top of it, then its tables.
-- The run and lead-log history is dropped with them (take `deenroll backup create`
-- or pg_dump first); no row that existed before 0021 is lost.
SET LOCAL lock_timeout = '5s';

-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)
DROP VIEW IF EXISTS public.campaign_stats_drift;
DROP FUNCTION IF EXISTS public.de_enrollment_maintained_tables;
DROP FUNCTION IF EXISTS public.de_enrollment_client_exists;
DROP FUNCTION IF EXISTS public.count_de_enrollment_runs_in_windows;
DROP FUNCTION IF EXISTS public.count_de_enrollment_held_in_windows;
DROP FUNCTION IF EXISTS public.de_enrollment_runs_in_windows;
DROP FUNCTION IF EXISTS public.archive_de_enrollment_history;
DROP FUNCTION IF EXISTS public.apply_client_stats_deltas;
DROP PROCEDURE IF EXISTS deenroll.alert_de_enrollment_health;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_health_alert;
DROP FUNCTION IF EXISTS public.de_enrollment_rls_blind_spots;
-- end of the functions and views

-- created on first use by archive_de_enrollment_history() (`deenroll maintenance cleanup`)
DROP TABLE IF EXISTS de_enrollment_runs_archive;
DROP TABLE IF EXISTS de_enrollment_lead_log;
DROP TABLE IF EXISTS de_enrollment_runs;
