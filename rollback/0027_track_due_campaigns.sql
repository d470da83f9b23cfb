-- transactional: false
-- Undo 0027: the functions built on it, the triggers that mark campaigns with due leads, their
-- functions, the marks themselves (nothing is lost: they only say where to look) and the indexes
-- on campaigns. By hand, run it with `psql -v ON_ERROR_STOP=1 -f`, without -1. Every
-- statement can be run again.
SET lock_timeout = '5s';

-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)
DROP FUNCTION IF EXISTS public.get_leads_for_de_enrollment;
DROP FUNCTION IF EXISTS public.finish_de_enrollment_run;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_unmark_campaigns;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_run_queue;
DROP FUNCTION IF EXISTS public.de_enrollment_clients;
DROP FUNCTION IF EXISTS public.count_leads_for_de_enrollment;
DROP FUNCTION IF EXISTS public.de_enrollment_marked_campaigns;
-- end of the functions and views

DROP TRIGGER IF EXISTS leads_mark_due_campaigns_on_insert ON leads;
DROP TRIGGER IF EXISTS leads_mark_due_campaigns_on_update ON leads;
DROP TRIGGER IF EXISTS campaigns_mark_edited_on_insert ON campaigns;
DROP TRIGGER IF EXISTS campaigns_mark_edited_on_update ON campaigns;
DROP FUNCTION IF EXISTS deenroll.leads_mark_due_campaigns();
DROP FUNCTION IF EXISTS deenroll.campaigns_mark_edited();
DROP TABLE IF EXISTS deenroll.due_campaigns;
-- concurrently: reads and writes of campaigns go on meanwhile; a drop that failed half-way
-- leaves an INVALID index that running this file again drops
SET lock_timeout = 0;
DROP INDEX CONCURRENTLY IF EXISTS de_enrollment_campaigns_active_client_idx;
DROP INDEX CONCURRENTLY IF EXISTS de_enrollment_campaigns_invalid_idx;

RESET lock_timeout;
