-- 0021: monitoring infrastructure (SOP "Migration 0021"): one row per client per
-- run, one row per lead de-enrolled. The functions and views that read and write
-- these tables (get_leads_for_de_enrollment, process_de_enrollment_batch,
-- de_enrollment_health, ...) live in functions/ and views/; `deenroll migrate`
-- installs them right after this migration.
SET LOCAL lock_timeout = '5s';

CREATE TABLE de_enrollment_runs (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    run_at            timestamptz NOT NULL DEFAULT now(),
    client_id         uuid NOT NULL,
    status            text NOT NULL DEFAULT 'running'
                      CONSTRAINT de_enrollment_runs_status_check
                      CHECK (status IN ('running', 'success', 'partial', 'failed')),
    leads_evaluated   integer NOT NULL DEFAULT 0,
    leads_de_enrolled integer NOT NULL DEFAULT 0,
    leads_completed   integer NOT NULL DEFAULT 0,
    leads_opted_out   integer NOT NULL DEFAULT 0,
    batches           integer NOT NULL DEFAULT 0,
    batch_size        integer,
    max_runtime_ms    integer,
    duration_ms       integer,
    finished_at       timestamptz,
    error_details     text,
    runner_host       text,
    runner_pid        integer
);
COMMENT ON TABLE de_enrollment_runs IS
    'One row per client per `deenroll run`: running while it works, then success, partial or failed.';
CREATE INDEX de_enrollment_runs_client_run_at_idx ON de_enrollment_runs (client_id, run_at DESC);
CREATE INDEX de_enrollment_runs_run_at_idx ON de_enrollment_runs (run_at);
CREATE INDEX de_enrollment_runs_running_idx ON de_enrollment_runs (run_at) WHERE status = 'running';

CREATE TABLE de_enrollment_lead_log (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id            uuid NOT NULL REFERENCES de_enrollment_runs (id),
    lead_id           uuid NOT NULL,
    client_id         uuid NOT NULL,
    campaign_id       uuid NOT NULL,
    action            text NOT NULL DEFAULT 'de_enrolled',
    outcome           text NOT NULL
                      CONSTRAINT de_enrollment_lead_log_outcome_check
                      CHECK (outcome IN ('completed', 'opted_out', 'error')),
    messages_received integer,
    total_messages    integer,
    error_message     text,
    processed_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE de_enrollment_lead_log IS
    'One row per lead de-enrolled (outcome completed or opted_out), written in the same transaction as the lead.';
CREATE INDEX de_enrollment_lead_log_run_id_idx ON de_enrollment_lead_log (run_id);
CREATE INDEX de_enrollment_lead_log_lead_id_idx ON de_enrollment_lead_log (lead_id);
CREATE INDEX de_enrollment_lead_log_processed_at_idx ON de_enrollment_lead_log (processed_at);
-- The guarantee against double processing: a lead is de-enrolled from a campaign once.
CREATE UNIQUE INDEX de_enrollment_lead_log_once_per_campaign_idx
    ON de_enrollment_lead_log (lead_id, campaign_id)
    WHERE outcome IN ('completed', 'opted_out');
