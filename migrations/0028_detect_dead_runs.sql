-- 0028: a dead run is known at once wherever the database can tell, and two leftovers are
-- tidied for Supabase's Security Advisor.
--   * deenroll.lease_sessions: the server session (backend pid and start time) of a run
--     that took its lease over a direct connection. When that session is gone, the run is
--     dead and the next run takes its client over at once, without waiting for the lease
--     to expire (start_de_enrollment_run). Behind a connection pooler the session belongs
--     to the pooler and tells nothing: no row is written, and the lease's expiry decides.
--     A table of its own, so that this upgrade takes no lock on the lease table that
--     batches of runs in progress use.
--   * public.campaign_history_has_no_repeats(jsonb), 0019's helper, has been used by no
--     constraint since 0024: dropped.
--   * The two helpers of 0024 that are not inlined into their callers (their bodies hold a
--     subquery) get a pinned search_path like every other function of ours.
-- Nothing here touches a table the platform writes or the runner's batches lock.
SET LOCAL lock_timeout = '5s';

CREATE TABLE deenroll.lease_sessions (
    run_id        uuid        PRIMARY KEY,
    backend_pid   integer     NOT NULL,
    backend_start timestamptz
);

COMMENT ON TABLE deenroll.lease_sessions IS
    'deenroll: the server session of each run that took its lease over a direct connection; once it is gone the run is dead.';
COMMENT ON COLUMN deenroll.lease_sessions.backend_start IS
    'When that session started (NULL when the function owner may not read it): tells a reused pid apart.';

-- No client calls it: no constraint has used it since 0024, and nothing else of ours does.
-- squawk-ignore ban-drop-function
DROP FUNCTION IF EXISTS public.campaign_history_has_no_repeats(jsonb);

ALTER FUNCTION deenroll.campaign_history_has_no_repeats_of_ours(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION deenroll.json_timestamptz(text) SET search_path = pg_catalog, pg_temp;
