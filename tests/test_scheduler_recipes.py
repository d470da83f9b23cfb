"""The shipped scheduler recipes: each parses, sets DEENROLL_EMBEDDED=never, runs run, health-check
and the monthly cleanup; the docker scheduler's login works as a member of deenroll_runner only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from conftest import REPO, Server, deenroll_exe

RECIPES = REPO / "docs" / "schedulers"
COMMANDS = ("deenroll run", "deenroll health-check", "deenroll maintenance cleanup")
PSQL = next((p for p in ["/usr/lib/postgresql/15/bin/psql", shutil.which("psql")] if p and Path(p).exists()), None)


def cron_entries(text: str) -> list[tuple[list[str], str]]:
    """(five schedule fields, command) of each job line of a crontab."""
    jobs = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^\w+=", line):
            continue
        fields = line.split(None, 5)
        jobs.append((fields[:5], fields[5]))
    return jobs


def is_monthly(minute: str, hour: str, dom: str, month: str, dow: str) -> bool:
    return minute.isdigit() and hour.isdigit() and dom.isdigit() and (month, dow) == ("*", "*")


def test_every_recipe_file_is_covered_here() -> None:
    """A new recipe must be checked by this module."""
    known = {
        "README.md", "crontab", "kubernetes-cronjobs.yaml", "n8n-de-enrollment-workflow.json",
        "docker-scheduler.sh", "docker-scheduler-login.sql",
    }
    for path in RECIPES.iterdir():
        assert path.name in known or path.suffix in (".service", ".timer"), f"{path.name} is not checked"


def test_crontab() -> None:
    text = (RECIPES / "crontab").read_text()
    assert re.search(r"^DEENROLL_EMBEDDED=never$", text, re.M)
    jobs = cron_entries(text)
    for command in COMMANDS:
        assert any(command in cmd for _, cmd in jobs), command
    (cleanup,) = [fields for fields, cmd in jobs if "maintenance cleanup" in cmd]
    assert is_monthly(*cleanup)
    for _, cmd in jobs:
        # a non-root user cannot write under /var/log: syslog or the user's home
        assert "/var/log" not in cmd and ("| logger" in cmd or "$HOME" in cmd)


def test_systemd_units() -> None:
    services = sorted(RECIPES.glob("*.service"))
    ran = set()
    for service in services:
        text = service.read_text()
        assert "Environment=DEENROLL_EMBEDDED=never" in text.splitlines(), service.name
        assert service.with_suffix(".timer").exists(), f"{service.name} has no timer"
        (exec_start,) = re.findall(r"^ExecStart=(.*)$", text, re.M)
        ran |= {c for c in COMMANDS if c in exec_start}
        calendar = re.findall(r"^OnCalendar=(.*)$", service.with_suffix(".timer").read_text(), re.M)
        assert calendar, service.name
        if "maintenance cleanup" in exec_start:
            assert re.fullmatch(r"\*-\*-\d\d \d\d:\d\d:\d\d", calendar[0]), "cleanup: once a month"
    assert ran == set(COMMANDS)
    if shutil.which("systemd-analyze"):
        for timer in RECIPES.glob("*.timer"):
            for spec in re.findall(r"^OnCalendar=(.*)$", timer.read_text(), re.M):
                res = subprocess.run(["systemd-analyze", "calendar", spec], capture_output=True, text=True)
                assert res.returncode == 0, res.stderr


def test_kubernetes_cronjobs() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML (the test extra) parses the Kubernetes and compose files")
    jobs = list(yaml.safe_load_all((RECIPES / "kubernetes-cronjobs.yaml").read_text()))
    ran = {}
    for job in jobs:
        assert job["kind"] == "CronJob"
        (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert {"name": "DEENROLL_EMBEDDED", "value": "never"} in container.get("env", []), job["metadata"]["name"]
        ran["deenroll " + " ".join(a for a in container["args"] if not a.startswith("--"))] = job["spec"]["schedule"]
    assert set(ran) == set(COMMANDS)
    assert is_monthly(*ran["deenroll maintenance cleanup"].split())


def test_n8n_workflow() -> None:
    wf = json.loads((RECIPES / "n8n-de-enrollment-workflow.json").read_text())
    nodes = {n["name"]: n for n in wf["nodes"]}
    feeds = {edge["node"]: src for src, out in wf["connections"].items() for branch in out["main"] for edge in branch}
    commands = [n for n in nodes.values() if n["type"] == "n8n-nodes-base.executeCommand"]
    ran = {}
    for node in commands:
        cmd = node["parameters"]["command"]
        assert "DEENROLL_EMBEDDED=never " in cmd and "--json || true" in cmd, node["name"]
        assert "NODES_EXCLUDE" in node["notes"]  # n8n 2.x does not load this node by default
        trigger = nodes[feeds[node["name"]]]
        assert trigger["type"] == "n8n-nodes-base.scheduleTrigger"
        ran.update({c: trigger["parameters"]["rule"]["interval"][0] for c in COMMANDS if c in cmd})
    assert set(ran) == set(COMMANDS)
    assert ran["deenroll maintenance cleanup"]["field"] == "months"
    assert ran["deenroll maintenance cleanup"]["monthsInterval"] == 1


def test_dockerfile_and_compose() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML (the test extra) parses the Kubernetes and compose files")
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^\s*DEENROLL_EMBEDDED=never\s*$", dockerfile, re.M) or "ENV DEENROLL_EMBEDDED=never" in dockerfile
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    owner = services["db"]["environment"]["POSTGRES_USER"]
    for name, service in services.items():
        if service.get("image", "").startswith("deenroll") or "build" in service:
            assert service["environment"]["DEENROLL_EMBEDDED"] == "never", name
    scheduler = services["scheduler"]
    user = conninfo.conninfo_to_dict(scheduler["environment"]["DATABASE_URL"]).get("user")
    assert user and user != owner and user != "postgres"
    assert "@" not in scheduler["environment"]["DATABASE_URL"].split("//")[1].split("@")[0]  # no password in it
    login = services["scheduler-login"]
    assert any(v.startswith("./docs/schedulers/docker-scheduler-login.sql:") for v in login["volumes"])
    assert scheduler["depends_on"]["scheduler-login"]["condition"] == "service_completed_successfully"
    sql = (RECIPES / "docker-scheduler-login.sql").read_text()
    assert f"CREATE ROLE {user} LOGIN" in sql and f"GRANT deenroll_runner TO {user};" in sql


def _tick(quarter: int, tmp_path: Path) -> list[str]:
    """Run the docker scheduler's tick() for one quarter hour with a stand-in deenroll that logs its arguments."""
    script = (RECIPES / "docker-scheduler.sh").read_text()
    tick = re.search(r"^tick\(\) \{.*?^\}", script, re.M | re.S).group(0)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / "calls"
    fake = bindir / "deenroll"
    fake.write_text(f'#!/bin/sh\necho "$DEENROLL_EMBEDDED $*" >> {log}\n')
    fake.chmod(0o755)
    log.write_text("")
    exports = "\n".join(line for line in script.splitlines() if line.startswith("export "))
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", f"{exports}\n{tick}\ntick {quarter}"], env=env, check=True, timeout=30)
    return log.read_text().splitlines()


