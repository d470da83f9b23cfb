"""A deterministic synthetic multi-client data set, built set-based in the database.

Everything is derived from md5 hashes of (seed, tag, kind, number): ids are
md5(...)::uuid and every value is a slice of a hash, never random(), so the same
arguments always give the same rows. Each table is filled by one
INSERT ... SELECT over generate_series, so a million leads take seconds.

Rows are tagged: campaign names start with "[<tag>] " and lead e-mails end with
"@<tag>.example", so clear_dataset() removes exactly what a previous build made.

Leads per category (the fractions are of all leads):
  eligible (eligible_fraction), split into
    finished sequences, active, not completed   -> de-enrolled as completed
      (one in ten of them also opted out: finished wins, still completed)
    active opted-out leads, sequence not finished -> de-enrolled as opted_out
      (opted_out_share of the eligible ones)
  not eligible, the rest:
    70 % in progress (active, position < length)
    15 % completed earlier (inactive, completed_at set, position = length)
    10 % opted out earlier (inactive)
     5 % booked and stopped (inactive)
Campaign sequences have 3 to 8 messages. The last `invalid_campaigns` campaigns get a
`messages` that is a JSON object, not an array (bad input the runner must report).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

_HASH_INT = "('x' || lpad(substr({h}, {start}, 8), 16, '0'))::bit(64)::bigint"  # 0 .. 2^32-1


def _u(h: str, part: int) -> str:
    """SQL for the part-th (1..4) 32-bit slice of the hex hash h, as a bigint."""
    return _HASH_INT.format(h=h, start=1 + 8 * (part - 1))


@dataclass(frozen=True)
class DatasetInfo:
    """What build_dataset made, counted in the database after the insert."""

    tag: str
    seed: str
    client_ids: list[str]
    campaigns: int
    invalid_campaigns: int
    leads: int
    eligible_completed: int  # active, not completed, sequence finished (valid campaigns)
    eligible_opted_out: int  # active, opted out, sequence not finished (valid campaigns)

    @property
    def eligible(self) -> int:
        return self.eligible_completed + self.eligible_opted_out


def clear_dataset(conn: psycopg.Connection, tag: str = "demo") -> int:
    """Delete every row a previous build with this tag made (and the runs of its clients).

    Returns the number of campaigns removed. Runs in the caller's transaction.
    """
    prefix = f"[{tag}] %"
    clients = [r[0] for r in conn.execute(
        "SELECT DISTINCT client_id FROM campaigns WHERE name LIKE %s", (prefix,)).fetchall()]
    if not clients:
        return 0
    conn.execute("DELETE FROM de_enrollment_lead_log WHERE client_id = ANY (%s)", (clients,))
    conn.execute("DELETE FROM de_enrollment_runs WHERE client_id = ANY (%s)", (clients,))
    conn.execute(
        """DELETE FROM leads
            WHERE client_id = ANY (%s)
               OR campaign_link_id IN (SELECT id FROM campaigns WHERE name LIKE %s)""",
        (clients, prefix),
    )
    conn.execute(
        "DELETE FROM campaign_stats_delta WHERE campaign_id IN (SELECT id FROM campaigns WHERE name LIKE %s)",
        (prefix,),
    )
    return conn.execute("DELETE FROM campaigns WHERE name LIKE %s", (prefix,)).rowcount


def build_dataset(
    conn: psycopg.Connection,
    clients: int,
    campaigns: int,
    leads: int,
    eligible_fraction: float = 0.1,
    seed: str | int = "deenroll",
    *,
    opted_out_share: float = 0.25,
    invalid_campaigns: int = 0,
    tag: str = "demo",
) -> DatasetInfo:
    """(Re)build the tagged data set; runs in the caller's transaction (commit it yourself).

    clients >= 1, campaigns >= clients (campaign j belongs to client (j-1) % clients + 1),
    leads >= 0 (lead k is in campaign (k-1) % campaigns + 1). The counters are folded
    at the end (apply_campaign_stats_deltas), so they are exact when this returns.
    """
    if clients < 1 or campaigns < clients or leads < 0 or not 0 <= invalid_campaigns <= campaigns:
        raise ValueError("need clients >= 1, campaigns >= clients, leads >= 0, 0 <= invalid_campaigns <= campaigns")
    if not (0.0 <= eligible_fraction <= 1.0 and 0.0 <= opted_out_share <= 1.0):
        raise ValueError("eligible_fraction and opted_out_share are fractions in [0, 1]")
    seed = str(seed)
    clear_dataset(conn, tag)

    conn.execute(
        f"""
        INSERT INTO campaigns (id, client_id, name, messages, created_at)
        SELECT md5(%(seed)s || ':' || %(tag)s || ':campaign:' || j)::uuid,
               md5(%(seed)s || ':' || %(tag)s || ':client:' || ((j - 1) %% %(clients)s + 1))::uuid,
               format('[%%s] %%s %%s', %(tag)s,
                      (ARRAY['Welcome', 'Spring promo', 'Reactivation', 'Webinar', 'Follow-up', 'Referral'])
                          [1 + {_u('h', 2)} %% 6],
                      j),
               CASE WHEN j > %(campaigns)s - %(invalid)s
                    THEN jsonb_build_object('error', 'messages is not an array')
                    ELSE (SELECT jsonb_agg(jsonb_build_object('position', m, 'body', format('Message %%s of campaign %%s', m, j))
                                           ORDER BY m)
                            FROM generate_series(1, 3 + ({_u('h', 1)} %% 6)::int) AS m) END,
               now() - interval '60 days' - j * interval '1 hour'
          FROM generate_series(1, %(campaigns)s) AS j
         CROSS JOIN LATERAL (SELECT md5(%(seed)s || ':' || %(tag)s || ':campaign-values:' || j) AS h) AS x
        """,
        {"seed": seed, "tag": tag, "clients": clients, "campaigns": campaigns, "invalid": invalid_campaigns},
    )

    # Lead k: campaign (k-1) % campaigns + 1; u1 picks the category, u2 the sub-category
    # and the age, u3 the position, u4 flags and names. Fractions are of 2^32.
    conn.execute(
        f"""
        WITH c AS MATERIALIZED (
            SELECT j,
                   md5(%(seed)s || ':' || %(tag)s || ':campaign:' || j)::uuid AS id,
                   md5(%(seed)s || ':' || %(tag)s || ':client:' || ((j - 1) %% %(clients)s + 1))::uuid AS client_id,
                   3 + ({_u("md5(%(seed)s || ':' || %(tag)s || ':campaign-values:' || j)", 1)} %% 6)::int AS len
              FROM generate_series(1, %(campaigns)s) AS j
        ), l AS MATERIALIZED (  -- materialized: each hash slice computed once, not at every use
            SELECT k, c.id AS campaign_id, c.client_id, c.len, x.h,
                   {_u('x.h', 1)}::float8 / 4294967296 AS u1,
                   {_u('x.h', 2)}::float8 / 4294967296 AS u2,
                   {_u('x.h', 3)} AS u3,
                   {_u('x.h', 4)} AS u4,
                   now() - ({_u('x.h', 2)} %% 2592000) * interval '1 second' AS created
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
          FROM cat
        """,
        {"seed": seed, "tag": tag, "clients": clients, "campaigns": campaigns, "leads": leads,
         "elig": eligible_fraction, "opt_share": opted_out_share},
    )

    if conn.execute("SELECT to_regprocedure('apply_campaign_stats_deltas(uuid[])')").fetchone()[0]:
        conn.execute("SELECT apply_campaign_stats_deltas()")

    prefix = f"[{tag}] %"
    client_rows = conn.execute(
        "SELECT md5(%s || ':' || %s || ':client:' || i)::uuid::text FROM generate_series(1, %s) AS i ORDER BY i",
        (seed, tag, clients),
    ).fetchall()
    completed, opted_out = conn.execute(
        """SELECT count(*) FILTER (WHERE l.completed_at IS NULL AND l.current_message_position >= jsonb_array_length(c.messages)),
                  count(*) FILTER (WHERE l.opted_out
                                     AND NOT (l.completed_at IS NULL AND l.current_message_position >= jsonb_array_length(c.messages)))
             FROM campaigns AS c
             JOIN leads AS l ON l.campaign_link_id = c.id AND l.is_active
            WHERE c.name LIKE %s AND jsonb_typeof(c.messages) = 'array'""",
        (prefix,),
    ).fetchone()
    return DatasetInfo(
        tag=tag,
        seed=seed,
        client_ids=[r[0] for r in client_rows],
        campaigns=campaigns,
        invalid_campaigns=invalid_campaigns,
        leads=leads,
        eligible_completed=completed,
        eligible_opted_out=opted_out,
    )
