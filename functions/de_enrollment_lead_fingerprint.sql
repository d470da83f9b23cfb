-- de_enrollment_lead_fingerprint: the state a held lead was held in (its row version and its campaign's sequence)
-- requires: 0024_isolate_dirty_platform_data
--
-- A run skips a held lead (deenroll.held_leads) while this value is unchanged, and tries it
-- again as soon as it changes: any write of the lead row gives it a new xmin, and an edit of
-- the campaign's id or messages changes the rest. Independent of the session's settings
-- (time zone, date style), so the claim, the dry run and the stuck view compute the same
-- value. Inlined by the planner (SQL-standard body, no SET clause).
CREATE FUNCTION public.de_enrollment_lead_fingerprint(p_lead_xmin xid, p_campaign_id uuid, p_messages jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN md5(concat_ws('/', p_lead_xmin::text, coalesce(p_campaign_id::text, '-'), coalesce(p_messages::text, '-')));

COMMENT ON FUNCTION public.de_enrollment_lead_fingerprint(xid, uuid, jsonb) IS
    'Fingerprint of a lead''s state (row version, campaign id and sequence); a held lead is retried when it changes.';
