-- de_enrollment_join_run_group: join a run made of several calls of the run's procedure: its deadline (the first call fixes it for all) and the clients whose call was lost
-- requires: 0029_share_runs_between_calls
-- after: de_enrollment_open_runs
--
-- `deenroll run --workers N` makes N calls of deenroll.run_de_enrollment with one run id of
-- its own (p_run_group). The first call to get here records the run with its deadline; the
-- others read it, so every call stops at the same moment whatever its start. Each call also
-- gets the clients a call of this run took whose run is still 'running' but dead (that call
-- lost its connection: its session ended, the server restarted, its lease expired): it
-- takes them over first, whether or not the queue would list them now. A run that starts
-- also deletes what runs a day old left (their calls ended long ago).
CREATE FUNCTION deenroll.de_enrollment_join_run_group(p_group_id uuid, p_deadline timestamptz)
RETURNS TABLE (deadline timestamptz, lost_clients uuid[])
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    INSERT INTO deenroll.run_groups AS g (group_id, deadline)
    VALUES (p_group_id, p_deadline)
    ON CONFLICT (group_id) DO NOTHING;
    IF FOUND THEN
        DELETE FROM deenroll.run_groups AS g WHERE g.started_at < clock_timestamp() - interval '1 day';
    END IF;
    RETURN QUERY
    SELECT g.deadline,
           ARRAY(SELECT c.client_id
                   FROM deenroll.run_group_clients AS c
                   JOIN public.de_enrollment_runs AS r ON r.id = c.run_id AND r.status = 'running'
                  WHERE c.group_id = p_group_id
                    AND NOT EXISTS (SELECT FROM deenroll.de_enrollment_open_runs() AS o WHERE o.run_id = c.run_id)
                  ORDER BY c.client_id)
      FROM deenroll.run_groups AS g
     WHERE g.group_id = p_group_id;
END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_join_run_group(uuid, timestamptz) IS
    'Records a run shared by several calls (deenroll run --workers N) with its deadline, or reads the deadline its first call fixed; and the clients of its calls that died, to take over.';
