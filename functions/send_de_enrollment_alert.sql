-- send_de_enrollment_alert: queue one alert document as a POST to the database's webhook through pg_net; returns whether it was queued, never raises
-- requires: 0030_alert_webhook
-- after: de_enrollment_webhook_parts de_enrollment_pg_net_problem de_enrollment_version
--
-- PERFORM deenroll.send_de_enrollment_alert(deenroll.de_enrollment_run_alert(...));
-- p_document: an alert document of ours (de_enrollment_alert_document: source deenroll, kind
-- run or health-check); NULL (nothing to report), anything else, no webhook kept: false and
-- nothing queued. pg_net sends the POST from its worker after the calling transaction
-- commits; a transaction that rolls back sends nothing. Its answer lands in pg_net's response
-- table (de_enrollment_alert_deliveries reads it back). pg_net is looked up when called, not
-- when this function is made: it may be installed later or removed. A failure to queue is a
-- WARNING naming the webhook as scheme://host, never an error of the caller's.
-- Runs as its owner (SECURITY DEFINER): the webhook's table and pg_net's functions are the
-- owner's to use; the caller needs no right on either.
CREATE FUNCTION deenroll.send_de_enrollment_alert(p_document jsonb)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    c_kept     CONSTANT interval := interval '7 days';  -- how long a delivery is remembered
    v_url      text;
    v_timeout  integer;
    v_target   text;
    v_post_url text;
    v_auth     text;
    v_problem  text;
    v_headers  jsonb;
    v_request  bigint;
    v_message  text;
BEGIN
    IF pg_catalog.jsonb_typeof(p_document) IS DISTINCT FROM 'object'
       OR p_document ->> 'source' IS DISTINCT FROM 'deenroll'
       OR coalesce(p_document ->> 'kind' NOT IN ('run', 'health-check'), true) THEN
        RETURN false;
    END IF;
    SELECT w.url, w.timeout_ms INTO v_url, v_timeout FROM deenroll.alert_webhook AS w;
    IF v_url IS NULL THEN
        RETURN false;
    END IF;
    BEGIN
        SELECT p.target, p.post_url, p.authorization_header, p.problem
          INTO v_target, v_post_url, v_auth, v_problem
          FROM deenroll.de_enrollment_webhook_parts(v_url) AS p;
        v_problem := coalesce(v_problem, deenroll.de_enrollment_pg_net_problem());
        IF v_problem IS NOT NULL THEN
            RAISE WARNING 'deenroll: % alert not sent to %: %', p_document ->> 'kind',
                          coalesce(v_target, '<invalid webhook URL>'), v_problem;
            RETURN false;
        END IF;
        v_headers := pg_catalog.jsonb_build_object(
                         'Content-Type', 'application/json',
                         'User-Agent', 'deenroll/' || deenroll.de_enrollment_version())
                     || CASE WHEN v_auth IS NOT NULL
                             THEN pg_catalog.jsonb_build_object('Authorization', v_auth) ELSE '{}' END;
        EXECUTE 'SELECT net.http_post($1, $2, $3, $4, $5)'
           INTO v_request
          USING v_post_url, p_document, '{}'::jsonb, v_headers, v_timeout;
        DELETE FROM deenroll.alert_deliveries AS d WHERE d.queued_at < pg_catalog.now() - c_kept;
        INSERT INTO deenroll.alert_deliveries (request_id, kind, target)
        VALUES (v_request, p_document ->> 'kind', v_target)
        ON CONFLICT (request_id) DO UPDATE SET kind = excluded.kind, target = excluded.target,
                                               queued_at = excluded.queued_at;
    EXCEPTION WHEN OTHERS THEN
        -- the server's message, unless it quotes a piece of the URL that may be a secret: the
        -- user info, the path or the query
        v_message := SQLERRM;
        IF EXISTS (SELECT FROM pg_catalog.unnest(ARRAY[pg_catalog.substring(v_url, '://([^/?#]*)@'),
                                            pg_catalog.substring(v_url, '://[^/?#]*([/?#].*)$')]) AS s (secret)
                    WHERE pg_catalog.length(s.secret) >= 2 AND pg_catalog.strpos(v_message, s.secret) > 0) THEN
            v_message := 'SQLSTATE ' || SQLSTATE;
        END IF;
        RAISE WARNING 'deenroll: % alert not queued for %: %', p_document ->> 'kind',
                      coalesce(v_target, '<invalid webhook URL>'), v_message;
        RETURN false;
    END;
    RETURN true;
END;
$fn$;

COMMENT ON FUNCTION deenroll.send_de_enrollment_alert(jsonb) IS
    'Queues an alert document of ours as a POST to the database''s webhook through pg_net (sent after the commit); returns whether it was queued; a failure is a WARNING, never an error.';
