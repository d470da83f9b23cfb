-- de_enrollment_version: the release of deenroll these SQL files belong to, as the alerts the database sends name it
-- requires: 0030_alert_webhook
--
-- The same string as the Python package's version (deenroll.__version__); a test keeps the
-- two equal, so a release changes both.
CREATE FUNCTION deenroll.de_enrollment_version()
RETURNS text
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT '0.1.0'::text
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_version() IS
    'The deenroll release of these SQL files (the same as the package''s version).';
