-- de_enrollment_run_queue: the clients a run over every client starts, least recently run first: de_enrollment_clients() less the idle ones run a moment ago
-- requires: 0028_detect_dead_runs
-- after: de_enrollment_clients, de_enrollment_finished_leads, de_enrollment_marked_campaigns, de_enrollment_opted_out_leads
--
-- A client with an active campaign takes part in every run even when nothing of it is due:
-- its run row keeps its health fresh and reports its held leads and invalid campaigns. A
-- run started right after another (pg_cron queues the next run of a job while one is
-- running, and starts it as soon as that one ends) would open all those rows again for
-- nothing, so a client with nothing due is passed over when its last run started less
-- than p_idle_ms ago: no finished lead in the campaigns marked for it (looked for only when
-- a campaign is marked: a statement that finishes a lead marks its campaign, a run's claim
-- clears the marks it finds stale) and no active opted-out lead. Due leads are never
-- passed over. No JIT, like de_enrollment_clients: its estimate (a probe per client, every
-- lead of theirs) is far above jit_above_cost, the work a few index probes.
CREATE FUNCTION deenroll.de_enrollment_run_queue(p_idle_ms integer)
RETURNS TABLE (client_id uuid)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET jit = off
AS $fn$
    SELECT c.client_id
      FROM public.de_enrollment_clients() AS c
     WHERE c.last_run_at IS NULL
        OR c.last_run_at < clock_timestamp() - make_interval(secs => coalesce(p_idle_ms, 0) / 1000.0)
        -- one probe per marked campaign; an argument with a subquery would keep the planner
        -- from inlining de_enrollment_finished_leads, and a call it plans every time costs more
        -- than the probes of every client together
        OR EXISTS (SELECT 1
                     FROM public.de_enrollment_marked_campaigns(c.client_id) AS m
                    CROSS JOIN LATERAL public.de_enrollment_finished_leads(c.client_id, ARRAY[m.campaign_id], false) AS f)
        OR EXISTS (SELECT 1 FROM public.de_enrollment_opted_out_leads(c.client_id, false) AS o)
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_run_queue(integer) IS
    'The clients a run over every client starts (de_enrollment_clients() order), less those with nothing due whose last run started less than p_idle_ms ago.';
