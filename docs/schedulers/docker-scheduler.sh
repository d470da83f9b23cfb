#!/bin/sh
# The scheduler container of docker-compose.yml: `deenroll run` at every quarter hour
# (and once at start), `deenroll health-check` at every full hour. A failing command
# is logged (its exit code too) and the loop goes on; alerts go to
# DE_ENROLLMENT_ALERT_WEBHOOK when it is set.
set -u

tick() {
    deenroll run || echo "deenroll-scheduler: deenroll run exited $?" >&2
    if [ $(( $1 % 4 )) -eq 0 ]; then
        deenroll health-check || echo "deenroll-scheduler: deenroll health-check exited $?" >&2
    fi
}

tick "$(( $(date +%s) / 900 ))"
while :; do
    now=$(date +%s)
    sleep $(( 900 - now % 900 ))
    tick "$(( $(date +%s) / 900 ))"
done
