-- The statements that build and clear the synthetic data set of `deenroll demo` and the
-- tests (deenroll/dataset.py), by name. Parameters are %(name)s, so a literal percent sign
-- is written %%. Every value is a slice of an md5 hash, never random(): the 32-bit slice n
-- (1 to 4) of a hash h is ('x' || lpad(substr(h, 8 * (n - 1) + 1, 8), 16, '0'))::bit(64)::bigint.

-- name: dataset_clients
-- The clients of the campaigns a build with this tag made (names starting with the prefix).
SELECT DISTINCT client_id FROM campaigns WHERE name LIKE %(prefix)s;

-- name: dataset_clear_lead_log
-- Forget what runs did for these clients.
DELETE FROM de_enrollment_lead_log WHERE client_id = ANY (%(clients)s);

-- name: dataset_clear_runs
-- Forget these clients' runs.
DELETE FROM de_enrollment_runs WHERE client_id = ANY (%(clients)s);

-- name: dataset_clear_leads
-- Delete these clients' leads and the leads of the tagged campaigns.
DELETE FROM leads
 WHERE client_id = ANY (%(clients)s)
    OR campaign_link_id IN (SELECT id FROM campaigns WHERE name LIKE %(prefix)s);

-- name: dataset_clear_deltas
-- Delete the counter deltas of the tagged campaigns.
DELETE FROM campaign_stats_delta WHERE campaign_id IN (SELECT id FROM campaigns WHERE name LIKE %(prefix)s);

-- name: dataset_clear_campaigns
-- Delete the tagged campaigns.
DELETE FROM campaigns WHERE name LIKE %(prefix)s;

-- name: dataset_campaigns
-- Campaign j (1 to campaigns) belongs to client (j - 1) %% clients + 1 and has 3 to 8
-- messages; the last `invalid` campaigns get a messages that is not an array.
INSERT INTO campaigns (id, client_id, name, messages, created_at)
SELECT md5(%(seed)s || ':' || %(tag)s || ':campaign:' || j)::uuid,
       md5(%(seed)s || ':' || %(tag)s || ':client:' || ((j - 1) %% %(clients)s + 1))::uuid,
       format('[%%s] %%s %%s', %(tag)s,
              (ARRAY['Welcome', 'Spring promo', 'Reactivation', 'Webinar', 'Follow-up', 'Referral'])
                  [1 + ('x' || lpad(substr(h, 9, 8), 16, '0'))::bit(64)::bigint %% 6],
              j),
       CASE WHEN j > %(campaigns)s - %(invalid)s
            THEN jsonb_build_object('error', 'messages is not an array')
            ELSE (SELECT jsonb_agg(jsonb_build_object('position', m, 'body', format('Message %%s of campaign %%s', m, j))
                                   ORDER BY m)
                    FROM generate_series(1, 3 + (('x' || lpad(substr(h, 1, 8), 16, '0'))::bit(64)::bigint %% 6)::int) AS m) END,
       now() - interval '60 days' - j * interval '1 hour'
  FROM generate_series(1, %(campaigns)s) AS j
 CROSS JOIN LATERAL (SELECT md5(%(seed)s || ':' || %(tag)s || ':campaign-values:' || j) AS h) AS x;

