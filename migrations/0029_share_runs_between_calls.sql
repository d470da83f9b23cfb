-- 0029: one run of `deenroll run --workers N` is N calls of the run's procedure that share
-- its clients and its deadline.
--   * deenroll.run_groups: one row per such run (its id, passed by every call, and the
--     deadline the first call fixed for all of them).
--   * deenroll.run_group_clients: which client each call of the run took, and the run row
--     it opened, so that no two calls open a run for one client, and a call that lost its
--     connection is taken over by the next call of the same run.
-- Rows older than a day are deleted by the next run that starts. New tables only: nothing
-- here touches a table the platform writes or the runner's batches lock.
SET LOCAL lock_timeout = '5s';

CREATE TABLE deenroll.run_groups (
    group_id   uuid        PRIMARY KEY,
    deadline   timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);

CREATE TABLE deenroll.run_group_clients (
    group_id  uuid NOT NULL REFERENCES deenroll.run_groups (group_id) ON DELETE CASCADE,
    client_id uuid NOT NULL,
    run_id    uuid,
    PRIMARY KEY (group_id, client_id)
);

COMMENT ON TABLE deenroll.run_groups IS
    'deenroll: one run made of several calls of the run''s procedure (deenroll run --workers N) and its shared deadline.';
COMMENT ON TABLE deenroll.run_group_clients IS
    'deenroll: the clients the calls of one run took, each once, and the run row opened for each (NULL: none could be).';
