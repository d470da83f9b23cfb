-- de_enrollment_run_death: the one rule for a dead run: how a run's death is known, NULL while it is alive
-- requires: 0024_isolate_dirty_platform_data
--
-- A run that holds its client's lease (deenroll.client_leases) is judged by the lease, its
-- status aside (start_de_enrollment_run takes over a dead run's lease):
--   * its last sign of life is older than the server's last start (pg_postmaster_start_time()):
--     every session of that time is gone;
--   * its recorded server session has ended (deenroll.lease_sessions: no session with that
--     pid and start time; a start time this function's owner may not read counts as alive);
--   * its lease has expired: the only sign the database has behind a connection pooler.
-- A run still 'running' without a lease (written before leases existed, or by hand) is dead
-- once it started more than twice its budget ago (max_runtime_ms, 240000 when unset). A run
-- that is not 'running' and holds no lease is finished, not dead: NULL.
-- The reason is a sentence for error_details and warnings. Everything that tells a live run
-- from a dead one asks this function: taking a client over (start_de_enrollment_run), the runs
-- another session may help (de_enrollment_open_runs), the runs health and the daily summary
-- count as failed, the clients whose due leads a run in progress is taking (de_enrollment_health).
-- Owner's rights: readers of the views may not read the lease tables. The lease tables come
-- with 0025 (leases) and 0028 (sessions): on a database rolled back before them, what is there
-- is judged (health keeps working at every level this release can be rolled back to).
CREATE FUNCTION deenroll.de_enrollment_run_death(p_run_id uuid)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_lease   record;
    v_pid     integer;
    v_started timestamptz;
    v_run     record;
BEGIN
    IF to_regclass('deenroll.client_leases') IS NOT NULL THEN
        SELECT l.heartbeat_at, l.expires_at INTO v_lease FROM deenroll.client_leases AS l WHERE l.run_id = p_run_id;
        IF FOUND THEN
            IF v_lease.heartbeat_at < pg_postmaster_start_time() THEN
                RETURN format('the database server restarted at %s, after its last sign of life at %s',
                              to_char(pg_postmaster_start_time() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                              to_char(v_lease.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'));
            END IF;
            IF to_regclass('deenroll.lease_sessions') IS NOT NULL THEN
                SELECT s.backend_pid, s.backend_start INTO v_pid, v_started
                  FROM deenroll.lease_sessions AS s
                 WHERE s.run_id = p_run_id;
                IF FOUND AND NOT EXISTS (SELECT FROM pg_stat_get_activity(v_pid) AS a
                                          WHERE a.backend_start IS NULL OR v_started IS NULL
                                             OR a.backend_start = v_started) THEN
                    RETURN format('its database session (backend pid %s) ended', v_pid);
                END IF;
            END IF;
            IF v_lease.expires_at < clock_timestamp() THEN
                RETURN format('its lease expired at %s, with no sign of life since %s',
                              to_char(v_lease.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                              to_char(v_lease.heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'));
            END IF;
            RETURN NULL;
        END IF;
    END IF;

    SELECT r.status, r.run_at, coalesce(r.max_runtime_ms, 240000) AS budget_ms INTO v_run
      FROM public.de_enrollment_runs AS r
     WHERE r.id = p_run_id;
    IF FOUND AND v_run.status = 'running'
       AND v_run.run_at < clock_timestamp() - 2 * v_run.budget_ms::bigint * interval '1 millisecond' THEN
        RETURN format('it holds no lease and started at %s, more than twice its budget of %s ms ago',
                      to_char(v_run.run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'), v_run.budget_ms);
    END IF;
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_run_death(uuid) IS
    'How a run''s death is known (server restarted, session ended, lease expired; without a lease, running past twice its budget); NULL while it is alive or when it finished.';