-- name: dataset_leads
-- Lead k (1 to leads) is in campaign (k - 1) %% campaigns + 1; slice 1 of its hash picks the
-- category, slice 2 the sub-category and the age, slice 3 the position, slice 4 flags and
-- names. Fractions are of 2^32.
WITH c AS MATERIALIZED (
    SELECT j,
           md5(%(seed)s || ':' || %(tag)s || ':campaign:' || j)::uuid AS id,
           md5(%(seed)s || ':' || %(tag)s || ':client:' || ((j - 1) %% %(clients)s + 1))::uuid AS client_id,
           3 + (('x' || lpad(substr(md5(%(seed)s || ':' || %(tag)s || ':campaign-values:' || j), 1, 8), 16, '0'))::bit(64)::bigint %% 6)::int AS len
      FROM generate_series(1, %(campaigns)s) AS j
), l AS MATERIALIZED (  -- materialized: each hash slice computed once, not at every use
    SELECT k, c.id AS campaign_id, c.client_id, c.len, x.h,
           ('x' || lpad(substr(x.h, 1, 8), 16, '0'))::bit(64)::bigint::float8 / 4294967296 AS u1,
           ('x' || lpad(substr(x.h, 9, 8), 16, '0'))::bit(64)::bigint::float8 / 4294967296 AS u2,
           ('x' || lpad(substr(x.h, 17, 8), 16, '0'))::bit(64)::bigint AS u3,
           ('x' || lpad(substr(x.h, 25, 8), 16, '0'))::bit(64)::bigint AS u4,
           now() - (('x' || lpad(substr(x.h, 9, 8), 16, '0'))::bit(64)::bigint %% 2592000) * interval '1 second' AS created
      FROM generate_series(1, %(leads)s) AS k
      JOIN c ON c.j = (k - 1) %% %(campaigns)s + 1
     CROSS JOIN LATERAL (SELECT md5(%(seed)s || ':' || %(tag)s || ':lead:' || k) AS h) AS x
), cat AS (
    SELECT l.*,
           CASE WHEN u1 < %(elig)s * (1 - %(opt_share)s) THEN 'finished'
                WHEN u1 < %(elig)s THEN 'opted_out_active'
                WHEN u2 < 0.70 THEN 'in_progress'
                WHEN u2 < 0.85 THEN 'completed_before'
                WHEN u2 < 0.95 THEN 'opted_out_before'
                ELSE 'booked_stopped' END AS category
      FROM l
)
INSERT INTO leads (id, client_id, campaign_link_id, first_name, last_name, phone, email,
                   current_message_position, is_active, opted_out, booked,
                   completed_at, created_at, updated_at)
SELECT h::uuid,
       client_id,
       campaign_id,
       (ARRAY['Ana', 'Ben', 'Chloe', 'Dev', 'Eva', 'Farid', 'Gina', 'Hugo', 'Ines', 'Jon', 'Kira', 'Liam'])[1 + u4 %% 12],
       (ARRAY['Silva', 'Moreau', 'Okafor', 'Tanaka', 'Novak', 'Reyes', 'Berg', 'Khan'])[1 + (u4 / 12) %% 8],
       '+1555' || lpad((k %% 10000000)::text, 7, '0'),
       'lead' || k || '@' || %(tag)s || '.example',
       CASE category
            WHEN 'finished' THEN len + (u3 %% 2)::int
            WHEN 'completed_before' THEN len
            ELSE (u3 %% len)::int END,
       category IN ('finished', 'opted_out_active', 'in_progress'),
       category IN ('opted_out_active', 'opted_out_before') OR (category = 'finished' AND u4 %% 10 = 0),
       category = 'booked_stopped' OR (category IN ('finished', 'in_progress') AND u4 %% 7 = 0),
       CASE WHEN category = 'completed_before' THEN created + interval '3 days' END,
       created,
       created + interval '1 hour'
  FROM cat;

-- name: dataset_fold_deltas
-- Fold every pending counter delta, so the counters are exact.
SELECT apply_campaign_stats_deltas();

-- name: dataset_client_ids
-- The ids of clients 1 to `clients`, in order.
SELECT md5(%(seed)s || ':' || %(tag)s || ':client:' || i)::uuid::text FROM generate_series(1, %(clients)s) AS i ORDER BY i;

-- name: dataset_due
-- The tagged leads a run should de-enroll (valid campaigns only): finished sequences, and
-- active opted-out leads whose sequence is not finished.
SELECT count(*) FILTER (WHERE l.completed_at IS NULL AND l.current_message_position >= jsonb_array_length(c.messages)),
       count(*) FILTER (WHERE l.opted_out
                          AND NOT (l.completed_at IS NULL AND l.current_message_position >= jsonb_array_length(c.messages)))
  FROM campaigns AS c
  JOIN leads AS l ON l.campaign_link_id = c.id AND l.is_active
 WHERE c.name LIKE %(prefix)s AND jsonb_typeof(c.messages) = 'array';
