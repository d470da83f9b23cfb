-- de_enrollment_require_client: refuse a client id that names no client (no campaign and no lead), in the words `deenroll run --client-id` shows
-- requires: 0028_detect_dead_runs
--
-- Called by the run's procedure and by the dry run before anything else when they are
-- given one client. Raises invalid_parameter_value.
CREATE FUNCTION deenroll.de_enrollment_require_client(p_client_id uuid)
RETURNS void
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT public.de_enrollment_client_exists(p_client_id) THEN
        RAISE EXCEPTION 'client % has no campaigns and no leads: nothing to de-enroll', p_client_id
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_require_client(uuid) IS
    'Raises invalid_parameter_value when the client has no campaigns and no leads.';
