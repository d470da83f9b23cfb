-- process_de_enrollment_batch: de-enroll the given leads for a run, holding the ones the database refuses; returns what it did
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_due_outcome, de_enrollment_lead_fingerprint, de_enrollment_sequence_length
--
-- For each lead of p_lead_ids whose own client_id is the run's client and that is (still)
-- due by de_enrollment_due_outcome() in the campaign it is linked to (any client's), in
-- the caller's transaction:
--   leads:                  is_active = false; completed_at = now() for outcome 'completed'
--                           (unchanged for 'opted_out'); updated_at = now(); deenroll's
--                           history entry for the campaign appended:
--                           {campaign_id, campaign_name, outcome, completed_at,
--                            de_enrolled_at, messages_received, total_messages, run_id}
--                           Entries the platform wrote are kept as they are, whatever
--                           they hold. A lead the platform re-activated in a campaign it
--                           was de-enrolled from has its earlier entry of ours for that
--                           campaign replaced, so there is always at most one.
--   de_enrollment_lead_log: one row per lead and campaign (action 'de_enrolled'); for a
--                           re-activated lead the existing row is updated instead
--                           (action 're_de_enrolled', this run, this outcome), so the
--                           log never holds two rows for one lead and campaign.
--   campaigns:              nothing here: the leads triggers of 0020 record the counter
--                           change in campaign_stats_delta, and the runner folds a
--                           client's deltas once, when the client's run ends
--                           (apply_client_stats_deltas), not in every batch: a fold locks
--                           campaign rows the platform also writes, and per batch it was
--                           a tenth of the batch's cost. Until then the counters lag and
--                           campaign_stats_drift shows the lag as pending deltas.
--   de_enrollment_runs:     leads_evaluated (+ number of ids given), leads_de_enrolled,
--                           leads_completed, leads_opted_out, leads_held, batches (+1);
--                           written by the statement that de-enrolls, in its
--                           subtransaction: the lead log's foreign-key checks lock the
--                           run's row there too, and a lock of a subtransaction followed by
--                           an update of its parent would leave a multixact on the row,
--                           which every later check of every batch then has to resolve
-- Eligibility is checked again under the row lock: a lead already de-enrolled, or changed
-- since it was claimed so that it is no longer due, is skipped, never processed twice.
--
-- Per-lead fault isolation, set-based: the leads are de-enrolled by one statement. When the
-- database refuses it (a constraint or trigger of the platform rejects one lead's row),
-- the set is split in halves, depth first, down to single leads; a single lead that is
-- refused is held in deenroll.held_leads with a reason derived from the SQLSTATE
-- (check_violation, not_null_violation, foreign_key_violation, unique_violation,
-- integrity_violation, invalid_data, permission_denied, refused_by_trigger, error) and the
-- error message, and the rest commits. Each attempt is one subtransaction; at most 32 per
-- call (PostgreSQL keeps 64 subtransactions per transaction in shared memory; beyond that
-- every session slows down). Leads not reached within that budget are returned as
-- 'deferred', untouched: the next batch (a new transaction) claims them again. Depth first,
-- every call settles at least one lead. Transient errors (lock timeouts, deadlocks,
-- cancellation, lost connections, lack of resources) are not the lead's fault: they are
-- raised, and the caller's transaction is rolled back whole as before.
--
-- Returns one row per lead de-enrolled (outcome completed or opted_out), held (outcome
-- 'held', held_reason set) or deferred (outcome 'deferred'); leads skipped as not due are
-- not returned.
--
-- Its statements run on generic plans (plan_cache_mode): planned once per session instead
-- of once per batch (a tenth of a small batch's cost); each is an index lookup by lead id.
--
-- The runner claims and processes in one round trip, the claim locks held to commit:
--   SELECT * FROM process_de_enrollment_batch(run_id,
--          ARRAY(SELECT lead_id FROM get_leads_for_de_enrollment(client_id, batch_size)));
CREATE FUNCTION public.process_de_enrollment_batch(p_run_id uuid, p_lead_ids uuid[])
RETURNS TABLE (
    lead_id           uuid,
    campaign_id       uuid,
    outcome           text,
    messages_received integer,
    held_reason       text
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
    c_max_attempts CONSTANT integer := 32;
    v_client    uuid;
    v_status    text;
    v_ids       uuid[];
    v_lo        integer[];   -- stack of [lo, hi] ranges of v_ids still to try
    v_hi        integer[];
    v_top       integer;
    v_from      integer;
    v_to        integer;
    v_mid       integer;
    v_attempts  integer := 0;
    v_counted   boolean := false;  -- the run's batch and evaluated leads are counted
    v_part      uuid[];
    v_state     text;
    v_message   text;
    -- what was done
    v_leads     uuid[] := '{}';
    v_campaigns uuid[] := '{}';
    v_outcomes  text[] := '{}';
    v_received  integer[] := '{}';
    v_d_leads   uuid[];
    v_d_camps   uuid[];
    v_d_outs    text[];
    v_d_recv    integer[];
    -- what was refused
    v_held      uuid[] := '{}';
    v_h_states  text[] := '{}';
    v_h_msgs    text[] := '{}';
    v_deferred  uuid[] := '{}';
BEGIN
    SELECT r.client_id, r.status INTO v_client, v_status
      FROM public.de_enrollment_runs AS r
     WHERE r.id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'de-enrollment run % does not exist', p_run_id
              USING ERRCODE = 'no_data_found';
    ELSIF v_status <> 'running' THEN
        RAISE EXCEPTION 'de-enrollment run % is %, not running', p_run_id, v_status
              USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;

    v_ids := ARRAY(SELECT DISTINCT x FROM unnest(p_lead_ids) AS x WHERE x IS NOT NULL ORDER BY x);
    IF cardinality(v_ids) = 0 THEN
        RETURN;
    END IF;

    v_lo := ARRAY[1];
    v_hi := ARRAY[cardinality(v_ids)];
    WHILE cardinality(v_lo) > 0 LOOP
        v_top  := cardinality(v_lo);
        v_from := v_lo[v_top];
        v_to   := v_hi[v_top];
        IF v_attempts >= c_max_attempts THEN
            v_deferred := v_deferred || v_ids[v_from:v_to];
            v_lo := v_lo[1:v_top - 1];
            v_hi := v_hi[1:v_top - 1];
            CONTINUE;
        END IF;
        v_lo := v_lo[1:v_top - 1];
        v_hi := v_hi[1:v_top - 1];
        v_part := v_ids[v_from:v_to];
        v_attempts := v_attempts + 1;
        BEGIN
            WITH due AS (
                SELECT l.id, c.id AS campaign_id, c.name,
                       public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                                        l.current_message_position, c.id, c.messages) AS outcome,
                       l.current_message_position AS received,
                       deenroll.de_enrollment_sequence_length(c.messages) AS total
                  FROM public.leads AS l
                  JOIN public.campaigns AS c ON c.id = l.campaign_link_id
                 WHERE l.id = ANY (v_part)
                   AND l.client_id = v_client
                   AND public.de_enrollment_due_outcome(l.is_active, l.completed_at, l.opted_out,
                                                        l.current_message_position, c.id, c.messages) IS NOT NULL
                 ORDER BY l.id
                   FOR UPDATE OF l
            ), done AS (
                UPDATE public.leads AS l
                   SET is_active        = false,
                       completed_at     = CASE WHEN d.outcome = 'completed' THEN now() ELSE l.completed_at END,
                       updated_at       = now(),
                       campaign_history =
                           CASE
                               WHEN l.campaign_history IS NULL THEN '[]'::jsonb
                               WHEN jsonb_typeof(l.campaign_history) <> 'array' THEN jsonb_build_array(l.campaign_history)
                               WHEN l.campaign_history @> jsonb_build_array(jsonb_build_object('campaign_id', d.campaign_id))
                                   -- an earlier entry of ours for this campaign (a re-activated lead): replaced
                                   THEN (SELECT coalesce(jsonb_agg(e.value ORDER BY e.ordinality), '[]'::jsonb)
                                           FROM jsonb_array_elements(l.campaign_history) WITH ORDINALITY AS e
                                          WHERE NOT coalesce(jsonb_typeof(e.value) = 'object'
                                                             AND (e.value -> 'run_id') IS NOT NULL
                                                             AND e.value ->> 'campaign_id' = d.campaign_id::text, false))
                               ELSE l.campaign_history
                           END
                           || jsonb_build_array(jsonb_build_object(
                               'campaign_id',       d.campaign_id,
                               'campaign_name',     d.name,
                               'outcome',           d.outcome,
                               'completed_at',      CASE WHEN d.outcome = 'completed' THEN now() ELSE l.completed_at END,
                               'de_enrolled_at',    now(),
                               'messages_received', d.received,
                               'total_messages',    d.total,
                               'run_id',            p_run_id))
                  FROM due AS d
                 WHERE l.id = d.id
                RETURNING l.id, d.campaign_id, d.outcome, d.received, d.total
            ), logged AS (
                INSERT INTO public.de_enrollment_lead_log AS g
                       (run_id, lead_id, client_id, campaign_id, action, outcome, messages_received, total_messages)
                SELECT p_run_id, x.id, v_client, x.campaign_id, 'de_enrolled', x.outcome, x.received, x.total
                  FROM done AS x
                ON CONFLICT (lead_id, campaign_id) WHERE outcome IN ('completed', 'opted_out')
                DO UPDATE SET run_id            = excluded.run_id,
                              client_id         = excluded.client_id,
                              action            = 're_de_enrolled',
                              outcome           = excluded.outcome,
                              messages_received = excluded.messages_received,
                              total_messages    = excluded.total_messages,
                              error_message     = NULL,
                              processed_at      = excluded.processed_at
            ), counted AS (
                -- the run's totals (see the header: in this subtransaction, no multixact)
                UPDATE public.de_enrollment_runs AS r
                   SET leads_evaluated   = r.leads_evaluated + CASE WHEN v_counted THEN 0 ELSE cardinality(p_lead_ids) END,
                       leads_de_enrolled = r.leads_de_enrolled + t.n,
                       leads_completed   = r.leads_completed + t.completed,
                       leads_opted_out   = r.leads_opted_out + t.opted_out,
                       batches           = r.batches + CASE WHEN v_counted THEN 0 ELSE 1 END
                  FROM (SELECT count(*)::integer AS n,
                               (count(*) FILTER (WHERE x.outcome = 'completed'))::integer AS completed,
                               (count(*) FILTER (WHERE x.outcome = 'opted_out'))::integer AS opted_out
                          FROM done AS x) AS t
                 WHERE r.id = p_run_id
            )
            SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.campaign_id), '{}'),
                   coalesce(array_agg(x.outcome), '{}'), coalesce(array_agg(x.received), '{}')
              INTO v_d_leads, v_d_camps, v_d_outs, v_d_recv
              FROM done AS x;
            v_leads     := v_leads || v_d_leads;
            v_campaigns := v_campaigns || v_d_camps;
            v_outcomes  := v_outcomes || v_d_outs;
            v_received  := v_received || v_d_recv;
            v_counted   := true;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
            -- Not the lead's fault: give up the whole batch (the caller retries or fails).
            IF left(v_state, 2) IN ('08', '25', '40', '53', '55', '57', '58', 'F0', 'XX') THEN
                RAISE;
            END IF;
            IF v_from = v_to THEN
                v_held     := v_held || v_ids[v_from];
                v_h_states := v_h_states || v_state;
                v_h_msgs   := v_h_msgs || v_message;
            ELSE
                -- second half below the first: the first half is tried next (depth first)
                v_mid := (v_from + v_to) / 2;
                v_lo := v_lo || ARRAY[v_mid + 1, v_from];
                v_hi := v_hi || ARRAY[v_to, v_mid];
            END IF;
        END;
    END LOOP;

    IF cardinality(v_held) > 0 THEN
        INSERT INTO deenroll.held_leads AS h
               (lead_id, client_id, campaign_id, reason, sqlstate, error_message, fingerprint, run_id)
        SELECT x.id, v_client, c.id,
               CASE WHEN x.state = '23514' THEN 'check_violation'
                    WHEN x.state = '23502' THEN 'not_null_violation'
                    WHEN x.state = '23503' THEN 'foreign_key_violation'
                    WHEN x.state = '23505' THEN 'unique_violation'
                    WHEN left(x.state, 2) = '23' THEN 'integrity_violation'
                    WHEN left(x.state, 2) = '22' THEN 'invalid_data'
                    WHEN x.state = '42501' THEN 'permission_denied'
                    WHEN left(x.state, 2) IN ('P0', '09', '27', '38', '39') THEN 'refused_by_trigger'
                    ELSE 'error' END,
               x.state, x.message,
               public.de_enrollment_lead_fingerprint(l.xmin, c.id, c.messages),
               p_run_id
          FROM unnest(v_held, v_h_states, v_h_msgs) AS x (id, state, message)
          JOIN public.leads AS l ON l.id = x.id
          LEFT JOIN public.campaigns AS c ON c.id = l.campaign_link_id
        ON CONFLICT ON CONSTRAINT held_leads_pkey DO UPDATE
           SET client_id     = excluded.client_id,
               campaign_id   = excluded.campaign_id,
               reason        = excluded.reason,
               sqlstate      = excluded.sqlstate,
               error_message = excluded.error_message,
               fingerprint   = excluded.fingerprint,
               run_id        = excluded.run_id,
               attempts      = h.attempts + 1,
               last_held_at  = excluded.last_held_at;
    END IF;
    IF cardinality(v_leads) > 0 THEN
        DELETE FROM deenroll.held_leads AS h WHERE h.lead_id = ANY (v_leads);
    END IF;

    -- what no successful attempt counted: held leads, or a batch where every attempt failed
    IF cardinality(v_held) > 0 OR NOT v_counted THEN
        UPDATE public.de_enrollment_runs AS r
           SET leads_evaluated = r.leads_evaluated + CASE WHEN v_counted THEN 0 ELSE cardinality(p_lead_ids) END,
               leads_held      = r.leads_held + cardinality(v_held),
               batches         = r.batches + CASE WHEN v_counted THEN 0 ELSE 1 END
         WHERE r.id = p_run_id;
    END IF;

    RETURN QUERY
        SELECT x.id, x.campaign_id, x.outcome, x.received, NULL::text
          FROM unnest(v_leads, v_campaigns, v_outcomes, v_received) AS x (id, campaign_id, outcome, received);
    IF cardinality(v_held) = 0 AND cardinality(v_deferred) = 0 THEN
        RETURN;  -- the usual batch: nothing refused
    END IF;
    RETURN QUERY
        SELECT h.lead_id, h.campaign_id, 'held'::text, l.current_message_position, h.reason
          FROM deenroll.held_leads AS h
          JOIN public.leads AS l ON l.id = h.lead_id
         WHERE h.lead_id = ANY (v_held)
        UNION ALL
        SELECT l.id, l.campaign_link_id, 'deferred'::text, l.current_message_position, NULL::text
          FROM public.leads AS l
         WHERE l.id = ANY (v_deferred);
END
$fn$;

COMMENT ON FUNCTION public.process_de_enrollment_batch(uuid, uuid[]) IS
    'De-enrolls the given leads for a run in one transaction (lead, history entry, lead log, counter deltas, run totals), re-checking eligibility under the row lock; holds leads the database refuses (deenroll.held_leads); returns what it did.';
