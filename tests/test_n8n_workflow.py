"""The n8n workflow shipped in docs/schedulers: well formed, and it reads fields the CLI prints."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_n8n_workflow_calls_the_cli_and_reads_fields_it_prints(db_url, cli) -> None:
    path = REPO / "docs" / "schedulers" / "n8n-de-enrollment-workflow.json"
    wf = json.loads(path.read_text())
    assert wf["name"] == "Campaign De-enrollment V2 - Multi-Client"  # SOP Step 5.1
    nodes = {n["name"]: n for n in wf["nodes"]}
    commands = [n["parameters"]["command"] for n in nodes.values() if n["type"] == "n8n-nodes-base.executeCommand"]
    assert any("deenroll run --json" in c for c in commands)
    assert any("deenroll health-check --json" in c for c in commands)
    for name in wf["connections"]:
        assert name in nodes
    for outputs in wf["connections"].values():
        for branch in outputs["main"]:
            for edge in branch:
                assert edge["node"] in nodes
    # The fields the workflow's code reads are the ones the CLI prints.
    code = " ".join(n["parameters"].get("jsCode", "") for n in nodes.values())
    run_doc = json.loads(cli("run", "--json", db=db_url).stdout)
    health_doc = json.loads(cli("health-check", "--json", db=db_url).stdout)
    for key in ("exit_code", "totals"):
        assert f"report.{key}" in code and key in run_doc
    for key in ("status", "counts", "clients", "exit_code"):
        assert f"health.{key}" in code and key in health_doc
