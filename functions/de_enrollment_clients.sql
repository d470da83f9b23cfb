-- de_enrollment_clients: the clients a run processes, least recently run first
-- requires: 0021_add_de_enrollment_monitoring
--
-- A client takes part when it has an active campaign (campaigns.is_active), or when a
-- campaign of it that was deactivated still has leads due for de-enrollment (so a
-- deactivation never strands finished or opted-out leads as active).
-- Order: the client whose last run started longest ago comes first (never run: first
-- of all), then client_id. A run that ends on its time budget leaves the clients it
-- did not reach at the head of the queue for the next run, so none is starved.
-- Cost: one pass over campaigns and a few index probes per campaign; it does not
-- depend on the number of leads (sequential scans of leads, which the planner may
-- prefer for an EXISTS over a big campaign, are ruled out).
CREATE FUNCTION de_enrollment_clients()
RETURNS TABLE (client_id uuid, last_run_at timestamptz)
LANGUAGE sql
STABLE
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $fn$
    SELECT x.client_id, last_run.run_at
      FROM (SELECT DISTINCT c.client_id
              FROM campaigns AS c
             CROSS JOIN LATERAL (SELECT CASE WHEN jsonb_typeof(c.messages) = 'array'
                                             THEN jsonb_array_length(c.messages) END AS total) AS m
             WHERE c.is_active
                OR EXISTS (SELECT 1 FROM leads AS l
                            WHERE l.campaign_link_id = c.id AND l.is_active AND l.opted_out)
                OR EXISTS (SELECT 1 FROM leads AS l
                            WHERE l.campaign_link_id = c.id AND l.is_active AND l.completed_at IS NULL
                              AND l.current_message_position >= m.total)) AS x
      LEFT JOIN LATERAL (SELECT r.run_at
                           FROM de_enrollment_runs AS r
                          WHERE r.client_id = x.client_id
                          ORDER BY r.run_at DESC
                          LIMIT 1) AS last_run ON true
     ORDER BY last_run.run_at NULLS FIRST, x.client_id
$fn$;

COMMENT ON FUNCTION de_enrollment_clients() IS
    'Clients a de-enrollment run processes (an active campaign, or leads still due in a deactivated one), least recently run first.';
