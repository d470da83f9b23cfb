-- leads_record_stats_delta: trigger function on leads appending one statement's change in counted leads per campaign
-- requires: 0023_add_private_schema
-- after: de_enrollment_counts_as_active
--
-- Transition tables exist only for the events that have them, hence one branch per event.
-- Runs with its owner's rights and a search_path nobody else can write to; every name is qualified.
CREATE FUNCTION public.leads_record_stats_delta()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- Every lead is gone, so every counter is zero.
        DELETE FROM public.campaign_stats_delta;
        UPDATE public.campaigns
           SET active_leads_count = 0, completed_leads_count = 0,
               opted_out_count = 0, booked_count = 0
         WHERE active_leads_count <> 0 OR completed_leads_count <> 0
            OR opted_out_count <> 0 OR booked_count <> 0;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO public.campaign_stats_delta
               (campaign_id, active_delta, completed_delta, opted_out_delta, booked_delta, last_enrollment_at)
        SELECT campaign_link_id,
               count(*) FILTER (WHERE public.de_enrollment_counts_as_active(is_active, opted_out)),
               count(*) FILTER (WHERE completed_at IS NOT NULL),
               count(*) FILTER (WHERE opted_out),
               count(*) FILTER (WHERE booked),
               max(created_at)
          FROM new_rows
         WHERE campaign_link_id IS NOT NULL
         GROUP BY campaign_link_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO public.campaign_stats_delta
               (campaign_id, active_delta, completed_delta, opted_out_delta, booked_delta)
        SELECT d.*
          FROM (SELECT campaign_link_id,
                       -count(*) FILTER (WHERE public.de_enrollment_counts_as_active(is_active, opted_out)) AS a,
                       -count(*) FILTER (WHERE completed_at IS NOT NULL) AS c,
                       -count(*) FILTER (WHERE opted_out) AS o,
                       -count(*) FILTER (WHERE booked) AS b
                  FROM old_rows
                 WHERE campaign_link_id IS NOT NULL
                 GROUP BY campaign_link_id) AS d
         WHERE d.a <> 0 OR d.c <> 0 OR d.o <> 0 OR d.b <> 0;
    ELSE
        INSERT INTO public.campaign_stats_delta
               (campaign_id, active_delta, completed_delta, opted_out_delta, booked_delta)
        SELECT d.*
          FROM (SELECT x.campaign_id, sum(x.a)::int AS a, sum(x.c)::int AS c,
                       sum(x.o)::int AS o, sum(x.b)::int AS b
                  FROM (SELECT campaign_link_id AS campaign_id,
                               public.de_enrollment_counts_as_active(is_active, opted_out)::int AS a,
                               (completed_at IS NOT NULL)::int AS c,
                               coalesce(opted_out, false)::int AS o,
                               coalesce(booked, false)::int AS b
                          FROM new_rows
                        UNION ALL
                        SELECT campaign_link_id,
                               -public.de_enrollment_counts_as_active(is_active, opted_out)::int,
                               -(completed_at IS NOT NULL)::int,
                               -coalesce(opted_out, false)::int,
                               -coalesce(booked, false)::int
                          FROM old_rows) AS x
                 WHERE x.campaign_id IS NOT NULL
                 GROUP BY x.campaign_id) AS d
         WHERE d.a <> 0 OR d.c <> 0 OR d.o <> 0 OR d.b <> 0;
    END IF;
    RETURN NULL;
END
$fn$;
