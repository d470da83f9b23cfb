"""The cost of deenroll's triggers on leads: single-row UPDATEs with and without them, in a
server-side loop and as autocommit transactions from a client."""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg

from bench.common import new_db
from bench.servers import Server
from bench.templates import DataSet

TRIGGER_CASES = {
    "position update (no counted column)": "UPDATE leads SET current_message_position = current_message_position + 1 WHERE id = v",
    "last message sent (campaign marked)": "UPDATE leads SET current_message_position = current_message_position + 100 WHERE id = v",
    "opted_out flip (counted column)": "UPDATE leads SET opted_out = NOT opted_out WHERE id = v",
}
CLIENT_CASES = {
    "position update (no counted column)": "UPDATE leads SET current_message_position = current_message_position + 1 WHERE id = %s",
    "last message sent (campaign marked)": "UPDATE leads SET current_message_position = current_message_position + 100 WHERE id = %s",
    "opted_out flip (counted column)": "UPDATE leads SET opted_out = NOT opted_out WHERE id = %s",
}


def _overhead(with_us: list[float], without_us: list[float]) -> dict[str, Any]:
    w, wo = statistics.median(with_us), statistics.median(without_us)
    return {"with_triggers_us": round(w, 1), "without_triggers_us": round(wo, 1), "overhead_us": round(w - wo, 1),
            "overhead_pct": round((w - wo) / wo * 100, 1) if wo else None,
            "rounds_with_us": [round(x, 1) for x in with_us], "rounds_without_us": [round(x, 1) for x in without_us]}


def trigger_overhead(server: Server, data: DataSet, statements: int, client_statements: int,
                     rounds: int = 5, client_rounds: int = 3) -> dict[str, Any]:
    """Per-statement cost of single-row lead UPDATEs with and without 0020's counter triggers.

    Rounds alternate with/without, medians are shown. Server loop: a DO block runs the
    statements one by one (each fires the statement-level trigger), in a transaction that
    is rolled back, so every round starts from the same data. Client: one autocommit
    transaction per statement over the socket, as an application sends them.
    """
    name = new_db(server, "triggers", data.template)
    dsn = server.dsn(name)
    out: dict[str, Any] = {"statements": statements, "rounds": rounds, "client_statements": client_statements,
                           "client_rounds": client_rounds, "cases": {}}
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE bench_ids AS SELECT id FROM leads WHERE is_active AND NOT opted_out ORDER BY md5(id::text) LIMIT %s",
            (max(statements, client_statements),))
        conn.commit()
        for case, stmt in TRIGGER_CASES.items():
            per: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(rounds):
                for with_triggers in (True, False):
                    if not with_triggers:
                        conn.execute("ALTER TABLE leads DISABLE TRIGGER USER")
                    t0 = time.perf_counter()
                    conn.execute(
                        f"""DO $$
                            DECLARE v uuid;
                            BEGIN
                                FOREACH v IN ARRAY (SELECT array_agg(id) FROM (SELECT id FROM bench_ids LIMIT {int(statements)}) AS s) LOOP
                                    {stmt};
                                END LOOP;
                            END $$""")
                    per[with_triggers].append((time.perf_counter() - t0) / statements * 1e6)
                    conn.rollback()  # the updates and the DISABLE go away: every round starts equal
            out["cases"][case] = {"server_loop": _overhead(per[True], per[False])}
        ids = [r[0] for r in conn.execute("SELECT id FROM bench_ids LIMIT %s", (client_statements,)).fetchall()]
        conn.rollback()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for case, stmt in CLIENT_CASES.items():
            per = {True: [], False: []}
            for _ in range(client_rounds):
                for with_triggers in (True, False):
                    conn.execute(f"ALTER TABLE leads {'ENABLE' if with_triggers else 'DISABLE'} TRIGGER USER")
                    t0 = time.perf_counter()
                    for lead in ids:
                        conn.execute(stmt, (lead,), prepare=True)
                    per[with_triggers].append((time.perf_counter() - t0) / len(ids) * 1e6)
            conn.execute("ALTER TABLE leads ENABLE TRIGGER USER")
            out["cases"][case]["client_autocommit"] = _overhead(per[True], per[False])
    server.drop_db(name)
    return out
