"""A deterministic synthetic multi-client data set, built set-based in the database.

Everything is derived from md5 hashes of (seed, tag, kind, number): ids are
md5(...)::uuid and every value is a slice of a hash, never random(), so the same
arguments always give the same rows. Each table is filled by one
INSERT ... SELECT over generate_series (queries_dataset.sql), so a million leads
take seconds.

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

from . import queries


def _prefix(tag: str) -> str:
    """The LIKE pattern of the tagged campaigns' names."""
    return f"[{tag}] %"


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
    prefix = _prefix(tag)
    clients = [r[0] for r in queries.run(conn, "dataset_clients", prefix=prefix).fetchall()]
    if not clients:
        return 0
    queries.run(conn, "dataset_clear_lead_log", clients=clients)
    queries.run(conn, "dataset_clear_runs", clients=clients)
    queries.run(conn, "dataset_clear_leads", clients=clients, prefix=prefix)
    queries.run(conn, "dataset_clear_deltas", prefix=prefix)
    return queries.run(conn, "dataset_clear_campaigns", prefix=prefix).rowcount


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

    prefix = _prefix(tag)
    queries.run(
        conn, "dataset_campaigns", seed=seed, tag=tag, clients=clients, campaigns=campaigns, invalid=invalid_campaigns
    )
    queries.run(
        conn, "dataset_leads", seed=seed, tag=tag, clients=clients, campaigns=campaigns, leads=leads,
        elig=eligible_fraction, opt_share=opted_out_share,
    )
    if queries.value(conn, "function_exists", signature="apply_campaign_stats_deltas(uuid[])"):
        queries.run(conn, "dataset_fold_deltas")
    client_rows = queries.run(conn, "dataset_client_ids", seed=seed, tag=tag, clients=clients).fetchall()
    completed, opted_out = queries.one(conn, "dataset_due", prefix=prefix)
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
