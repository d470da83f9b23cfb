-- de_enrollment_duplicates: leads de-enrolled twice from one campaign (two lead-log rows or two history entries of ours); always empty
-- requires: 0024_isolate_dirty_platform_data
--
-- What the SOP's "Duplicate De-enrollments" diagnosis looks for, per campaign (a lead
-- that went through two campaigns is logged once for each, and that is right). Only
-- history entries written by deenroll (objects with a run_id) count: what the platform
-- writes into campaign_history (its own repeats, entries that are not objects, entries
-- without a campaign) is not a de-enrollment. Copes with any JSON: a history that is not an
-- array is skipped, ids and timestamps that do not parse are shown as null.
-- 0021's unique index and the check constraint on campaign_history forbid both kinds; a
-- row here means they were bypassed (rows older than the constraint, a manual edit).
CREATE VIEW public.de_enrollment_duplicates AS
SELECT 'lead_log'::text                                AS kind,
       g.lead_id,
       g.campaign_id,
       count(*)                                        AS occurrences,
       array_agg(g.run_id ORDER BY g.processed_at)     AS run_ids,
       min(g.processed_at)                             AS first_at,
       max(g.processed_at)                             AS last_at
  FROM public.de_enrollment_lead_log AS g
 WHERE g.outcome IN ('completed', 'opted_out')
 GROUP BY g.lead_id, g.campaign_id
HAVING count(*) > 1
UNION ALL
SELECT 'campaign_history'::text,
       h.lead_id,
       h.campaign_id,
       count(*),
       array_agg(h.run_id ORDER BY h.at, h.n),
       min(h.at),
       max(h.at)
  FROM (SELECT l.id AS lead_id,
               e.ordinality AS n,
               CASE WHEN e.value ->> 'campaign_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                    THEN (e.value ->> 'campaign_id')::uuid END AS campaign_id,
               e.value ->> 'campaign_id' AS campaign_key,
               CASE WHEN e.value ->> 'run_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                    THEN (e.value ->> 'run_id')::uuid END AS run_id,
               coalesce(deenroll.json_timestamptz(e.value ->> 'de_enrolled_at'),
                        deenroll.json_timestamptz(e.value ->> 'completed_at')) AS at
          FROM public.leads AS l
         CROSS JOIN LATERAL jsonb_array_elements(
                   CASE WHEN jsonb_typeof(l.campaign_history) = 'array' THEN l.campaign_history
                        ELSE '[]'::jsonb END) WITH ORDINALITY AS e
         WHERE jsonb_typeof(l.campaign_history) = 'array'
           AND jsonb_array_length(CASE WHEN jsonb_typeof(l.campaign_history) = 'array'
                                       THEN l.campaign_history ELSE '[]'::jsonb END) > 1
           AND jsonb_typeof(e.value) = 'object'
           AND (e.value -> 'run_id') IS NOT NULL
           AND (e.value -> 'campaign_id') IS NOT NULL) AS h
 GROUP BY h.lead_id, h.campaign_id, h.campaign_key
HAVING count(*) > 1;

COMMENT ON VIEW public.de_enrollment_duplicates IS
    'Leads de-enrolled twice from the same campaign: two completed/opted_out rows in de_enrollment_lead_log, or two campaign_history entries of deenroll for one campaign. Must always be empty.';
COMMENT ON COLUMN public.de_enrollment_duplicates.kind IS 'lead_log (de_enrollment_lead_log rows) or campaign_history (entries of leads.campaign_history written by deenroll).';
COMMENT ON COLUMN public.de_enrollment_duplicates.lead_id IS 'The lead.';
COMMENT ON COLUMN public.de_enrollment_duplicates.campaign_id IS 'The campaign it was de-enrolled from more than once (null if a history entry holds no valid uuid).';
COMMENT ON COLUMN public.de_enrollment_duplicates.occurrences IS 'How many log rows or history entries there are for this lead and campaign.';
COMMENT ON COLUMN public.de_enrollment_duplicates.run_ids IS 'The runs that wrote them, oldest first (null where an entry holds no valid run id).';
COMMENT ON COLUMN public.de_enrollment_duplicates.first_at IS 'When the first was written (processed_at, or the history entry''s de_enrolled_at; null when unparsable).';
COMMENT ON COLUMN public.de_enrollment_duplicates.last_at IS 'When the last was written.';
