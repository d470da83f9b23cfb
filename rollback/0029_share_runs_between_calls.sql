-- Undo 0029: the functions built on it, then the two tables (a run in progress loses nothing
-- it committed; its calls stop sharing their clients). Every statement can be run again.
SET LOCAL lock_timeout = '5s';

-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment_loop;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment_client;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_take_client;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_join_run_group;
-- end of the functions and views

DROP TABLE IF EXISTS deenroll.run_group_clients;
DROP TABLE IF EXISTS deenroll.run_groups;
