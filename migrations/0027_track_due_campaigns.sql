-- transactional: false
-- 0027: a run's cost follows the campaigns that hold due leads, not all of a client's campaigns.
--   * deenroll.due_campaigns: (client, campaign) pairs that may hold finished leads of that
--     client (the lead's own client_id). A row is added by the statement that makes a lead
--     finished; the claim (get_leads_for_de_enrollment) looks only in the marked campaigns and
--     removes the marks of a campaign it finds without any finished lead. Finished campaigns
--     that piled up over the years carry no mark and cost nothing.
--   * A row with client_id NULL: a campaign whose sequence was edited, so every client's
--     leads in it are judged again: the claim looks in it for every client
--     until it settles the row into per-client marks. It settles it only once every
--     transaction that may have judged a lead by the old sequence has ended (settle_after,
--     the first transaction id not yet started when the claim first saw the edit committed).
--   * Triggers: on leads (insert, update; per statement, over the transition table) and on
--     campaigns (insert; update of messages or id). They only append rows: no platform write
--     ever waits for another one because of them.
--   * Partial indexes on campaigns: (client_id) WHERE is_active, the clients a run processes;
--     (id) WHERE messages is not a JSON array, the campaigns a run reports as invalid. Both
--     are small, and neither grows with the leads.
-- Opted-out leads need no mark: their own partial index (client_id) WHERE is_active AND
-- opted_out finds them, and it is empty after every run.
--
-- No transaction wraps this file: by hand, run it with `psql -v ON_ERROR_STOP=1 -f`, without
-- -1. Every statement can be run again. Each trigger is created in its own short transaction
-- (it waits for the writes in flight on its table); the marks are then backfilled from a
-- snapshot taken after the triggers exist, so no change is missed: one committed earlier is in
-- the snapshot, one committed later went through the triggers. The indexes are built
-- CONCURRENTLY: a build that failed half-way leaves an INVALID index under its name, which
-- `deenroll migrate` drops and builds again; by hand, the check below stops and names it.
SET lock_timeout = '5s';

DO $invalid$
DECLARE
    v_invalid text;
BEGIN
    SELECT string_agg(i.indexrelid::regclass::text, ', ')
      INTO v_invalid
      FROM pg_catalog.pg_index AS i
     WHERE i.indexrelid IN (to_regclass('deenroll.due_campaigns_client_campaign_idx'),
                            to_regclass('de_enrollment_campaigns_active_client_idx'),
                            to_regclass('de_enrollment_campaigns_invalid_idx'))
       AND NOT i.indisvalid;
    IF v_invalid IS NOT NULL THEN
        RAISE EXCEPTION 'an earlier build of these indexes failed and left them INVALID: %', v_invalid
              USING HINT = 'run DROP INDEX CONCURRENTLY for each, then this file again';
    END IF;
END
$invalid$;

CREATE TABLE IF NOT EXISTS deenroll.due_campaigns (
    client_id    uuid,
    campaign_id  uuid NOT NULL,
    settle_after xid8,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
-- Index builds wait for the transactions already running on their table but block nobody;
-- no lock_timeout or statement_timeout cuts them short (that would leave an INVALID index).
SET lock_timeout = 0;
SET statement_timeout = 0;
CREATE INDEX CONCURRENTLY IF NOT EXISTS due_campaigns_client_campaign_idx
    ON deenroll.due_campaigns (client_id, campaign_id);
SET lock_timeout = '5s';
COMMENT ON TABLE deenroll.due_campaigns IS
    'Campaigns that may hold finished leads of a client (client_id NULL: of every client, after a sequence edit); runs look only there.';

-- Trigger function on leads: marks the (client, campaign) pairs in which the statement left a
-- lead finished and not opted out (the claim's second branch), and the pairs whose campaign
-- this statement cannot see (not committed yet, or gone): it is judged when a run looks. Until
-- the definitions of the engine are installed (the first migrate of a database), every active
-- lead's pair is marked: more looking, never a lead missed.
CREATE OR REPLACE FUNCTION deenroll.leads_mark_due_campaigns()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF pg_catalog.to_regprocedure('public.de_enrollment_due_outcome(boolean,timestamptz,boolean,integer,uuid,jsonb)') IS NOT NULL THEN
        INSERT INTO deenroll.due_campaigns (client_id, campaign_id)
        SELECT DISTINCT n.client_id, n.campaign_link_id
          FROM new_rows AS n
          LEFT JOIN public.campaigns AS c ON c.id = n.campaign_link_id
         WHERE n.is_active AND n.completed_at IS NULL AND n.opted_out IS NOT TRUE
           AND n.client_id IS NOT NULL AND n.campaign_link_id IS NOT NULL
           AND (c.id IS NULL
                OR public.de_enrollment_due_outcome(n.is_active, n.completed_at, n.opted_out,
                                                    n.current_message_position, c.id, c.messages) = 'completed');
    ELSE
        INSERT INTO deenroll.due_campaigns (client_id, campaign_id)
        SELECT DISTINCT n.client_id, n.campaign_link_id
          FROM new_rows AS n
         WHERE n.is_active AND n.completed_at IS NULL AND n.opted_out IS NOT TRUE
           AND n.client_id IS NOT NULL AND n.campaign_link_id IS NOT NULL;
    END IF;
    RETURN NULL;
END
$fn$;
-- Trigger function on campaigns. A changed sequence (or id) is looked into for every client
-- until a run settles it (client_id NULL). A new campaign marks the pairs of the leads already
-- linked to it that it finishes (a lead linked while the campaign was not committed yet was
-- marked by its own statement, which could not see the campaign).
CREATE OR REPLACE FUNCTION deenroll.campaigns_mark_edited()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF TG_OP = 'INSERT'
       AND pg_catalog.to_regprocedure('public.de_enrollment_due_outcome(boolean,timestamptz,boolean,integer,uuid,jsonb)') IS NOT NULL THEN
        INSERT INTO deenroll.due_campaigns (client_id, campaign_id)
        SELECT DISTINCT l.client_id, NEW.id
          FROM public.leads AS l
         WHERE l.campaign_link_id = NEW.id
           AND l.is_active AND l.completed_at IS NULL AND l.opted_out IS NOT TRUE
           AND l.client_id IS NOT NULL
           AND l.current_message_position >= CASE WHEN jsonb_typeof(NEW.messages) = 'array'
                                                  THEN nullif(jsonb_array_length(NEW.messages), 0) END
           AND public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                                l.current_message_position, NEW.id, NEW.messages) = 'completed';
    ELSE
        INSERT INTO deenroll.due_campaigns (client_id, campaign_id) VALUES (NULL, NEW.id);
    END IF;
    RETURN NULL;
END
$fn$;

-- Trigger functions fire without any grant; nobody gets EXECUTE on them, whatever default
-- privileges the database gives new functions (Supabase grants its API roles).
DO $closed$
DECLARE
    v_role text;
BEGIN
    REVOKE ALL ON FUNCTION deenroll.leads_mark_due_campaigns(), deenroll.campaigns_mark_edited() FROM PUBLIC;
    FOR v_role IN SELECT r.rolname FROM pg_catalog.pg_roles AS r
                   WHERE r.rolname IN ('anon', 'authenticated', 'service_role') LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION deenroll.leads_mark_due_campaigns(), deenroll.campaigns_mark_edited() FROM %I',
                                  v_role);
    END LOOP;
END
$closed$;

CREATE OR REPLACE TRIGGER leads_mark_due_campaigns_on_insert
    AFTER INSERT ON leads REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION deenroll.leads_mark_due_campaigns();
CREATE OR REPLACE TRIGGER leads_mark_due_campaigns_on_update
    AFTER UPDATE ON leads REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION deenroll.leads_mark_due_campaigns();
CREATE OR REPLACE TRIGGER campaigns_mark_edited_on_insert
    AFTER INSERT ON campaigns
    FOR EACH ROW EXECUTE FUNCTION deenroll.campaigns_mark_edited();
CREATE OR REPLACE TRIGGER campaigns_mark_edited_on_update
    AFTER UPDATE OF messages, id ON campaigns
    FOR EACH ROW WHEN (OLD.messages IS DISTINCT FROM NEW.messages OR OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION deenroll.campaigns_mark_edited();

-- Backfill: every pair with an active, not completed, not opted-out lead (a loose scan of the
-- client index: one probe per pair). The first run looks into each once and clears the marks of
-- those without finished leads. Pairs already marked are not marked again.
SET lock_timeout = 0;
INSERT INTO deenroll.due_campaigns (client_id, campaign_id)
WITH RECURSIVE p AS (
    (SELECT l.client_id, l.campaign_link_id
       FROM leads AS l
      WHERE l.is_active AND l.completed_at IS NULL
        AND l.client_id IS NOT NULL AND l.campaign_link_id IS NOT NULL
      ORDER BY l.client_id, l.campaign_link_id LIMIT 1)
    UNION ALL
    SELECT n.client_id, n.campaign_link_id
      FROM p
     CROSS JOIN LATERAL (SELECT l.client_id, l.campaign_link_id
                           FROM leads AS l
                          WHERE l.is_active AND l.completed_at IS NULL
                            AND l.client_id IS NOT NULL AND l.campaign_link_id IS NOT NULL
                            AND (l.client_id, l.campaign_link_id) > (p.client_id, p.campaign_link_id)
                          ORDER BY l.client_id, l.campaign_link_id LIMIT 1) AS n
)
SELECT p.client_id, p.campaign_link_id
  FROM p
 WHERE NOT EXISTS (SELECT 1 FROM deenroll.due_campaigns AS m
                    WHERE m.client_id = p.client_id AND m.campaign_id = p.campaign_link_id);

CREATE INDEX CONCURRENTLY IF NOT EXISTS de_enrollment_campaigns_active_client_idx
    ON campaigns (client_id)
    WHERE is_active;
CREATE INDEX CONCURRENTLY IF NOT EXISTS de_enrollment_campaigns_invalid_idx
    ON campaigns (id)
    WHERE jsonb_typeof(messages) IS DISTINCT FROM 'array';

RESET statement_timeout;
RESET lock_timeout;
