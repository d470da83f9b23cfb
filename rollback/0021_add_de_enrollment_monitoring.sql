-- Undo 0021: the views and functions installed on top of it, then its tables.
-- The run and lead-log history is dropped with them (take `deenroll backup create`
-- or pg_dump first); no row that existed before 0021 is lost.
SET LOCAL lock_timeout = '5s';

-- views (views/*.sql that require 0021)
DROP VIEW IF EXISTS de_enrollment_health;
DROP VIEW IF EXISTS de_enrollment_stuck_leads;
DROP VIEW IF EXISTS campaign_stats_drift;
DROP VIEW IF EXISTS de_enrollment_duplicates;
DROP VIEW IF EXISTS de_enrollment_daily_summary;

-- functions (functions/*.sql that require 0021)
DROP FUNCTION IF EXISTS process_de_enrollment_batch(uuid, uuid[]);
DROP FUNCTION IF EXISTS get_leads_for_de_enrollment(uuid, integer);
DROP FUNCTION IF EXISTS start_de_enrollment_run(uuid, integer, integer, text, integer);
DROP FUNCTION IF EXISTS finish_de_enrollment_run(uuid, text, text);
DROP FUNCTION IF EXISTS de_enrollment_clients();
DROP FUNCTION IF EXISTS de_enrollment_invalid_campaigns(uuid);
DROP FUNCTION IF EXISTS count_leads_for_de_enrollment(uuid);
DROP FUNCTION IF EXISTS archive_de_enrollment_history(integer, integer, boolean);
DROP FUNCTION IF EXISTS de_enrollment_rls_blind_spots();
DROP FUNCTION IF EXISTS apply_client_stats_deltas(uuid);
DROP FUNCTION IF EXISTS de_enrollment_client_exists(uuid);

-- created on first use by archive_de_enrollment_history() (`deenroll maintenance cleanup`)
DROP TABLE IF EXISTS de_enrollment_runs_archive;
DROP TABLE IF EXISTS de_enrollment_lead_log;
DROP TABLE IF EXISTS de_enrollment_runs;
