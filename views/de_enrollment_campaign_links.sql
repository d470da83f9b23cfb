-- de_enrollment_campaign_links: leads a run may de-enroll that are linked to a campaign of another client, or of none
-- requires: 0024_isolate_dirty_platform_data
--
-- One row per lead that is active and either not completed or opted out (the leads a run
-- judges), whose campaign (leads.campaign_link_id) has no client_id or another client_id
-- than the lead's own. Such a lead is still de-enrolled, locked and logged under its own
-- client like any other; this view is how an operator sees the link (`deenroll stuck`
-- shows the count and the first rows). link: campaign_without_client or
-- campaign_of_another_client. Leads without a client_id are not here: the stuck view lists
-- them (lead_without_client) when they are due.
--
-- Cost: the first branch walks the distinct (client, campaign) pairs of 0024's client index
-- (de_enrollment_leads_client_candidates_idx: active, not completed), one index probe per
-- pair (about one per campaign, plus one per foreign link), then reads only the leads of
-- the pairs whose campaign belongs to another client or none. Leads without a campaign are
-- stepped over one index entry at a time. The second branch reads 0024's index of active
-- opted-out leads (empty after every run) for the ones already completed. Measured on
-- 1,000,000 leads in 500 campaigns (PostgreSQL 18): 3 ms, where a plain join reads every
-- lead (90 ms).
CREATE VIEW public.de_enrollment_campaign_links AS
WITH RECURSIVE pairs (client_id, campaign_id) AS (
    SELECT f.client_id, f.campaign_link_id
      FROM (SELECT l.client_id, l.campaign_link_id
              FROM public.leads AS l
             WHERE l.is_active AND l.completed_at IS NULL
               AND l.client_id IS NOT NULL AND l.campaign_link_id IS NOT NULL
             ORDER BY l.client_id, l.campaign_link_id
             LIMIT 1) AS f
    UNION ALL
    SELECT n.client_id, n.campaign_link_id
      FROM pairs AS p
     CROSS JOIN LATERAL (SELECT l.client_id, l.campaign_link_id
                           FROM public.leads AS l
                          WHERE l.is_active AND l.completed_at IS NULL
                            AND l.client_id IS NOT NULL AND l.campaign_link_id IS NOT NULL
                            AND (l.client_id, l.campaign_link_id) > (p.client_id, p.campaign_id)
                          ORDER BY l.client_id, l.campaign_link_id
                          LIMIT 1) AS n
)
SELECT l.id                          AS lead_id,
       l.client_id,
       c.id                          AS campaign_id,
       c.name                        AS campaign_name,
       c.client_id                   AS campaign_client_id,
       CASE WHEN c.client_id IS NULL THEN 'campaign_without_client'
            ELSE 'campaign_of_another_client' END AS link,
       coalesce(l.opted_out, false)  AS opted_out,
       l.updated_at
  FROM pairs AS p
  JOIN public.campaigns AS c ON c.id = p.campaign_id
  JOIN public.leads AS l
    ON l.client_id = p.client_id AND l.campaign_link_id = p.campaign_id
   AND l.is_active AND l.completed_at IS NULL
 WHERE c.client_id IS DISTINCT FROM p.client_id
UNION ALL
SELECT l.id,
       l.client_id,
       c.id,
       c.name,
       c.client_id,
       CASE WHEN c.client_id IS NULL THEN 'campaign_without_client'
            ELSE 'campaign_of_another_client' END,
       true,
       l.updated_at
  FROM public.leads AS l
  JOIN public.campaigns AS c ON c.id = l.campaign_link_id
 WHERE l.is_active AND l.opted_out AND l.completed_at IS NOT NULL
   AND l.client_id IS NOT NULL
   AND c.client_id IS DISTINCT FROM l.client_id;

COMMENT ON VIEW public.de_enrollment_campaign_links IS
    'Active leads (not completed, or opted out) linked to a campaign without a client or of another client; they are de-enrolled under their own client.';
COMMENT ON COLUMN public.de_enrollment_campaign_links.lead_id IS 'The lead (leads.id).';
COMMENT ON COLUMN public.de_enrollment_campaign_links.client_id IS 'The lead''s own client: the client whose run de-enrolls it.';
COMMENT ON COLUMN public.de_enrollment_campaign_links.campaign_id IS 'The campaign the lead is linked to (leads.campaign_link_id).';
COMMENT ON COLUMN public.de_enrollment_campaign_links.campaign_name IS 'The campaign''s name.';
COMMENT ON COLUMN public.de_enrollment_campaign_links.campaign_client_id IS 'The campaign''s client; null for a campaign without a client.';
COMMENT ON COLUMN public.de_enrollment_campaign_links.link IS 'campaign_without_client or campaign_of_another_client.';
COMMENT ON COLUMN public.de_enrollment_campaign_links.opted_out IS 'Whether the lead opted out.';
COMMENT ON COLUMN public.de_enrollment_campaign_links.updated_at IS 'When the platform last changed the lead.';
