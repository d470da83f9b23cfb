-- de_enrollment_held_leads: the leads runs hold (the database refused to de-enroll them), of one client or all when NULL
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_due_outcome, de_enrollment_lead_fingerprint
--
-- Rows of deenroll.held_leads whose lead is still due and still in the state it was held in
-- (same fingerprint): exactly the leads the next run skips. A held lead the platform has
-- changed since is not listed: the next run tries it again. The runner reports these, by
-- reason, after each client and in the dry run.
CREATE FUNCTION public.de_enrollment_held_leads(p_client_id uuid DEFAULT NULL)
RETURNS TABLE (
    lead_id       uuid,
    client_id     uuid,
    campaign_id   uuid,
    outcome       text,
    reason        text,
    sqlstate      text,
    error_message text,
    attempts      integer,
    first_held_at timestamptz,
    last_held_at  timestamptz,
    run_id        uuid
)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT h.lead_id, h.client_id, h.campaign_id,
           public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                            l.current_message_position, c.id, c.messages),
           h.reason, h.sqlstate, h.error_message, h.attempts, h.first_held_at, h.last_held_at, h.run_id
      FROM deenroll.held_leads AS h
      JOIN public.leads AS l ON l.id = h.lead_id
      LEFT JOIN public.campaigns AS c ON c.id = l.campaign_link_id
     WHERE (p_client_id IS NULL OR h.client_id = p_client_id)
       AND l.client_id = h.client_id
       AND h.fingerprint = public.de_enrollment_lead_fingerprint(l.xmin, c.id, c.messages)
       AND public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                            l.current_message_position, c.id, c.messages) IS NOT NULL
     ORDER BY h.client_id, h.lead_id
$fn$;

COMMENT ON FUNCTION public.de_enrollment_held_leads(uuid) IS
    'Leads runs hold (still due, unchanged since held), with reason and error, of one client or all.';
