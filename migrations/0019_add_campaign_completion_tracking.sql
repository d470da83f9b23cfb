-- 0019: completion tracking on leads (SOP "Migration 0019").
-- completed_at marks a finished sequence; campaign_history keeps one entry per
-- campaign the lead went through. Adding columns with constant defaults is a
-- catalog-only change and the checks are NOT VALID, so the lock on leads is held
-- for milliseconds; lock_timeout bounds how long platform writes can queue behind
-- this migration while it waits for that lock. The partial indexes the runner
-- reads are built without blocking writes by 0026 (CREATE INDEX CONCURRENTLY).
SET LOCAL lock_timeout = '2s';

-- Used by the constraint below: true when no campaign appears twice in a history.
CREATE FUNCTION campaign_history_has_no_repeats(p_history jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT count(*) = count(DISTINCT e ->> 'campaign_id')
      FROM jsonb_array_elements(p_history) AS e
     WHERE e ? 'campaign_id'
$fn$;

ALTER TABLE leads
    ADD COLUMN completed_at timestamptz,
    ADD COLUMN campaign_history jsonb NOT NULL DEFAULT '[]'::jsonb;

-- NOT VALID: every existing row holds the default '[]', so there is nothing to
-- scan; new and updated rows are checked.
ALTER TABLE leads
    ADD CONSTRAINT leads_campaign_history_is_array
        CHECK (jsonb_typeof(campaign_history) = 'array') NOT VALID,
    ADD CONSTRAINT leads_campaign_history_one_entry_per_campaign
        CHECK (jsonb_array_length(campaign_history) < 2
               OR campaign_history_has_no_repeats(campaign_history)) NOT VALID;
