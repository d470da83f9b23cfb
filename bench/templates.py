"""The benchmark's data set as a template database: migrated, filled with
deenroll.dataset.build_dataset (deterministic by its seed), VACUUM ANALYZEd; every measurement
runs on a fresh clone of it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from bench.common import new_db
from bench.servers import Server
from deenroll.database import Target
from deenroll.dataset import build_dataset
from deenroll.migrate.commands import migrate


@dataclass
class DataSet:
    template: str
    leads: int
    clients: int
    campaigns: int
    eligible: int
    eligible_completed: int
    eligible_opted_out: int
    build_s: float
    vacuum_s: float
    size_mb: float


def build_template(server: Server, label: str, leads: int, clients: int, campaigns: int,
                   eligible_fraction: float, seed: str) -> DataSet:
    name = new_db(server, label)
    dsn = server.dsn(name)
    migrate(Target(dsn, "benchmark"))
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn:
        info = build_dataset(conn, clients=clients, campaigns=campaigns, leads=leads,
                             eligible_fraction=eligible_fraction, seed=seed, tag="bench")
        conn.commit()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    vacuum_s = time.perf_counter() - t0
    return DataSet(name, leads, clients, campaigns, info.eligible, info.eligible_completed,
                   info.eligible_opted_out, round(build_s, 2), round(vacuum_s, 2), round(size / 2**20, 1))
