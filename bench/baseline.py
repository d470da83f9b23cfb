"""The data set of the migrate-wait measurements: a database at the baseline (the platform's
campaigns and leads only), filled set-based with deterministic ids."""

from __future__ import annotations

import hashlib
import time
import uuid

import psycopg

from deenroll.database import Target
from deenroll.migrate import commands, files


def lead_id(i: int) -> str:
    """The id the data set gives lead number i (the same md5 the SQL uses)."""
    return str(uuid.UUID(hashlib.md5(f"lead {i}".encode()).hexdigest()))


def build(dsn: str, leads: int, clients: int, campaigns: int) -> float:
    """The baseline and the platform's rows, set-based; returns seconds."""
    started = time.perf_counter()
    commands.migrate(Target(dsn, "bench"), to=files.BASELINE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO campaigns (id, client_id, name, messages)
               SELECT md5('campaign ' || i)::uuid, md5('client ' || (i %% %(clients)s))::uuid,
                      'campaign ' || i, (SELECT jsonb_agg(j) FROM generate_series(1, 3 + i %% 6) AS j)
                 FROM generate_series(1, %(campaigns)s) AS i""",
            {"clients": clients, "campaigns": campaigns},
        )
        conn.execute(
            """INSERT INTO leads (id, client_id, campaign_link_id, first_name, current_message_position,
                                  is_active, opted_out, booked)
               SELECT md5('lead ' || i)::uuid, md5('client ' || (c %% %(clients)s))::uuid,
                      md5('campaign ' || c)::uuid, 'lead ' || i, i %% 9, i %% 7 <> 0, i %% 13 = 0, i %% 17 = 0
                 FROM generate_series(1, %(leads)s) AS i
                 CROSS JOIN LATERAL (SELECT 1 + i %% %(campaigns)s AS c) AS k""",
            {"clients": clients, "campaigns": campaigns, "leads": leads},
        )
        conn.execute("VACUUM ANALYZE campaigns")
        conn.execute("VACUUM ANALYZE leads")
    return time.perf_counter() - started
