-- de_enrollment_dry_run: what a run would do now, per client (every client a run lists, or the one given): due leads per campaign, invalid campaigns, held leads; changes nothing
-- requires: 0028_detect_dead_runs
-- after: de_enrollment_require_client
--
-- `deenroll run --dry-run` in one statement. The clients and their order are
-- de_enrollment_clients()'s (least recently run first); the counts are
-- count_leads_for_de_enrollment's (the claim's leads, counted instead of claimed), the
-- campaigns whose messages is not an array de_enrollment_invalid_campaigns's, and the
-- leads runs hold de_enrollment_held_leads's, by reason. Locks nothing. No JIT, like the
-- run's own transactions: its statements are estimated far above jit_above_cost and cost
-- a few index probes per client.
CREATE FUNCTION deenroll.de_enrollment_dry_run(p_client_id uuid DEFAULT NULL)
RETURNS TABLE (client_id uuid, campaigns jsonb, invalid_campaigns jsonb, held jsonb)
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $fn$
BEGIN
    IF p_client_id IS NOT NULL THEN
        PERFORM deenroll.de_enrollment_require_client(p_client_id);
    END IF;
    RETURN QUERY
    SELECT c.client_id,
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'campaign_id', n.campaign_id, 'campaign_name', n.campaign_name,
                       'total_messages', n.total_messages, 'completed', n.completed, 'opted_out', n.opted_out)
                       ORDER BY n.ordinality), '[]')
              FROM public.count_leads_for_de_enrollment(c.client_id) WITH ORDINALITY AS n),
           (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'campaign_id', i.campaign_id, 'campaign_name', i.campaign_name,
                       'messages_type', i.messages_type, 'active_leads', i.active_leads)
                       ORDER BY i.campaign_id), '[]')
              FROM public.de_enrollment_invalid_campaigns(c.client_id) AS i),
           (SELECT coalesce(jsonb_object_agg(h.reason, h.n), '{}')
              FROM (SELECT x.reason, count(*) AS n
                      FROM public.de_enrollment_held_leads(c.client_id) AS x
                     GROUP BY x.reason) AS h)
      FROM (SELECT p_client_id AS client_id, 0::bigint AS ord
             WHERE p_client_id IS NOT NULL
            UNION ALL
            SELECT d.client_id, d.ord
              FROM public.de_enrollment_clients() WITH ORDINALITY AS d (client_id, last_run_at, ord)
             WHERE p_client_id IS NULL) AS c
     ORDER BY c.ord;
END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_dry_run(uuid) IS
    'What a run would de-enroll now per client (campaign counts, invalid campaigns, held leads by reason), in the order a run takes the clients; changes nothing.';
