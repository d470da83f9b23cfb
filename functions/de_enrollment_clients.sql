-- de_enrollment_clients: the clients a run processes, least recently run first
-- requires: 0027_track_due_campaigns
-- after: de_enrollment_due_outcome, de_enrollment_finished_leads
--
-- A client takes part when it has an active campaign (campaigns.is_active), or when leads of
-- its own (leads.client_id) are due, in whatever campaign: a deactivated one, another
-- client's, one without a client. A campaign without a client names no client and stops
-- nothing. Held leads count too: the run reports them.
-- Order: the client whose last run started longest ago comes first (never run: first of
-- all), then client_id. A run that ends on its time budget leaves the clients it did not
-- reach at the head of the queue for the next run, so none is starved.
-- Cost: the active campaigns (a partial index), the campaigns deenroll.due_campaigns marks
-- (one probe each), and the active opted-out leads (a partial index, empty after a run);
-- never the campaigns that finished long ago, nor the leads in progress. No JIT: the
-- planner's estimate (every lead of the partial indexes) is far above jit_above_cost while
-- the work is a few index probes, and a server with JIT on would compile it on every call.
CREATE FUNCTION public.de_enrollment_clients()
RETURNS TABLE (client_id uuid, last_run_at timestamptz)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
SET jit = off
AS $fn$
    WITH marked AS (
        SELECT DISTINCT m.client_id, m.campaign_id
          FROM deenroll.due_campaigns AS m
         WHERE m.client_id IS NOT NULL
        UNION
        -- a sequence edit not settled yet: the clients with leads in that campaign
        SELECT l.client_id, e.campaign_id
          FROM (SELECT DISTINCT m.campaign_id FROM deenroll.due_campaigns AS m WHERE m.client_id IS NULL) AS e
         CROSS JOIN LATERAL (SELECT DISTINCT ll.client_id
                               FROM public.leads AS ll
                              WHERE ll.campaign_link_id = e.campaign_id AND ll.is_active AND ll.completed_at IS NULL
                                AND ll.client_id IS NOT NULL
                             OFFSET 0) AS l
    )
    SELECT x.client_id, last_run.run_at
      FROM (SELECT c.client_id FROM public.campaigns AS c WHERE c.is_active AND c.client_id IS NOT NULL
            UNION
            -- one probe per marked pair: its first finished lead, if any
            SELECT m.client_id
              FROM marked AS m
             WHERE EXISTS (SELECT 1
                             FROM public.de_enrollment_finished_leads(m.client_id, ARRAY[m.campaign_id], false) AS f)
            UNION
            -- the active opted-out leads (their partial index, on its own: OFFSET 0)
            SELECT l.client_id
              FROM (SELECT o.client_id, o.campaign_link_id, o.is_active, o.completed_at, o.opted_out,
                           o.current_message_position
                      FROM public.leads AS o
                     WHERE o.is_active AND o.opted_out AND o.client_id IS NOT NULL
                    OFFSET 0) AS l
              JOIN public.campaigns AS c ON c.id = l.campaign_link_id
             WHERE public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                                    l.current_message_position, c.id, c.messages) IS NOT NULL) AS x
      LEFT JOIN LATERAL (SELECT r.run_at
                           FROM public.de_enrollment_runs AS r
                          WHERE r.client_id = x.client_id
                          ORDER BY r.run_at DESC
                          LIMIT 1) AS last_run ON true
     ORDER BY last_run.run_at NULLS FIRST, x.client_id
$fn$;

COMMENT ON FUNCTION public.de_enrollment_clients() IS
    'Clients a de-enrollment run processes (an active campaign, or due leads of their own anywhere), least recently run first.';
