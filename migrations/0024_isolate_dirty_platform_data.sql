-- 0024: dirty platform data never stops de-enrollment.
--   * deenroll.held_leads: leads a run could not de-enroll (a constraint or trigger of the
--     platform refused the change), with the reason and a fingerprint of the state they were
--     held in; runs skip them until that state changes or an operator releases them.
--   * The one-entry-per-campaign check on leads.campaign_history now judges only entries
--     written by deenroll (they carry a run_id): entries the platform writes (without a
--     campaign id, not objects, its own repeats) never make a write fail.
--   * de_enrollment_runs.leads_held: leads a run held.
--   * The two partial indexes keyed by the lead's own client, with which a run finds a
--     client's due leads wherever they are linked (a campaign of another client, or of none),
--     are built by 0026 without blocking writes (CREATE INDEX CONCURRENTLY).
SET LOCAL lock_timeout = '5s';

-- True unless two entries written by deenroll (JSON objects with a run_id) name the same
-- campaign. Anything else the platform may write passes: a history that is not an array,
-- entries that are not objects, entries without a campaign id, the platform's own repeats.
-- Never raises, whatever the JSON. Used by a CHECK, so it runs with the writer's rights.
CREATE FUNCTION deenroll.campaign_history_has_no_repeats_of_ours(p_history jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN p_history IS NULL OR jsonb_typeof(p_history) <> 'array' OR jsonb_array_length(p_history) < 2 THEN true
    ELSE (SELECT count(*) = count(DISTINCT e.value ->> 'campaign_id')
            FROM jsonb_array_elements(p_history) AS e
           WHERE jsonb_typeof(e.value) = 'object'
             AND (e.value -> 'run_id') IS NOT NULL
             AND (e.value -> 'campaign_id') IS NOT NULL)
END;

COMMENT ON FUNCTION deenroll.campaign_history_has_no_repeats_of_ours(jsonb) IS
    'CHECK helper: false when two campaign_history entries written by deenroll (objects with a run_id) name the same campaign.';

-- A JSON text as timestamptz when it is an ISO 8601 date or timestamp PostgreSQL accepts,
-- else NULL; never raises (reports read timestamps out of the platform's JSON).
CREATE FUNCTION deenroll.json_timestamptz(p_text text)
RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (SELECT CASE
            WHEN m IS NULL THEN NULL
            WHEN m[1]::integer BETWEEN 1 AND 9999 AND m[2]::integer BETWEEN 1 AND 12
                 AND coalesce(m[4]::integer, 0) < 24 AND coalesce(m[5]::integer, 0) < 60
                 AND coalesce(m[6]::integer, 0) < 60
                 AND abs(coalesce(m[8]::integer, 0)) <= 15 AND coalesce(m[9]::integer, 0) < 60
                THEN CASE WHEN m[3]::integer BETWEEN 1 AND extract(day FROM make_date(m[1]::integer, m[2]::integer, 1)
                                                                        + interval '1 month - 1 day')::integer
                          THEN p_text::timestamptz END
        END
          FROM regexp_match(p_text,
                 '^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,6})?)?\s*(Z|([+-]\d{2})(?::?(\d{2}))?)?)?$') AS m);

COMMENT ON FUNCTION deenroll.json_timestamptz(text) IS
    'An ISO 8601 date/timestamp text as timestamptz, NULL when it is not one PostgreSQL accepts; never raises.';

-- NOT VALID: the rows are not scanned now (a history the platform wrote before may hold
-- anything); every later write of a row is checked.
ALTER TABLE leads
    DROP CONSTRAINT leads_campaign_history_one_entry_per_campaign,
    ADD CONSTRAINT leads_campaign_history_one_entry_per_campaign
        CHECK (deenroll.campaign_history_has_no_repeats_of_ours(campaign_history)) NOT VALID;

ALTER TABLE de_enrollment_runs
    ADD COLUMN leads_held integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN de_enrollment_runs.leads_held IS
    'Leads this run could not de-enroll and held (deenroll.held_leads), counted when held.';

CREATE TABLE deenroll.held_leads (
    lead_id       uuid PRIMARY KEY,
    client_id     uuid NOT NULL,
    campaign_id   uuid,
    reason        text NOT NULL,
    sqlstate      text,
    error_message text,
    fingerprint   text NOT NULL,
    attempts      integer NOT NULL DEFAULT 1,
    first_held_at timestamptz NOT NULL DEFAULT now(),
    last_held_at  timestamptz NOT NULL DEFAULT now(),
    run_id        uuid
);
CREATE INDEX held_leads_client_id_idx ON deenroll.held_leads (client_id);
COMMENT ON TABLE deenroll.held_leads IS
    'Leads a run could not de-enroll, with the reason; skipped while their fingerprint (row version, campaign sequence) is unchanged.';
