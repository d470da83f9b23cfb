-- grant_analyst_select: grant the read-only role deenroll_analyst SELECT on one view (when the role exists)
-- requires: 0022_add_analyst_role
--
-- Views are dropped and re-created by `deenroll migrate` whenever their file changes,
-- and a dropped view loses its grants: each analyst view ends with a call to this
-- function. It exists only while migration 0022 is applied in this database, so a
-- database at 0021 keeps no grant even though the role (cluster-wide) may exist.
CREATE FUNCTION grant_analyst_select(p_relation regclass)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'deenroll_analyst') THEN
        EXECUTE format('GRANT SELECT ON %s TO deenroll_analyst', p_relation);
    END IF;
END
$fn$;

COMMENT ON FUNCTION grant_analyst_select(regclass) IS
    'GRANT SELECT on one relation to deenroll_analyst if that role exists; called by each analyst view file.';
