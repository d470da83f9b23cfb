-- recalculate_campaign_stats: recount the counters of one client's campaigns (NULL: all) from leads; returns what changed
-- requires: 0020_unify_campaign_model
-- after: de_enrollment_counts_as_active
--
-- The SOP's "Fix Stats" repair, made exact while the platform keeps writing leads.
-- Returns one row per campaign whose stored counters differed from the recount, with
-- the old and the new value of each counter.
--
-- 1. Lock the campaigns FOR NO KEY UPDATE in id order (the same order as
--    apply_campaign_stats_deltas, so the two never deadlock; lead inserts are not
--    blocked, see there). While we hold the locks nobody else folds their deltas.
-- 2. ONE statement deletes their pending deltas, counts their leads and writes the
--    counters. One statement means one snapshot, and that is what makes it exact:
--    a lead change committed before the snapshot is in the count and its delta row
--    is deleted; a change committed after it (or still in flight) is neither counted
--    nor deleted, its delta stays and is folded later. Counting in one statement and
--    deleting deltas in another would let a transaction that commits in between be
--    counted twice (delete first) or lost (count first).
CREATE FUNCTION public.recalculate_campaign_stats(p_client_id uuid DEFAULT NULL)
RETURNS TABLE (
    campaign_id               uuid,
    client_id                 uuid,
    name                      text,
    old_active_leads_count    integer,
    new_active_leads_count    integer,
    old_completed_leads_count integer,
    new_completed_leads_count integer,
    old_opted_out_count       integer,
    new_opted_out_count       integer,
    old_booked_count          integer,
    new_booked_count          integer
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_ids uuid[];
BEGIN
    SELECT coalesce(array_agg(x.id ORDER BY x.id), '{}')
      INTO v_ids
      FROM (SELECT c.id
              FROM public.campaigns AS c
             WHERE p_client_id IS NULL OR c.client_id = p_client_id
             ORDER BY c.id
               FOR NO KEY UPDATE OF c) AS x;

    RETURN QUERY
    WITH dropped AS (
        DELETE FROM public.campaign_stats_delta AS d
         WHERE d.campaign_id = ANY (v_ids)
        RETURNING d.campaign_id
    ), counted AS (
        SELECT c.id,
               c.active_leads_count    AS old_active,
               c.completed_leads_count AS old_completed,
               c.opted_out_count       AS old_opted_out,
               c.booked_count          AS old_booked,
               coalesce(n.active, 0)    AS new_active,
               coalesce(n.completed, 0) AS new_completed,
               coalesce(n.opted_out, 0) AS new_opted_out,
               coalesce(n.booked, 0)    AS new_booked,
               n.last_created
          FROM public.campaigns AS c
          LEFT JOIN (SELECT l.campaign_link_id,
                            count(*) FILTER (WHERE public.de_enrollment_counts_as_active(l.is_active, l.opted_out))::integer AS active,
                            count(*) FILTER (WHERE l.completed_at IS NOT NULL)::integer AS completed,
                            count(*) FILTER (WHERE l.opted_out)::integer AS opted_out,
                            count(*) FILTER (WHERE l.booked)::integer AS booked,
                            max(l.created_at) AS last_created
                       FROM public.leads AS l
                      WHERE l.campaign_link_id = ANY (v_ids)
                      GROUP BY l.campaign_link_id) AS n
            ON n.campaign_link_id = c.id
         WHERE c.id = ANY (v_ids)
    ), updated AS (
        UPDATE public.campaigns AS c
           SET active_leads_count    = k.new_active,
               completed_leads_count = k.new_completed,
               opted_out_count       = k.new_opted_out,
               booked_count          = k.new_booked,
               last_enrollment_at    = greatest(c.last_enrollment_at, k.last_created)
          FROM counted AS k
         WHERE c.id = k.id
           AND (k.old_active, k.old_completed, k.old_opted_out, k.old_booked)
               IS DISTINCT FROM (k.new_active, k.new_completed, k.new_opted_out, k.new_booked)
        RETURNING c.id, c.client_id, c.name,
                  k.old_active, k.new_active, k.old_completed, k.new_completed,
                  k.old_opted_out, k.new_opted_out, k.old_booked, k.new_booked
    )
    -- (dropped runs to completion although nothing reads it: data-modifying CTEs always do.)
    SELECT u.* FROM updated AS u ORDER BY u.client_id, u.id;
END
$fn$;

COMMENT ON FUNCTION public.recalculate_campaign_stats(uuid) IS
    'Recounts campaign counters from leads (one client, or all when NULL), exact under concurrent writes; returns the campaigns whose counters changed, old and new values.';
