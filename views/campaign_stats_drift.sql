-- campaign_stats_drift: campaigns whose stored counters differ from a recount of their leads, stored vs actual per counter
-- requires: 0021_add_de_enrollment_monitoring
-- after: de_enrollment_counts_as_active
--
-- Counters: active = de_enrollment_counts_as_active (active and not opted out),
-- completed = completed_at set, opted_out, booked. The platform's changes reach the
-- stored counters through campaign_stats_delta (0020's triggers) and the next run's
-- fold: pending_deltas and pending_explains tell a lag still to be folded from real
-- drift. `deenroll stats recalculate` makes every listed campaign exact.
CREATE VIEW public.campaign_stats_drift AS
WITH actual AS (
    SELECT campaign_link_id AS campaign_id,
           count(*) FILTER (WHERE public.de_enrollment_counts_as_active(is_active, opted_out)) AS active,
           count(*) FILTER (WHERE completed_at IS NOT NULL)                   AS completed,
           count(*) FILTER (WHERE opted_out)                                  AS opted_out,
           count(*) FILTER (WHERE booked)                                     AS booked
      FROM public.leads
     WHERE campaign_link_id IS NOT NULL
     GROUP BY campaign_link_id
),
pending AS (
    SELECT campaign_id,
           count(*)             AS deltas,
           sum(active_delta)    AS active,
           sum(completed_delta) AS completed,
           sum(opted_out_delta) AS opted_out,
           sum(booked_delta)    AS booked
      FROM public.campaign_stats_delta
     GROUP BY campaign_id
)
SELECT c.id                        AS campaign_id,
       c.client_id,
       c.name                      AS campaign_name,
       c.active_leads_count        AS stored_active,
       coalesce(a.active, 0)       AS actual_active,
       c.completed_leads_count     AS stored_completed,
       coalesce(a.completed, 0)    AS actual_completed,
       c.opted_out_count           AS stored_opted_out,
       coalesce(a.opted_out, 0)    AS actual_opted_out,
       c.booked_count              AS stored_booked,
       coalesce(a.booked, 0)       AS actual_booked,
       greatest(abs(c.active_leads_count - coalesce(a.active, 0)),
                abs(c.completed_leads_count - coalesce(a.completed, 0)),
                abs(c.opted_out_count - coalesce(a.opted_out, 0)),
                abs(c.booked_count - coalesce(a.booked, 0))) AS max_difference,
       coalesce(p.deltas, 0)       AS pending_deltas,
       (c.active_leads_count + coalesce(p.active, 0) = coalesce(a.active, 0)
        AND c.completed_leads_count + coalesce(p.completed, 0) = coalesce(a.completed, 0)
        AND c.opted_out_count + coalesce(p.opted_out, 0) = coalesce(a.opted_out, 0)
        AND c.booked_count + coalesce(p.booked, 0) = coalesce(a.booked, 0)) AS pending_explains
  FROM public.campaigns AS c
  LEFT JOIN actual AS a ON a.campaign_id = c.id
  LEFT JOIN pending AS p ON p.campaign_id = c.id
 WHERE (c.active_leads_count, c.completed_leads_count, c.opted_out_count, c.booked_count)
       IS DISTINCT FROM
       (coalesce(a.active, 0), coalesce(a.completed, 0), coalesce(a.opted_out, 0), coalesce(a.booked, 0));

COMMENT ON VIEW public.campaign_stats_drift IS
    'Campaigns whose stored counters differ from a recount of their leads, stored and actual value of each counter. Empty when the counters are exact.';
COMMENT ON COLUMN public.campaign_stats_drift.campaign_id IS 'The campaign.';
COMMENT ON COLUMN public.campaign_stats_drift.client_id IS 'The campaign''s client.';
COMMENT ON COLUMN public.campaign_stats_drift.campaign_name IS 'The campaign''s name.';
COMMENT ON COLUMN public.campaign_stats_drift.stored_active IS 'campaigns.active_leads_count.';
COMMENT ON COLUMN public.campaign_stats_drift.actual_active IS 'Leads of the campaign that are active and not opted out.';
COMMENT ON COLUMN public.campaign_stats_drift.stored_completed IS 'campaigns.completed_leads_count.';
COMMENT ON COLUMN public.campaign_stats_drift.actual_completed IS 'Leads of the campaign with completed_at set.';
COMMENT ON COLUMN public.campaign_stats_drift.stored_opted_out IS 'campaigns.opted_out_count.';
COMMENT ON COLUMN public.campaign_stats_drift.actual_opted_out IS 'Leads of the campaign that opted out.';
COMMENT ON COLUMN public.campaign_stats_drift.stored_booked IS 'campaigns.booked_count.';
COMMENT ON COLUMN public.campaign_stats_drift.actual_booked IS 'Leads of the campaign that booked.';
COMMENT ON COLUMN public.campaign_stats_drift.max_difference IS 'The largest absolute difference between a stored counter and its actual value.';
COMMENT ON COLUMN public.campaign_stats_drift.pending_deltas IS 'Rows of campaign_stats_delta not yet folded into this campaign''s counters.';
COMMENT ON COLUMN public.campaign_stats_drift.pending_explains IS 'True when folding the pending deltas would make every counter exact (a lag, not drift).';
