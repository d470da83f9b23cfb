-- Undo 0020: the triggers, the pending-delta table and the campaign columns.
-- The counters are derived data (counted again by 0026 on the way back up); no row
-- that existed before 0020 is lost. Every statement is a catalog change: the locks
-- are held for milliseconds, and lock_timeout bounds the wait for them.
SET LOCAL lock_timeout = '2s';

-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)
DROP VIEW IF EXISTS public.campaign_stats_drift;
DROP FUNCTION IF EXISTS public.recalculate_campaign_stats;
DROP FUNCTION IF EXISTS public.de_enrollment_counts_as_active;
DROP FUNCTION IF EXISTS public.apply_campaign_stats_deltas;
-- end of the functions and views

DROP TRIGGER IF EXISTS leads_stats_delta_on_truncate ON leads;
DROP TRIGGER IF EXISTS leads_stats_delta_on_delete ON leads;
DROP TRIGGER IF EXISTS leads_stats_delta_on_update ON leads;
DROP TRIGGER IF EXISTS leads_stats_delta_on_insert ON leads;
DROP FUNCTION IF EXISTS leads_record_stats_delta();
DROP TABLE IF EXISTS campaign_stats_delta;
ALTER TABLE campaigns
    DROP COLUMN IF EXISTS auto_discovered,
    DROP COLUMN IF EXISTS last_enrollment_at,
    DROP COLUMN IF EXISTS deactivated_at,
    DROP COLUMN IF EXISTS booked_count,
    DROP COLUMN IF EXISTS opted_out_count,
    DROP COLUMN IF EXISTS completed_leads_count,
    DROP COLUMN IF EXISTS active_leads_count,
    DROP COLUMN IF EXISTS is_active;
