-- 0030: where the database sends its alerts. One webhook per database, kept in a table of
-- ours that only its owner reads: a webhook URL is a secret (Slack's carry a token). Row-level
-- security is on with no policy and no role is granted anything on it; our definer functions
-- read it as their owner and show the URL as scheme://host only. The alerts queued through
-- pg_net are listed by request id, so that their answers can be read back from pg_net's
-- response table. New tables only: nothing here touches a table the platform writes or a
-- run locks.
SET LOCAL lock_timeout = '5s';

CREATE TABLE deenroll.alert_webhook (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    url        text        NOT NULL,
    timeout_ms integer     NOT NULL DEFAULT 10000 CHECK (timeout_ms BETWEEN 1 AND 600000),
    set_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE deenroll.alert_webhook ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON deenroll.alert_webhook FROM PUBLIC;

COMMENT ON TABLE deenroll.alert_webhook IS
    'deenroll: the webhook the database posts its alerts to (one row at most); the URL is a secret that only the owner reads.';
COMMENT ON COLUMN deenroll.alert_webhook.timeout_ms IS
    'How long one POST may take, in milliseconds (pg_net''s timeout).';

CREATE TABLE deenroll.alert_deliveries (
    request_id bigint      PRIMARY KEY,
    kind       text        NOT NULL,
    target     text        NOT NULL,
    queued_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE deenroll.alert_deliveries ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON deenroll.alert_deliveries FROM PUBLIC;

COMMENT ON TABLE deenroll.alert_deliveries IS
    'deenroll: the alerts queued through pg_net (its request id, the alert''s kind, the webhook as scheme://host), kept 7 days.';
