# deenroll as a container: `docker run IMAGE run --json`, `... health-check`, etc.
# docker-compose.yml uses it for a one-shot `migrate` and for the scheduler loop
# (docs/schedulers/docker-scheduler.sh, installed as deenroll-scheduler).
FROM python:3.12-slim

WORKDIR /app
# The package as `pip install .` builds it: the SQL directories travel inside the wheel.
# (deenroll/cli.py is a symlink to ../cli.py, hence cli.py at the top.)
COPY pyproject.toml README.md cli.py ./
COPY deenroll/ deenroll/
COPY migrations/ migrations/
COPY rollback/ rollback/
COPY functions/ functions/
COPY views/ views/
RUN pip install --no-cache-dir . \
 && useradd --system --home-dir /app --shell /usr/sbin/nologin deenroll
COPY --chmod=0755 docs/schedulers/docker-scheduler.sh /usr/local/bin/deenroll-scheduler

USER deenroll
# A container never starts an embedded server: without DATABASE_URL (or PG* variables)
# every command stops with one line saying so.
ENV PYTHONUNBUFFERED=1 \
    DEENROLL_EMBEDDED=never
ENTRYPOINT ["deenroll"]
CMD ["--help"]
