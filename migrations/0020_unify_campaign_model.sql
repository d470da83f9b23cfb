-- 0020: the v2 campaign model (SOP "Migration 0020"): campaign state and lead
-- counters, kept exact from this migration on (0026 counts the existing leads).
--
-- How the counters stay exact without recounting every lead on every run:
-- statement-level triggers on leads append one row per touched campaign to
-- campaign_stats_delta (append-only, so the platform's writes never queue on a
-- campaign row), and apply_campaign_stats_deltas() folds those rows into the
-- campaigns. A statement that changes no counted column appends nothing.
--
-- This transaction is short: the new columns have constant defaults (a catalog
-- change) and creating the triggers locks leads only until commit. The counters
-- start at zero; 0026 counts the existing leads into them in small batches, one
-- transaction per batch, exact while the platform keeps writing (the triggers
-- record every change from this commit on). lock_timeout bounds how long platform
-- writes can queue behind this migration while it waits for its locks.
SET LOCAL lock_timeout = '2s';

ALTER TABLE campaigns
    ADD COLUMN is_active             boolean NOT NULL DEFAULT true,
    ADD COLUMN active_leads_count    integer NOT NULL DEFAULT 0,
    ADD COLUMN completed_leads_count integer NOT NULL DEFAULT 0,
    ADD COLUMN opted_out_count       integer NOT NULL DEFAULT 0,
    ADD COLUMN booked_count          integer NOT NULL DEFAULT 0,
    ADD COLUMN deactivated_at        timestamptz,
    ADD COLUMN last_enrollment_at    timestamptz,
    ADD COLUMN auto_discovered       boolean NOT NULL DEFAULT false;

CREATE TABLE campaign_stats_delta (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id        uuid NOT NULL,
    active_delta       integer NOT NULL DEFAULT 0,
    completed_delta    integer NOT NULL DEFAULT 0,
    opted_out_delta    integer NOT NULL DEFAULT 0,
    booked_delta       integer NOT NULL DEFAULT 0,
    last_enrollment_at timestamptz,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaign_stats_delta_campaign_id_idx ON campaign_stats_delta (campaign_id);
COMMENT ON TABLE campaign_stats_delta IS
    'Pending changes to campaign counters, appended by triggers on leads and folded by apply_campaign_stats_deltas().';

-- Trigger function: appends the per-campaign change in counted leads made by one statement.
-- Transition tables exist only for the events that have them, hence one branch per event.
CREATE FUNCTION leads_record_stats_delta()
RETURNS trigger
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- Every lead is gone, so every counter is zero.
        DELETE FROM campaign_stats_delta;
        UPDATE campaigns
           SET active_leads_count = 0, completed_leads_count = 0,
               opted_out_count = 0, booked_count = 0
         WHERE active_leads_count <> 0 OR completed_leads_count <> 0
            OR opted_out_count <> 0 OR booked_count <> 0;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO campaign_stats_delta
               (campaign_id, active_delta, completed_delta, opted_out_delta, booked_delta, last_enrollment_at)
        SELECT campaign_link_id,
               count(*) FILTER (WHERE is_active AND NOT coalesce(opted_out, false)),
               count(*) FILTER (WHERE completed_at IS NOT NULL),
               count(*) FILTER (WHERE opted_out),
               count(*) FILTER (WHERE booked),
               max(created_at)
          FROM new_rows
         WHERE campaign_link_id IS NOT NULL
         GROUP BY campaign_link_id;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO campaign_stats_delta
               (campaign_id, active_delta, completed_delta, opted_out_delta, booked_delta)
        SELECT d.*
          FROM (SELECT campaign_link_id,
                       -count(*) FILTER (WHERE is_active AND NOT coalesce(opted_out, false)) AS a,
                       -count(*) FILTER (WHERE completed_at IS NOT NULL) AS c,
                       -count(*) FILTER (WHERE opted_out) AS o,
                       -count(*) FILTER (WHERE booked) AS b
                  FROM old_rows
                 WHERE campaign_link_id IS NOT NULL
                 GROUP BY campaign_link_id) AS d
         WHERE d.a <> 0 OR d.c <> 0 OR d.o <> 0 OR d.b <> 0;
    ELSE
        INSERT INTO campaign_stats_delta
               (campaign_id, active_delta, completed_delta, opted_out_delta, booked_delta)
        SELECT d.*
          FROM (SELECT x.campaign_id, sum(x.a)::int AS a, sum(x.c)::int AS c,
                       sum(x.o)::int AS o, sum(x.b)::int AS b
                  FROM (SELECT campaign_link_id AS campaign_id,
                               (is_active AND NOT coalesce(opted_out, false))::int AS a,
                               (completed_at IS NOT NULL)::int AS c,
                               coalesce(opted_out, false)::int AS o,
                               coalesce(booked, false)::int AS b
                          FROM new_rows
                        UNION ALL
                        SELECT campaign_link_id,
                               -(is_active AND NOT coalesce(opted_out, false))::int,
                               -(completed_at IS NOT NULL)::int,
                               -coalesce(opted_out, false)::int,
                               -coalesce(booked, false)::int
                          FROM old_rows) AS x
                 WHERE x.campaign_id IS NOT NULL
                 GROUP BY x.campaign_id) AS d
         WHERE d.a <> 0 OR d.c <> 0 OR d.o <> 0 OR d.b <> 0;
    END IF;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER leads_stats_delta_on_insert
    AFTER INSERT ON leads REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION leads_record_stats_delta();
CREATE TRIGGER leads_stats_delta_on_update
    AFTER UPDATE ON leads REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION leads_record_stats_delta();
CREATE TRIGGER leads_stats_delta_on_delete
    AFTER DELETE ON leads REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION leads_record_stats_delta();
CREATE TRIGGER leads_stats_delta_on_truncate
    AFTER TRUNCATE ON leads
    FOR EACH STATEMENT EXECUTE FUNCTION leads_record_stats_delta();
