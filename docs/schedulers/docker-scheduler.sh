#!/bin/sh
# The scheduler container of docker-compose.yml: `deenroll run` at every quarter hour
# (and once at start), `deenroll health-check` at every full hour, and
# `deenroll maintenance cleanup` on the 1st of the month at 03:30 UTC. A failing
# command is logged (its exit code too) and the loop goes on; alerts go to
# DE_ENROLLMENT_ALERT_WEBHOOK when it is set. Logs: `docker compose logs scheduler`.
set -u
# Never fall back to an embedded server inside the container.
export DEENROLL_EMBEDDED=never

# $1: the quarter hour (seconds since the epoch / 900) this tick stands for.
tick() {
    deenroll run || echo "deenroll-scheduler: deenroll run exited $?" >&2
    if [ $(( $1 % 4 )) -eq 0 ]; then
        deenroll health-check || echo "deenroll-scheduler: deenroll health-check exited $?" >&2
    fi
    if [ "$(date -u -d "@$(( $1 * 900 ))" +%d%H%M)" = "010330" ]; then
        deenroll maintenance cleanup || echo "deenroll-scheduler: deenroll maintenance cleanup exited $?" >&2
    fi
}

tick "$(( $(date +%s) / 900 ))"
while :; do
    now=$(date +%s)
    sleep $(( 900 - now % 900 ))
    tick "$(( $(date +%s) / 900 ))"
done
