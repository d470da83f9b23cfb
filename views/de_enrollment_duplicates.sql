-- de_enrollment_duplicates: leads de-enrolled twice from one campaign (two lead-log rows or two history entries); always empty
-- requires: 0021_add_de_enrollment_monitoring
--
-- What the SOP's "Duplicate De-enrollments" diagnosis looks for, per campaign (a lead
-- that went through two campaigns is logged once for each, and that is right).
-- 0021's unique index and 0019's check constraint forbid both kinds; a row here
-- means they were bypassed (rows older than the constraint, a manual edit).
CREATE VIEW de_enrollment_duplicates AS
SELECT 'lead_log'::text                                AS kind,
       g.lead_id,
       g.campaign_id,
       count(*)                                        AS occurrences,
       array_agg(g.run_id ORDER BY g.processed_at)     AS run_ids,
       min(g.processed_at)                             AS first_at,
       max(g.processed_at)                             AS last_at
  FROM de_enrollment_lead_log AS g
 WHERE g.outcome IN ('completed', 'opted_out')
 GROUP BY g.lead_id, g.campaign_id
HAVING count(*) > 1
UNION ALL
SELECT 'campaign_history'::text,
       h.lead_id,
       h.campaign_id,
       count(*),
       array_agg(h.run_id ORDER BY h.at),
       min(h.at),
       max(h.at)
  FROM (SELECT l.id AS lead_id,
               CASE WHEN e ->> 'campaign_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                    THEN (e ->> 'campaign_id')::uuid END AS campaign_id,
               e ->> 'campaign_id' AS campaign_key,
               CASE WHEN e ->> 'run_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                    THEN (e ->> 'run_id')::uuid END AS run_id,
               CASE WHEN coalesce(e ->> 'de_enrolled_at', e ->> 'completed_at') ~ '^\d{4}-\d{2}-\d{2}'
                    THEN coalesce(e ->> 'de_enrolled_at', e ->> 'completed_at')::timestamptz END AS at
          FROM leads AS l
         CROSS JOIN LATERAL jsonb_array_elements(l.campaign_history) AS e
         WHERE jsonb_typeof(l.campaign_history) = 'array'
           AND jsonb_array_length(l.campaign_history) > 1
           AND e ? 'campaign_id') AS h
 GROUP BY h.lead_id, h.campaign_id, h.campaign_key
HAVING count(*) > 1;

COMMENT ON VIEW de_enrollment_duplicates IS
    'Leads de-enrolled twice from the same campaign: two completed/opted_out rows in de_enrollment_lead_log, or two campaign_history entries for one campaign. Must always be empty.';
COMMENT ON COLUMN de_enrollment_duplicates.kind IS 'lead_log (de_enrollment_lead_log rows) or campaign_history (entries of leads.campaign_history).';
COMMENT ON COLUMN de_enrollment_duplicates.lead_id IS 'The lead.';
COMMENT ON COLUMN de_enrollment_duplicates.campaign_id IS 'The campaign it was de-enrolled from more than once (null if a history entry holds no valid uuid).';
COMMENT ON COLUMN de_enrollment_duplicates.occurrences IS 'How many log rows or history entries there are for this lead and campaign.';
COMMENT ON COLUMN de_enrollment_duplicates.run_ids IS 'The runs that wrote them, oldest first.';
COMMENT ON COLUMN de_enrollment_duplicates.first_at IS 'When the first was written (processed_at, or the history entry''s de_enrolled_at).';
COMMENT ON COLUMN de_enrollment_duplicates.last_at IS 'When the last was written.';

-- Read access for the analyst role of migration 0022, restored whenever this view is re-created.
-- The REVOKE changes no privilege (PUBLIC has none on a new view); it makes the ACL explicit,
-- so that 0022's grant and its rollback's revoke bring it back to exactly this state.
REVOKE ALL ON de_enrollment_duplicates FROM PUBLIC;
DO $grant$
BEGIN
    IF to_regprocedure('grant_analyst_select(regclass)') IS NOT NULL THEN
        PERFORM grant_analyst_select('de_enrollment_duplicates');
    END IF;
END
$grant$;
