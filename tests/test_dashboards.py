"""The Grafana dashboard in docs/dashboards and `health-check --prometheus`, on a migrated database."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, add_campaign, add_leads, add_run, new_id

DASHBOARD = REPO / "docs" / "dashboards" / "deenroll-grafana.json"
VIEWS = {"de_enrollment_health", "de_enrollment_daily_summary", "de_enrollment_stuck_leads"}


def _dashboard_sql() -> list[tuple[str, str]]:
    """(where, SQL) of every panel query and template variable of the dashboard."""
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = [(f"panel {p['title']!r}", t["rawSql"]) for p in dash["panels"] for t in p["targets"]]
    found += [(f"variable {v['name']!r}", v["query"]) for v in dash["templating"]["list"]]
    return found


def _as_grafana_sends(sql: str, clients: list[str]) -> str:
    """The macros and variables the dashboard uses, expanded as Grafana expands them."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 BETWEEN '2000-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'", sql)
    sql = sql.replace("$client", ",".join(f"'{c}'" for c in clients))
    assert "$" not in sql, f"unexpanded Grafana syntax in {sql!r}"
    return sql


def _clients(conn) -> dict[str, str]:
    """Three clients, one per health status; the error one also has stuck leads."""
    ids = {"ok": new_id(), "warning": new_id(), "error": new_id()}
    add_campaign(conn, ids["ok"])
    add_run(conn, ids["ok"], "success", count=4, de_enrolled=5)
    add_campaign(conn, ids["warning"])
    add_run(conn, ids["warning"], "success", count=3)
    add_run(conn, ids["warning"], "failed", count=3)
    camp = add_campaign(conn, ids["error"], messages=2)
    add_leads(conn, camp, ids["error"], 3, position=2)
    return ids


def test_dashboard_panels_read_only_existing_columns_of_the_views(conn) -> None:
    clients = list(_clients(conn).values())
    queries = _dashboard_sql()
    assert len(queries) >= 9
    columns = {
        (t, c)
        for t, c in conn.execute(
            """SELECT table_name, column_name FROM information_schema.columns
                WHERE table_schema = current_schema() AND table_name = ANY (%s)""",
            (list(VIEWS),),
        )
    }
    assert {t for t, _ in columns} == VIEWS
    read: set[str] = set()
    for i, (where, sql) in enumerate(queries):
        # PostgreSQL itself lists the columns a query reads: those of a view made from it.
        conn.execute(f"CREATE TEMP VIEW dashboard_query_{i} AS {_as_grafana_sends(sql, clients)}")
        used = conn.execute(
            """SELECT table_name, column_name FROM information_schema.view_column_usage
                WHERE view_schema = pg_my_temp_schema()::regnamespace::text AND view_name = %s""",
            (f"dashboard_query_{i}",),
        ).fetchall()
        assert used, where
        assert set(used) <= columns, f"{where} reads {set(used) - columns}"
        read |= {t for t, _ in used}
    assert read == VIEWS


def test_dashboard_queries_run_as_the_analyst_role(conn) -> None:
    ids = _clients(conn)
    conn.execute("SET ROLE deenroll_analyst")
    results = {}
    for where, sql in _dashboard_sql():
        results[where] = conn.execute(_as_grafana_sends(sql, list(ids.values()))).fetchall()
    conn.execute("RESET ROLE")
    assert results["panel 'Clients by health status'"] == [(1, 1, 1)]
    assert results["panel 'Stuck leads'"] == [(3, 0)]
    table = results["panel 'Client health'"]
    assert [(str(r[0]), r[1]) for r in table] == [(ids["error"], "error"), (ids["warning"], "warning"), (ids["ok"], "ok")]
    assert sorted(r[0] for r in results["variable 'client'"]) == sorted(ids.values())
    per_day = results["panel 'Runs per day by outcome'"]
    assert sum(r[1] for r in per_day) == 7 and sum(r[3] for r in per_day) == 3


def _families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_health_check_prometheus_text_parses_with_help_type_and_per_client_gauges(db_url, conn, cli) -> None:
    ids = _clients(conn)
    res = cli("health-check", "--prometheus", db=db_url)
    assert res.code == 0, res.stderr  # the status is in the gauges
    fams = _families(res.stdout)
    for name in fams:
        assert f"# HELP {name} " in res.stdout and f"# TYPE {name} gauge" in res.stdout
        assert fams[name].type == "gauge" and fams[name].documentation

    def by_client(name: str) -> dict[str, float]:
        return {s.labels["client_id"]: s.value for s in fams[name].samples}

    assert by_client("deenroll_client_status") == {ids["ok"]: 0, ids["warning"]: 1, ids["error"]: 2}
    assert by_client("deenroll_client_failed_runs_24h") == {ids["ok"]: 0, ids["warning"]: 3, ids["error"]: 0}
    assert by_client("deenroll_client_stuck_leads")[ids["error"]] == 3
    assert by_client("deenroll_client_leads_de_enrolled_24h")[ids["ok"]] == 20
    rates = by_client("deenroll_client_success_rate_24h")
    assert rates[ids["ok"]] == 100 and rates[ids["warning"]] == 50 and ids["error"] not in rates  # no finished run
    hours = by_client("deenroll_client_hours_since_success")  # never a success: since the client was first seen
    assert hours[ids["ok"]] < 1 and hours[ids["warning"]] < 1 and 71 < hours[ids["error"]] < 73
    assert set(by_client("deenroll_client_last_success_timestamp_seconds")) == {ids["ok"], ids["warning"]}
    assert {s.labels["status"]: s.value for s in fams["deenroll_clients"].samples} == {"ok": 1, "warning": 1, "error": 1}
    assert [s.value for s in fams["deenroll_health_status"].samples] == [2]


def test_health_check_prometheus_on_an_empty_database_and_with_json(db_url, cli) -> None:
    res = cli("health-check", "--prometheus", db=db_url)
    assert res.code == 0
    fams = _families(res.stdout)
    assert [s.value for s in fams["deenroll_health_status"].samples] == [0]
    assert fams["deenroll_client_status"].samples == []
    res = cli("health-check", "--prometheus", "--json", db=db_url)
    assert res.code == 2 and json.loads(res.stdout)["error"] == "--json and --prometheus exclude each other"


@pytest.mark.parametrize("value", ['a"b', "back\\slash", "line\nbreak"])
def test_prometheus_label_values_are_escaped(value: str) -> None:
    from deenroll import health, metrics

    report = health.HealthReport([{
        "client_id": value, "status": "ok", "hours_since_success": 1, "last_success_at": None, "runs_24h": 1,
        "failed_runs_24h": 0, "partial_runs_24h": 0, "success_rate_24h": None, "leads_de_enrolled_24h": 0,
        "stuck_leads": 0,
    }])
    fams = _families(metrics.exposition(report))
    assert [s.labels["client_id"] for s in fams["deenroll_client_status"].samples] == [value]
