-- Undo 0024: the held leads (their rows are lost: they are re-found by the next run), the
-- run column, the client indexes, and 0019's one-entry-per-campaign check as it was.
-- Before rolling back, histories must again satisfy 0019's stricter check for rows written
-- later; rows already stored are not re-checked (NOT VALID, as 0019 created it).
SET LOCAL lock_timeout = '5s';

DROP INDEX IF EXISTS de_enrollment_leads_client_opted_out_idx;
DROP INDEX IF EXISTS de_enrollment_leads_client_candidates_idx;
DROP TABLE IF EXISTS deenroll.held_leads;
ALTER TABLE de_enrollment_runs DROP COLUMN IF EXISTS leads_held;
ALTER TABLE leads
    DROP CONSTRAINT IF EXISTS leads_campaign_history_one_entry_per_campaign,
    ADD CONSTRAINT leads_campaign_history_one_entry_per_campaign
        CHECK (jsonb_array_length(campaign_history) < 2
               OR campaign_history_has_no_repeats(campaign_history)) NOT VALID;
DROP FUNCTION IF EXISTS deenroll.campaign_history_has_no_repeats_of_ours(jsonb);
DROP FUNCTION IF EXISTS deenroll.json_timestamptz(text);
