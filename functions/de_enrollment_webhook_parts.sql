-- de_enrollment_webhook_parts: a webhook URL taken apart: what may be shown of it (scheme://host[:port]), the URL to post to, its HTTP Basic authorization, or the problem with it
-- requires: 0030_alert_webhook
--
-- The one reading of a stored webhook URL, for the functions that keep, show and use it.
-- user:password@ in the URL means HTTP Basic authentication (percent-encoded, as `deenroll`
-- reads DE_ENROLLMENT_ALERT_WEBHOOK): it becomes an Authorization header and leaves the URL;
-- the fragment is never sent. Nothing of the user, password, path or query is ever in
-- `target` or in `problem`: webhook paths and queries often hold a token.
-- Granted to nobody: only our definer functions (and the owner) call it.
CREATE FUNCTION deenroll.de_enrollment_webhook_parts(p_url text)
RETURNS TABLE (target text, post_url text, authorization_header text, problem text)
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_url      text[];
    v_host     text[];
    v_userinfo text;
    v_scheme   text;
    v_port     text;
BEGIN
    -- scheme, authority (user info, host, port), path and query; the fragment is dropped
    v_url := pg_catalog.regexp_match(p_url, '^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^#]*)');
    v_scheme := pg_catalog.lower(v_url[1]);
    IF v_url IS NULL OR v_scheme NOT IN ('http', 'https') THEN
        problem := 'the alert webhook must be an http:// or https:// URL';
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_url ~ '[[:space:][:cntrl:]]' THEN
        problem := 'the alert webhook contains spaces or control characters (percent-encode them)';
        RETURN NEXT;
        RETURN;
    END IF;
    v_userinfo := pg_catalog.substring(v_url[2], '^(.*)@');
    v_host := pg_catalog.regexp_match(pg_catalog.substring(v_url[2], '([^@]*)$'),
                                      '^(\[[0-9A-Fa-f:.]+\]|[^:[\]]*)(?::([0-9]*))?$');
    v_port := nullif(v_host[2], '');
    IF v_host IS NULL OR pg_catalog.length(v_port) > 5 OR v_port::integer > 65535 THEN
        problem := 'the alert webhook is not a valid URL (bad host or port)';
        RETURN NEXT;
        RETURN;
    END IF;
    IF v_host[1] = '' THEN
        problem := 'the alert webhook has no host name';
        RETURN NEXT;
        RETURN;
    END IF;
    target := v_scheme || '://' || pg_catalog.lower(v_host[1]) || coalesce(':' || v_port::integer, '');
    post_url := v_scheme || '://' || pg_catalog.substring(v_url[2], '([^@]*)$') || v_url[3];
    IF v_userinfo IS NOT NULL THEN
        BEGIN
            -- user:password, each percent-decoded
            SELECT 'Basic ' || pg_catalog.translate(pg_catalog.encode(pg_catalog.convert_to(
                       pg_catalog.string_agg(d.part, ':' ORDER BY d.n), 'UTF8'), 'base64'), E'\n', '')
              INTO authorization_header
              FROM (SELECT p.n,
                           pg_catalog.convert_from(coalesce(
                               (SELECT pg_catalog.string_agg(
                                           CASE WHEN m.m[1] IS NOT NULL
                                                THEN pg_catalog.decode(pg_catalog.substr(m.m[1], 2), 'hex')
                                                ELSE pg_catalog.convert_to(m.m[2], 'UTF8') END, ''::bytea ORDER BY m.k)
                                  FROM pg_catalog.regexp_matches(p.part, '(%[0-9A-Fa-f]{2})|([^%]+|%)', 'g')
                                       WITH ORDINALITY AS m (m, k)), ''::bytea), 'UTF8') AS part
                      FROM (VALUES (1, pg_catalog.split_part(v_userinfo, ':', 1)),
                                   (2, CASE WHEN pg_catalog.strpos(v_userinfo, ':') > 0
                                            THEN pg_catalog.substr(v_userinfo, pg_catalog.strpos(v_userinfo, ':') + 1)
                                            ELSE '' END)) AS p (n, part)) AS d;
        EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
            target := NULL;
            post_url := NULL;
            problem := 'the alert webhook''s user or password is not valid percent-encoded UTF-8';
        END;
    END IF;
    RETURN NEXT;
END;
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_webhook_parts(text) IS
    'A webhook URL taken apart: scheme://host[:port] (all that may be shown), the URL to post to, the HTTP Basic authorization from user:password@, or the problem with it.';
