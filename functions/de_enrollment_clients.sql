-- de_enrollment_clients: the clients a run processes, least recently run first
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_due_leads
--
-- A client takes part when it has an active campaign (campaigns.is_active), or when leads of
-- its own (leads.client_id) are due (de_enrollment_due_leads), in whatever campaign: a
-- deactivated one, another client's, one without a client. A campaign without a client
-- names no client and stops nothing. Held leads count too: the run reports them.
-- Order: the client whose last run started longest ago comes first (never run: first of
-- all), then client_id. A run that ends on its time budget leaves the clients it did not
-- reach at the head of the queue for the next run, so none is starved.
-- Cost: one pass over campaigns and the due leads (read through the partial indexes of
-- 0019); nothing due costs a few index probes per campaign, whatever the number of leads.
CREATE FUNCTION public.de_enrollment_clients()
RETURNS TABLE (client_id uuid, last_run_at timestamptz)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $fn$
    SELECT x.client_id, last_run.run_at
      FROM (SELECT c.client_id FROM public.campaigns AS c WHERE c.is_active AND c.client_id IS NOT NULL
            UNION
            SELECT d.client_id FROM public.de_enrollment_due_leads AS d WHERE d.client_id IS NOT NULL) AS x
      LEFT JOIN LATERAL (SELECT r.run_at
                           FROM public.de_enrollment_runs AS r
                          WHERE r.client_id = x.client_id
                          ORDER BY r.run_at DESC
                          LIMIT 1) AS last_run ON true
     ORDER BY last_run.run_at NULLS FIRST, x.client_id
$fn$;

COMMENT ON FUNCTION public.de_enrollment_clients() IS
    'Clients a de-enrollment run processes (an active campaign, or due leads of their own anywhere), least recently run first.';
