-- 0025: runner leases instead of session advisory locks, so that runs work through
-- transaction-mode connection poolers (PgBouncer, Supabase's pooler), where no lock may
-- outlive its transaction.
--   * deenroll.client_leases: one row per client a run is working on. A run takes its
--     client's lease when it starts (start_de_enrollment_run), renews it while its batches
--     run (de_enrollment_heartbeat, in each batch's own transaction) and gives it back when
--     it finishes (finish_de_enrollment_run). A runner that dies stops renewing: once
--     expires_at has passed, the next run takes the lease over and marks the dead run failed.
-- Only the functions (SECURITY DEFINER) read and write it; no role gets a privilege on it.
SET LOCAL lock_timeout = '5s';

CREATE TABLE deenroll.client_leases (
    client_id    uuid        PRIMARY KEY,
    run_id       uuid        NOT NULL UNIQUE,
    runner_host  text,
    runner_pid   integer,
    ttl          interval    NOT NULL CHECK (ttl > interval '0'),
    acquired_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at   timestamptz NOT NULL
);

COMMENT ON TABLE deenroll.client_leases IS
    'deenroll: the run working on each client; renewed by its batches, free again once expires_at has passed.';
COMMENT ON COLUMN deenroll.client_leases.ttl IS
    'How long the lease lasts past each sign of life of its run (the run''s budget, at least 5 s).';
