-- de_enrollment_invalid_campaigns: campaigns whose messages is not a JSON array yet hold active leads, per client of those leads (one client, or all when NULL)
-- requires: 0024_isolate_dirty_platform_data
--
-- Such a campaign has no sequence length, so none of its leads can be judged finished: a
-- run leaves them active (their opted-out leads still leave: a STOP is always honoured),
-- records these campaigns in error_details and ends 'partial' while everything else
-- proceeds. client_id is the leads' own client (the client whose run reports them);
-- campaign_client_id the campaign's. messages_type is jsonb_typeof(messages) ('object',
-- 'string', ...), or 'missing' for SQL NULL. active_leads counts the client's active leads
-- in it that are neither completed nor opted out (those a sequence length would decide on).
-- Cost follows the client's active leads' campaigns (a loose scan of the client index of
-- 0024), or, for all clients, the campaigns table. No JIT: its estimate is far above
-- jit_above_cost, the work a loose index scan.
CREATE FUNCTION public.de_enrollment_invalid_campaigns(p_client_id uuid DEFAULT NULL)
RETURNS TABLE (
    client_id          uuid,
    campaign_id        uuid,
    campaign_name      text,
    messages_type      text,
    active_leads       bigint,
    campaign_client_id uuid
)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
AS $fn$
    WITH bad AS (
        SELECT c.id, c.name, c.client_id, c.messages
          FROM public.campaigns AS c
         WHERE jsonb_typeof(c.messages) IS DISTINCT FROM 'array'
    )
    SELECT n.client_id, b.id, b.name, coalesce(jsonb_typeof(b.messages), 'missing'), n.active_leads, b.client_id
      FROM bad AS b
     CROSS JOIN LATERAL (SELECT l.client_id, count(*) AS active_leads
                           FROM public.leads AS l
                          WHERE l.campaign_link_id = b.id AND l.is_active AND l.completed_at IS NULL
                            AND l.opted_out IS NOT TRUE
                            AND (p_client_id IS NULL OR l.client_id = p_client_id)
                          GROUP BY l.client_id) AS n
     WHERE n.client_id IS NOT NULL
     ORDER BY n.client_id, b.id
$fn$;

COMMENT ON FUNCTION public.de_enrollment_invalid_campaigns(uuid) IS
    'Campaigns whose messages is not a JSON array and that hold active leads, per client of those leads; a run leaves those leads (opted-out ones excepted) and ends partial.';
