-- transactional: false
-- 0026: what takes time on a big leads table, done while the platform keeps writing:
--   * the campaign counters of 0020 counted from the leads, 100 campaigns per transaction;
--   * the partial indexes on leads that runs read, built with CREATE INDEX CONCURRENTLY
--     (a SHARE UPDATE EXCLUSIVE lock: reads and writes of leads go on during the build).
-- No transaction wraps this file (CREATE INDEX CONCURRENTLY cannot run inside one): by hand,
-- run it with `psql -v ON_ERROR_STOP=1 -f`, without -1. Every statement can be run again:
--   * an index that is there is left alone (IF NOT EXISTS), so an install whose indexes an
--     earlier version of 0019 and 0024 built finds nothing to build;
--   * a build that failed half-way (cancelled, timed out, server restarted) leaves an INVALID
--     index under its name: `deenroll migrate` drops it (DROP INDEX CONCURRENTLY) and builds it
--     again; by hand, the check below stops and names it;
--   * the counters are recounted exactly, whatever they held.
-- The index builds wait for transactions already running on leads but block nobody, so no
-- lock_timeout or statement_timeout cuts them short (that would leave an INVALID index).
SET lock_timeout = 0;
SET statement_timeout = 0;

DO $invalid$
DECLARE
    v_invalid text;
BEGIN
    -- Outside a transaction block every statement starts its own transaction: now() is its start.
    IF now() <> statement_timestamp() THEN
        RAISE EXCEPTION 'this file must run outside a transaction block (it builds indexes CONCURRENTLY and commits in batches)'
              USING HINT = 'run it with psql -v ON_ERROR_STOP=1 -f, without -1 and without BEGIN';
    END IF;
    SELECT pg_catalog.string_agg(i.indexrelid::regclass::text, ', ')
      INTO v_invalid
      FROM pg_catalog.pg_index AS i
     WHERE i.indexrelid IN (to_regclass('de_enrollment_leads_candidates_idx'),
                            to_regclass('de_enrollment_leads_opted_out_idx'),
                            to_regclass('de_enrollment_leads_client_candidates_idx'),
                            to_regclass('de_enrollment_leads_client_opted_out_idx'))
       AND NOT i.indisvalid;
    IF v_invalid IS NOT NULL THEN
        RAISE EXCEPTION 'an earlier build of these indexes failed and left them INVALID: %', v_invalid
              USING HINT = 'run DROP INDEX CONCURRENTLY for each, then this file again';
    END IF;
END
$invalid$;

-- The counters, campaign by campaign in id order, 100 campaigns per transaction. Each batch
-- locks its campaigns FOR NO KEY UPDATE in id order, as every folder of deltas does (so they
-- never deadlock; the platform's foreign-key checks on leads take FOR KEY SHARE and are not
-- held up), then ONE statement deletes their pending deltas and writes their counters from a
-- count of their leads. One statement has one snapshot: a lead change committed before it is
-- counted and its delta deleted; one committed after it is neither, its delta stays and is
-- folded later. Nothing locks leads beyond what reading them takes.
DO $count$
DECLARE
    v_ids  uuid[];
    v_last uuid;
BEGIN
    LOOP
        PERFORM pg_catalog.set_config('lock_timeout', '2s', true);
        SELECT pg_catalog.array_agg(x.id ORDER BY x.id)
          INTO v_ids
          FROM (SELECT c.id
                  FROM campaigns AS c
                 WHERE v_last IS NULL OR c.id > v_last
                 ORDER BY c.id
                 LIMIT 100
                   FOR NO KEY UPDATE OF c) AS x;
        EXIT WHEN v_ids IS NULL;

        WITH dropped AS (
            DELETE FROM campaign_stats_delta AS d
             WHERE d.campaign_id = ANY (v_ids)
        ), counted AS (
            SELECT l.campaign_link_id AS campaign_id,
                   count(*) FILTER (WHERE l.is_active AND NOT coalesce(l.opted_out, false))::integer AS active,
                   count(*) FILTER (WHERE l.completed_at IS NOT NULL)::integer AS completed,
                   count(*) FILTER (WHERE l.opted_out)::integer AS opted_out,
                   count(*) FILTER (WHERE l.booked)::integer AS booked,
                   max(l.created_at) AS last_created
              FROM leads AS l
             WHERE l.campaign_link_id = ANY (v_ids)
             GROUP BY l.campaign_link_id
        )
        UPDATE campaigns AS c
           SET active_leads_count    = coalesce(n.active, 0),
               completed_leads_count = coalesce(n.completed, 0),
               opted_out_count       = coalesce(n.opted_out, 0),
               booked_count          = coalesce(n.booked, 0),
               last_enrollment_at    = greatest(c.last_enrollment_at, n.last_created)
          FROM pg_catalog.unnest(v_ids) AS b (id)
          LEFT JOIN counted AS n ON n.campaign_id = b.id
         WHERE c.id = b.id;

        v_last := v_ids[pg_catalog.cardinality(v_ids)];
        COMMIT;
    END LOOP;
END
$count$;

-- Candidates for de-enrollment, per campaign, in message-position order: a run reads only
-- the range position >= length of the sequence, so its cost follows the due leads.
CREATE INDEX CONCURRENTLY IF NOT EXISTS de_enrollment_leads_candidates_idx
    ON leads (campaign_link_id, current_message_position)
    WHERE is_active AND completed_at IS NULL;

-- Active leads that opted out: empty after every run.
CREATE INDEX CONCURRENTLY IF NOT EXISTS de_enrollment_leads_opted_out_idx
    ON leads (campaign_link_id)
    WHERE is_active AND opted_out;

-- The same keyed by the lead's own client, so that a run finds a client's due leads wherever
-- they are linked (a campaign of another client, or of none).
CREATE INDEX CONCURRENTLY IF NOT EXISTS de_enrollment_leads_client_candidates_idx
    ON leads (client_id, campaign_link_id, current_message_position)
    WHERE is_active AND completed_at IS NULL;
CREATE INDEX CONCURRENTLY IF NOT EXISTS de_enrollment_leads_client_opted_out_idx
    ON leads (client_id)
    WHERE is_active AND opted_out;

RESET statement_timeout;
RESET lock_timeout;
