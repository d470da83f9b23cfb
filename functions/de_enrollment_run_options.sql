-- de_enrollment_run_options: refuse a run's options out of bounds (batch size, runtime budget, lease); the bounds and defaults of a run, written once
-- requires: 0028_detect_dead_runs
--
-- start_de_enrollment_run and run_de_enrollment call it before anything is written, and
-- `deenroll run` before it connects its workers. Raises invalid_parameter_value; each message
-- starts with the option's name ('batch size', 'max runtime', 'lease'), which `deenroll run`
-- turns into the name of its own option. Returns the lease's length to use.
CREATE FUNCTION deenroll.de_enrollment_run_options(
    p_batch_size     integer,
    p_max_runtime_ms integer,
    p_lease_ms       integer DEFAULT NULL
)
RETURNS integer
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF p_batch_size IS NULL OR p_batch_size < 1 THEN
        RAISE EXCEPTION 'batch size must be a positive integer, got %', coalesce(p_batch_size::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_max_runtime_ms IS NULL OR p_max_runtime_ms < 1 THEN
        RAISE EXCEPTION 'max runtime must be at least 1 millisecond, got %', coalesce(p_max_runtime_ms::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_lease_ms IS NOT NULL AND p_lease_ms NOT BETWEEN 1000 AND 600000 THEN
        RAISE EXCEPTION 'lease must be between 1000 and 600000 milliseconds, got %', p_lease_ms
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN coalesce(p_lease_ms, 30000);
END
$fn$;

COMMENT ON FUNCTION deenroll.de_enrollment_run_options(integer, integer, integer) IS
    'Refuses a run''s batch size, runtime budget or lease out of bounds; returns the lease length (30000 ms unless given).';