@pytest.mark.parametrize(
    "when, expected",
    [
        ("2026-12-01T03:30:00Z", ["never run", "never maintenance cleanup"]),
        ("2026-12-01T03:00:00Z", ["never run", "never health-check"]),
        ("2026-12-01T03:15:00Z", ["never run"]),
        ("2026-12-02T03:30:00Z", ["never run"]),
        ("2027-01-01T03:30:00Z", ["never run", "never maintenance cleanup"]),
    ],
)
def test_docker_scheduler_loop(tmp_path, when: str, expected: list[str]) -> None:
    from datetime import datetime

    quarter = int(datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()) // 900
    assert _tick(quarter, tmp_path) == expected


@pytest.mark.skipif(PSQL is None, reason="psql 15 or later is needed for \\getenv")
def test_the_docker_scheduler_login_runs_the_scheduler_commands(pg_server: Server, db_url: str, tmp_path) -> None:
    """The compose file's login SQL, as the owner; then run, health-check and cleanup as that login."""
    role = f"deenroll_sched_{uuid.uuid4().hex[:8]}"
    sql = (RECIPES / "docker-scheduler-login.sql").read_text().replace("deenroll_scheduler", role)
    script = tmp_path / "login.sql"
    script.write_text(sql)
    params = conninfo.conninfo_to_dict(db_url)
    psql_env = {**os.environ, "PGHOST": params["host"], "PGDATABASE": params["dbname"],
                "PGUSER": params.get("user") or "postgres", "DEENROLL_SCHEDULER_PASSWORD": "Sched-pw/1?#"}
    if params.get("port"):
        psql_env["PGPORT"] = str(params["port"])
    try:
        for _ in range(2):  # twice: it is safe to run again (compose runs it at every `up`)
            res = subprocess.run([PSQL, "--no-psqlrc", "--quiet", "-f", str(script)], env=psql_env,
                                 capture_output=True, text=True, timeout=60)
            assert res.returncode == 0, res.stderr
        with psycopg.connect(db_url) as conn:
            memberships = conn.execute(
                "SELECT array_agg(b.rolname::text ORDER BY b.rolname) FROM pg_auth_members m"
                " JOIN pg_roles r ON r.oid = m.member JOIN pg_roles b ON b.oid = m.roleid WHERE r.rolname = %s",
                (role,),
            ).fetchone()[0]
            flags = conn.execute(
                "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = %s",
                (role,),
            ).fetchone()
        assert memberships == ["deenroll_runner"] and flags == (True, False, False, False, False)
        url = conninfo.make_conninfo(db_url, user=role)
        env = {**os.environ, "DEENROLL_EMBEDDED": "never", "DATABASE_URL": url, "PGPASSWORD": "Sched-pw/1?#"}
        env = {k: v for k, v in env.items() if not k.startswith("DE_ENROLLMENT_")}
        for args in (["run", "--json"], ["health-check", "--json"], ["maintenance", "cleanup", "--json"]):
            res = subprocess.run([deenroll_exe(), *args], env=env, capture_output=True, text=True, timeout=300)
            assert res.returncode in (0, 1), f"{args}: {res.stderr}"
            assert json.loads(res.stdout)["exit_code"] == res.returncode
            assert "Sched-pw" not in res.stdout + res.stderr
    finally:
        with pg_server.admin() as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')
