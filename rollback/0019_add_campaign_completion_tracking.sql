-- Undo 0019. Dropping completed_at and campaign_history discards what runs wrote
-- there (take `deenroll backup create` first); no row that existed before 0019 is lost.
SET LOCAL lock_timeout = '2s';

ALTER TABLE leads
    DROP CONSTRAINT IF EXISTS leads_campaign_history_one_entry_per_campaign,
    DROP CONSTRAINT IF EXISTS leads_campaign_history_is_array,
    DROP COLUMN IF EXISTS campaign_history,
    DROP COLUMN IF EXISTS completed_at;
DROP FUNCTION IF EXISTS campaign_history_has_no_repeats(jsonb);
