"""`deenroll schedule install --alert-webhook URL` and nothing else: real pg_cron jobs post the
alerts through the real pg_net to real receivers on 127.0.0.1, as the same documents `deenroll
run` and `deenroll health-check` post.

pg_net's worker serves one database of scripts/test.sh's PostgreSQL 15 (deenroll_net), shared
one test at a time (the lock of tests/test_alerts_pg_net.py). pg_cron 1.4 runs minute schedules:
each test waits for one minute's runs of its jobs, scheduled every minute.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg
import pytest

from conftest import Server, run_cli
from processes import wait_until
from test_alerts_pg_net import Net, assert_no_secret, marker_after_nothing, net, net_db, secret_url  # noqa: F401
from test_schedule import _jobs, _wait_for_run, cron_db, make_login, one_line  # noqa: F401
from webhooks import Webhook, closed_port_url

pytestmark = [pytest.mark.pg_net, pytest.mark.pg_cron, pytest.mark.slow]

FAILED, PARTIAL, HEALTHY, SICK = (str(uuid.uuid5(uuid.NAMESPACE_URL, f"deenroll-alerts/{n}"))
                                  for n in ("failed", "partial", "healthy", "sick"))


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"deenroll-alerts/{name}"))


def dataset(conn: psycopg.Connection, *, troubled: bool = True, sick: bool = True) -> None:
    """The same rows, ids included, in any database: a client whose run fails (the platform
    refuses any change to its campaigns), one whose run ends partial (a campaign whose messages
    is not an array) and a healthy one, each with finished leads and 20 successful runs in the
    last hour (so that one more failed or partial run leaves it healthy); and a client in error
    for health (an active campaign for 72 hours, never a successful run, no lead to run)."""
    clients = [FAILED, PARTIAL, HEALTHY] if troubled else [HEALTHY]
    for client in clients:
        conn.execute(
            "INSERT INTO campaigns (id, client_id, name, messages, created_at) "
            "VALUES (%s, %s, 'steady', '[1, 2]', now() - interval '3 days')", (_id(f"camp/{client}"), client))
        conn.execute(
            "INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, is_active, opted_out) "
            "SELECT uuid_in(md5(%s || i)::cstring), %s, %s, 2, true, false FROM generate_series(1, 4) AS i",
            (client, client, _id(f"camp/{client}")))
        conn.execute(
            "INSERT INTO de_enrollment_runs (client_id, status, run_at, duration_ms, leads_de_enrolled) "
            "SELECT %s, 'success', now() - interval '10 minutes', 100, 0 FROM generate_series(1, 20)", (client,))
    if troubled:
        conn.execute(
            f"""CREATE FUNCTION zz_frozen_campaigns() RETURNS trigger LANGUAGE plpgsql AS $$
                  BEGIN RAISE EXCEPTION 'the campaigns of this client are read-only'; END $$;
                CREATE TRIGGER zz_frozen_campaigns BEFORE UPDATE ON campaigns FOR EACH ROW
                  WHEN (OLD.client_id = '{FAILED}') EXECUTE FUNCTION zz_frozen_campaigns();""")
        conn.execute("INSERT INTO campaigns (id, client_id, name, messages) VALUES (%s, %s, 'broken one', "
                     "'\"three steps\"')", (_id("broken"), PARTIAL))
        conn.execute("INSERT INTO leads (id, client_id, campaign_link_id, current_message_position, opted_out) "
                     "VALUES (%s, %s, %s, 7, false)", (_id("stranded"), PARTIAL, _id("broken")))
    if not sick:
        return
    # seen 71.95 h ago (its reason reads "72.0 h" for six minutes), its last run failed a minute
    # ago and nothing is due: a run passes it over (idle) for four minutes more
    conn.execute("INSERT INTO campaigns (id, client_id, name, messages, created_at) "
                 "VALUES (%s, %s, 'forgotten', '[1, 2]', now() - interval '71 hours 57 minutes')",
                 (_id("forgotten"), SICK))
    conn.execute("INSERT INTO de_enrollment_runs (client_id, status, run_at, duration_ms, leads_de_enrolled) "
                 "VALUES (%s, 'failed', now() - interval '1 minute', 100, 0)", (SICK,))


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """A document without what differs between two senders and two runs of the same data: when
    and who sent it, the run ids, durations, hours counted up to now."""
    doc = {k: v for k, v in document.items() if k not in ("sent_at", "host")}
    doc["text"] = doc["text"].replace(document["host"], "<host>")
    details = dict(doc["details"])
    details["clients"] = [{k: v for k, v in c.items() if k not in ("run_id", "duration_ms", "hours_since_success")}
                          for c in details["clients"]]
    doc["details"] = details
    return doc


def install_run_only(pg_server: Server, cron_db: str, net: Net, role: str, webhook_url: str) -> None:
    """The install a DBA makes (as the owner, the jobs run by a runner login), the run's job due
    each minute and the others inactive."""
    res = run_cli("schedule", "install", "--as", role, "--every", "1 minute", "--alert-webhook", webhook_url,
                  db=net.url)
    assert res.code == 0, res.stderr
    assert_no_secret(res.stdout, res.stderr)
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        conn.execute("UPDATE cron.job SET active = false WHERE username = %s AND jobname <> 'deenroll-run'", (role,))


def every_minute(pg_server: Server, cron_db: str, role: str, jobname: str) -> None:
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        conn.execute("UPDATE cron.job SET schedule = '* * * * *' WHERE username = %s AND jobname = %s", (role, jobname))


def stop_jobs(pg_server: Server, cron_db: str, role: str) -> None:
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        conn.execute("UPDATE cron.job SET active = false WHERE username = %s", (role,))


def job_statuses(pg_server: Server, cron_db: str, role: str) -> dict[str, str]:
    """The first finished run of each job of the role: its status."""
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        return dict(conn.execute(
            """SELECT DISTINCT ON (j.jobname) j.jobname, d.status
                 FROM cron.job_run_details AS d JOIN cron.job AS j USING (jobid)
                WHERE j.username = %s AND d.status IN ('succeeded', 'failed')
                ORDER BY j.jobname, d.runid""", (role,)).fetchall())


def test_the_jobs_post_a_failed_and_partial_run_and_an_unhealthy_client_as_the_commands_do(
    pg_server: Server, cron_db: str, db_url: str, net: Net, webhook: Webhook, make_login
) -> None:
    role = make_login(cron_usage=False, other_database=False)
    dataset(net.conn)
    # an install of the previous release: its health job is updated to the one that alerts
    res = run_cli("schedule", "install", "--as", role, "--every", "1 minute", db=net.url)
    assert res.code == 0, res.stderr
    with psycopg.connect(pg_server.dsn(cron_db), autocommit=True) as conn:
        conn.execute("UPDATE cron.job SET command = 'SELECT public.check_de_enrollment_health()' "
                     "WHERE username = %s AND jobname = 'deenroll-health'", (role,))
    url = secret_url(webhook)
    res = run_cli("schedule", "install", "--as", role, "--every", "1 minute", "--alert-webhook", url, db=net.url)
    assert res.code == 0, res.stderr
    host, port = webhook.server.server_address[:2]
    assert res.stdout.splitlines() == [
        "unchanged deenroll-run      * * * * *      CALL deenroll.run_de_enrollment()",
        "updated   deenroll-health   5 * * * *      CALL deenroll.alert_de_enrollment_health()",
        "unchanged deenroll-cleanup  30 3 1 * *     SELECT public.archive_de_enrollment_history()",
        f"set       alerts            to http://{host}:{port}"]
    assert_no_secret(res.stdout, res.stderr)
    every_minute(pg_server, cron_db, role, "deenroll-health")

    _wait_for_run(pg_server, cron_db, role, "deenroll-run")
    _wait_for_run(pg_server, cron_db, role, "deenroll-health")
    stop_jobs(pg_server, cron_db, role)
    assert job_statuses(pg_server, cron_db, role) == {"deenroll-run": "succeeded", "deenroll-health": "failed"}
    wait_until(lambda: {r["body"]["kind"] for r in webhook.received} >= {"run", "health-check"}, timeout=60)
    first = {}
    for r in webhook.received:
        first.setdefault(r["body"]["kind"], r)
    assert {r["path"] for r in first.values()} == {"/hooks/T0/SECRET-TOKEN?token=QueryTok3n"}
    from_jobs = {kind: r["body"] for kind, r in first.items()}
    assert from_jobs["run"]["host"] == from_jobs["health-check"]["host"] == f"database {net.conn.info.dbname}"
    flagged = {c["client_id"]: c["status"] for c in from_jobs["run"]["details"]["clients"]}
    assert flagged == {FAILED: "failed", PARTIAL: "partial"}
    assert [c["client_id"] for c in from_jobs["health-check"]["details"]["clients"]] == [SICK]

    # what the commands post for the same data: `deenroll health-check` here, now; `deenroll
    # run` on another database holding the same rows (less the idle client, which the job's run
    # passed over, and which `deenroll run` would count as skipped)
    received = len(webhook.received)
    env = {"DE_ENROLLMENT_ALERT_WEBHOOK": webhook.url}
    assert run_cli("health-check", db=net.url, env=env).code != 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        dataset(conn, sick=False)
    assert run_cli("run", db=db_url, env=env).code == 2
    from_commands = {r["body"]["kind"]: r["body"] for r in webhook.received[received:]
                     if r["body"]["host"] != from_jobs["run"]["host"]}
    assert set(from_commands) == {"run", "health-check"}
    for kind in ("run", "health-check"):
        assert comparable(from_jobs[kind]) == comparable(from_commands[kind]), kind

    net.answered(len(net.deliveries()))
    res = run_cli("schedule", "status", db=net.url)
    alerts = res.stdout[res.stdout.index("alerts: "):].splitlines()
    assert alerts[0] == f"alerts: on, to http://{host}:{port} (sent by pg_net after each job commits)"
    assert {line.split()[3] for line in alerts[1:]} == {"health-check", "run"}
    assert all(line.endswith(f"http://{host}:{port}  HTTP 200") for line in alerts[1:])
    doc = json.loads(run_cli("schedule", "status", "--json", db=net.url).stdout)
    assert {(d["kind"], d["status_code"]) for d in doc["alerts"]["deliveries"]} >= {("run", 200), ("health-check", 200)}
    assert doc["alerts"]["on"] is True and doc["alerts"]["webhook"] == f"http://{host}:{port}"
    assert_no_secret(res.stdout, res.stderr, doc)

    # remove: the jobs go, the webhook stays (and says so); --alert-webhook turns alerts off
    res = run_cli("schedule", "remove", db=net.url)
    assert res.code == 0 and res.stdout.splitlines()[-1].startswith(f"kept    alerts to http://{host}:{port}: ")
    assert _jobs(pg_server, cron_db, role) == {}
    res = run_cli("schedule", "remove", "--alert-webhook", db=net.url)
    assert res.stdout.startswith(f"removed alerts to http://{host}:{port}: the database sends no more alerts")
    assert net.conn.execute("SELECT target FROM deenroll.de_enrollment_alert_webhook()").fetchone()[0] is None
    assert_no_secret(res.stdout, res.stderr)


def test_a_healthy_run_sends_nothing(pg_server: Server, cron_db: str, net: Net, webhook: Webhook,
                                     make_login) -> None:
    role = make_login(cron_usage=False, other_database=False)
    dataset(net.conn, troubled=False)
    install_run_only(pg_server, cron_db, net, role, webhook.url)
    _wait_for_run(pg_server, cron_db, role, "deenroll-run")
    stop_jobs(pg_server, cron_db, role)
    assert job_statuses(pg_server, cron_db, role) == {"deenroll-run": "succeeded"}
    assert net.conn.execute("SELECT count(*) FROM de_enrollment_runs WHERE client_id = %s AND status = 'success'",
                            (HEALTHY,)).fetchone()[0] == 21
    assert net.deliveries() == []  # nothing queued
    marker_after_nothing(net, webhook, 0)


def test_a_dead_receiver_changes_nothing_in_the_runs_and_shows_in_status(
    pg_server: Server, cron_db: str, net: Net, make_login
) -> None:
    role = make_login(cron_usage=False, other_database=False)
    dataset(net.conn)
    dead = closed_port_url()
    install_run_only(pg_server, cron_db, net, role, dead.replace("/hook", "/hooks/T0/SECRET-TOKEN?token=QueryTok3n").replace(
        "http://", "http://hookuser:Pa55-w0rd-x@"))
    _wait_for_run(pg_server, cron_db, role, "deenroll-run")
    stop_jobs(pg_server, cron_db, role)
    assert job_statuses(pg_server, cron_db, role) == {"deenroll-run": "succeeded"}
    runs = dict(net.conn.execute("SELECT client_id::text, status FROM de_enrollment_runs "
                                 "WHERE run_at > now() - interval '5 minutes' AND client_id <> %s", (SICK,)).fetchall())
    assert runs == {FAILED: "failed", PARTIAL: "partial", HEALTHY: "success"}
    [delivery] = net.answered()
    assert delivery["status_code"] is None and "connect" in delivery["error_msg"].lower()
    target = dead.rsplit("/", 1)[0]
    res = run_cli("schedule", "status", db=net.url)
    [line] = [line for line in res.stdout.splitlines() if line.startswith("  ") and " run " in line
              and target in line]
    assert f"{target}  not delivered: " in line and "connect" in line.lower()
    doc = json.loads(run_cli("schedule", "status", "--json", db=net.url).stdout)
    [shown] = doc["alerts"]["deliveries"]
    assert (shown["kind"], shown["status_code"], shown["target"]) == ("run", None, target)
    assert_no_secret(res.stdout, res.stderr, doc)


def test_without_pg_net_the_option_says_so_in_one_line_and_changes_nothing(
    pg_server: Server, cron_db: str, db_url: str, webhook: Webhook, make_login
) -> None:
    role = make_login(cron_usage=False, other_database=False)
    line = one_line(run_cli("schedule", "install", "--as", role, "--alert-webhook", secret_url(webhook), db=db_url))
    assert line.startswith("deenroll: error: --alert-webhook: pg_net is not installed in this database")
    assert "Database > Extensions > pg_net" in line and "shared_preload_libraries" in line
    assert line.endswith("; nothing changed")
    assert_no_secret(line)
    assert _jobs(pg_server, cron_db, role) == {}
    # the same URL from the environment: the jobs are installed, and a note says why alerts stay off
    res = run_cli("schedule", "install", "--as", role, db=db_url,
                  env={"DE_ENROLLMENT_ALERT_WEBHOOK": secret_url(webhook)})
    assert res.code == 0, res.stderr
    assert "deenroll: note: DE_ENROLLMENT_ALERT_WEBHOOK is set, but the database's alerts stay as they are: pg_net " \
           "is not installed" in res.stderr
    assert len(_jobs(pg_server, cron_db, role)) == 3
    assert_no_secret(res.stdout, res.stderr)
