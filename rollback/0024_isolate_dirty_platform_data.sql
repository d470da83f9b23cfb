-- Undo 0024: the views and functions installed on top of it, the held leads (their rows are
-- lost: the next run finds those leads again), the run column, and 0019's
-- one-entry-per-campaign check as it was.
-- Before rolling back, histories must again satisfy 0019's stricter check for rows written
-- later; rows already stored are not re-checked (NOT VALID, as 0019 created it).
SET LOCAL lock_timeout = '5s';

-- functions and views that require this migration, newest first (scripts/sync-rollback-drops.py)
DROP VIEW IF EXISTS public.de_enrollment_duplicates;
DROP VIEW IF EXISTS public.de_enrollment_daily_summary;
DROP VIEW IF EXISTS public.de_enrollment_campaign_links;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment_loop;
DROP PROCEDURE IF EXISTS deenroll.run_de_enrollment_client;
DROP FUNCTION IF EXISTS public.process_de_enrollment_batch;
DROP FUNCTION IF EXISTS public.get_leads_for_de_enrollment;
DROP FUNCTION IF EXISTS public.finish_de_enrollment_run;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_unmark_campaigns;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_take_client;
DROP FUNCTION IF EXISTS public.start_de_enrollment_run;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_run_queue;
DROP FUNCTION IF EXISTS public.de_enrollment_release_held_leads;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_join_run_group;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_open_runs;
DROP FUNCTION IF EXISTS public.de_enrollment_invalid_campaigns;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_cron_jobs;
DROP FUNCTION IF EXISTS public.de_enrollment_clients;
DROP FUNCTION IF EXISTS public.count_leads_for_de_enrollment;
DROP FUNCTION IF EXISTS public.de_enrollment_opted_out_leads;
DROP FUNCTION IF EXISTS public.de_enrollment_finished_leads;
DROP FUNCTION IF EXISTS public.count_de_enrollment_held_in_windows;
DROP FUNCTION IF EXISTS public.de_enrollment_held_leads;
DROP PROCEDURE IF EXISTS deenroll.alert_de_enrollment_health;
DROP FUNCTION IF EXISTS public.check_de_enrollment_health;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_health_alert;
DROP VIEW IF EXISTS public.de_enrollment_health;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_run_death;
DROP VIEW IF EXISTS public.de_enrollment_stuck_leads;
DROP VIEW IF EXISTS public.de_enrollment_due_leads;
DROP FUNCTION IF EXISTS public.de_enrollment_lead_fingerprint;
DROP FUNCTION IF EXISTS public.de_enrollment_due_outcome;
DROP FUNCTION IF EXISTS deenroll.de_enrollment_sequence_length;
-- end of the functions and views

DROP TABLE IF EXISTS deenroll.held_leads;
ALTER TABLE IF EXISTS public.de_enrollment_runs DROP COLUMN IF EXISTS leads_held;
ALTER TABLE public.leads DROP CONSTRAINT IF EXISTS leads_campaign_history_one_entry_per_campaign;
-- 0019's constraint comes back, unless 0019 was rolled back first (the psql route runs every
-- rollback file again after the operator's own; each skips what is already gone).
DO $restore$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_attribute
                WHERE attrelid = 'public.leads'::regclass AND attname = 'campaign_history' AND NOT attisdropped)
       AND to_regprocedure('public.campaign_history_has_no_repeats(jsonb)') IS NOT NULL THEN
        ALTER TABLE public.leads
            ADD CONSTRAINT leads_campaign_history_one_entry_per_campaign
                CHECK (jsonb_array_length(campaign_history) < 2
                       OR public.campaign_history_has_no_repeats(campaign_history)) NOT VALID;
    END IF;
END
$restore$;
DROP FUNCTION IF EXISTS deenroll.campaign_history_has_no_repeats_of_ours(jsonb);
DROP FUNCTION IF EXISTS deenroll.json_timestamptz(text);
