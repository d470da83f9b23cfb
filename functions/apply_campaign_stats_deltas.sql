-- apply_campaign_stats_deltas: fold pending campaign_stats_delta rows into the campaigns' counters
-- requires: 0020_unify_campaign_model
--
-- p_campaign_ids: the campaigns to fold; NULL means every campaign with pending deltas.
-- Returns how many delta rows were folded.
--
-- Protocol (why every delta is folded exactly once, and nothing deadlocks):
--   1. Lock the affected campaign rows FOR NO KEY UPDATE, in id order. Every folder
--      (this function, recalculate_campaign_stats) takes its campaign locks in id
--      order, so two folders never wait on each other in a cycle. NO KEY UPDATE does
--      not conflict with the FOR KEY SHARE lock that the platform's foreign-key
--      checks take when they insert leads, so lead inserts are never held up.
--   2. In one statement, delete the delta rows of exactly the locked campaigns,
--      aggregate what was deleted and add it to the counters. Only a holder of a
--      campaign's row lock deletes that campaign's deltas, so a delta row is deleted
--      (and added) by one folder only. A delta appended by a platform transaction
--      that has not committed yet is invisible to the DELETE and stays for the next
--      fold: it is never lost and never counted before its lead change is real.
-- Only campaigns that have pending deltas are locked, so an idle fold costs an
-- index probe per campaign, whatever the number of leads.
CREATE FUNCTION public.apply_campaign_stats_deltas(p_campaign_ids uuid[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_locked uuid[];
    v_folded integer;
BEGIN
    IF p_campaign_ids IS NULL THEN
        -- Deltas of campaigns that no longer exist (deleted, or their leads moved
        -- away by ON DELETE SET NULL) have nothing to fold into. A visible delta row
        -- was committed together with its campaign's existence, so this cannot
        -- remove the delta of a campaign that is still being created.
        DELETE FROM public.campaign_stats_delta AS d
         WHERE NOT EXISTS (SELECT 1 FROM public.campaigns AS c WHERE c.id = d.campaign_id);
    END IF;

    SELECT coalesce(array_agg(x.id ORDER BY x.id), '{}')
      INTO v_locked
      FROM (SELECT c.id
              FROM public.campaigns AS c
             WHERE (p_campaign_ids IS NULL OR c.id = ANY (p_campaign_ids))
               AND EXISTS (SELECT 1 FROM public.campaign_stats_delta AS d WHERE d.campaign_id = c.id)
             ORDER BY c.id
               FOR NO KEY UPDATE OF c) AS x;

    IF cardinality(v_locked) = 0 THEN
        RETURN 0;
    END IF;

    WITH folded AS (
        DELETE FROM public.campaign_stats_delta AS d
         WHERE d.campaign_id = ANY (v_locked)
        RETURNING d.campaign_id, d.active_delta, d.completed_delta, d.opted_out_delta,
                  d.booked_delta, d.last_enrollment_at
    ), per_campaign AS (
        SELECT f.campaign_id,
               sum(f.active_delta)::integer    AS active_delta,
               sum(f.completed_delta)::integer AS completed_delta,
               sum(f.opted_out_delta)::integer AS opted_out_delta,
               sum(f.booked_delta)::integer    AS booked_delta,
               max(f.last_enrollment_at)       AS last_enrollment_at,
               count(*)::integer               AS n
          FROM folded AS f
         GROUP BY f.campaign_id
    ), updated AS (
        UPDATE public.campaigns AS c
           SET active_leads_count    = c.active_leads_count + p.active_delta,
               completed_leads_count = c.completed_leads_count + p.completed_delta,
               opted_out_count       = c.opted_out_count + p.opted_out_delta,
               booked_count          = c.booked_count + p.booked_delta,
               last_enrollment_at    = greatest(c.last_enrollment_at, p.last_enrollment_at)
          FROM per_campaign AS p
         WHERE c.id = p.campaign_id
        RETURNING p.n
    )
    SELECT coalesce(sum(u.n), 0)::integer INTO v_folded FROM updated AS u;

    RETURN v_folded;
END
$fn$;

COMMENT ON FUNCTION public.apply_campaign_stats_deltas(uuid[]) IS
    'Folds pending campaign_stats_delta rows into campaigns counters (NULL: every campaign with pending deltas); returns the number of delta rows folded.';
