-- archive_de_enrollment_history: the SOP's monthly cleanup done in one transaction: move old runs to de_enrollment_runs_archive, delete old lead logs
-- requires: 0021_add_de_enrollment_monitoring
--
-- Runs started more than p_runs_days ago are moved (deleted, and inserted in the same
-- statement) into de_enrollment_runs_archive, created on first use LIKE
-- de_enrollment_runs plus archived_at. Lead-log rows processed more than p_logs_days
-- ago are deleted. de_enrollment_lead_log.run_id references de_enrollment_runs, so the
-- log rows of the runs being archived go first, whatever their age; p_runs_days must be
-- >= p_logs_days so that this never deletes a log younger than p_logs_days (except
-- the few minutes a run lasts). p_dry_run counts and changes nothing.
-- VACUUM cannot run in a transaction, hence not in a function: `deenroll maintenance
-- cleanup` runs VACUUM ANALYZE on both tables after this commits.
-- Two cleanups at once queue on a transaction-level advisory lock.
CREATE FUNCTION public.archive_de_enrollment_history(
    p_runs_days integer DEFAULT 90,
    p_logs_days integer DEFAULT 30,
    p_dry_run   boolean DEFAULT false
)
RETURNS TABLE (
    runs_archived             bigint,
    lead_logs_deleted         bigint,
    lead_logs_of_archived_runs bigint,
    runs_cutoff               timestamptz,
    logs_cutoff               timestamptz,
    archive_created           boolean
)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_runs_cutoff timestamptz;
    v_logs_cutoff timestamptz;
    v_cols        text;
    v_created     boolean := false;
    v_runs        bigint;
    v_old_logs    bigint;
    v_run_logs    bigint;
BEGIN
    IF p_runs_days IS NULL OR p_runs_days < 1 OR p_logs_days IS NULL OR p_logs_days < 1 THEN
        RAISE EXCEPTION 'retention must be at least 1 day (runs: %, lead logs: %)', p_runs_days, p_logs_days
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_runs_days < p_logs_days THEN
        RAISE EXCEPTION 'runs must be kept at least as long as lead logs (runs: % days, lead logs: % days): lead logs reference their runs',
              p_runs_days, p_logs_days
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_runs_cutoff := now() - p_runs_days * interval '1 day';
    v_logs_cutoff := now() - p_logs_days * interval '1 day';

    PERFORM pg_advisory_xact_lock(hashtext('deenroll: archive_de_enrollment_history')::bigint);

    IF p_dry_run THEN
        RETURN QUERY
        SELECT (SELECT count(*) FROM public.de_enrollment_runs AS r WHERE r.run_at < v_runs_cutoff),
               (SELECT count(*) FROM public.de_enrollment_lead_log AS g WHERE g.processed_at < v_logs_cutoff),
               (SELECT count(*) FROM public.de_enrollment_lead_log AS g
                  JOIN public.de_enrollment_runs AS r ON r.id = g.run_id
                 WHERE r.run_at < v_runs_cutoff AND g.processed_at >= v_logs_cutoff),
               v_runs_cutoff, v_logs_cutoff, to_regclass('public.de_enrollment_runs_archive') IS NULL;
        RETURN;
    END IF;

    IF to_regclass('public.de_enrollment_runs_archive') IS NULL THEN
        CREATE TABLE public.de_enrollment_runs_archive (
            LIKE public.de_enrollment_runs INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
            archived_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (id)
        );
        COMMENT ON TABLE public.de_enrollment_runs_archive IS
            'de_enrollment_runs rows moved here by `deenroll maintenance cleanup` (archive_de_enrollment_history()).';
        v_created := true;
        -- A new table gets whatever the database's default privileges hand out: close it now.
        IF to_regprocedure('public.deenroll_apply_privileges()') IS NOT NULL THEN
            PERFORM public.deenroll_apply_privileges();
        END IF;
    END IF;

    DELETE FROM public.de_enrollment_lead_log AS g WHERE g.processed_at < v_logs_cutoff;
    GET DIAGNOSTICS v_old_logs = ROW_COUNT;

    DELETE FROM public.de_enrollment_lead_log AS g
     USING public.de_enrollment_runs AS r
     WHERE r.id = g.run_id AND r.run_at < v_runs_cutoff;
    GET DIAGNOSTICS v_run_logs = ROW_COUNT;

    -- The columns both tables have, so an archive made by an older version still fits.
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
      INTO v_cols
      FROM pg_attribute AS a
     WHERE a.attrelid = 'public.de_enrollment_runs'::regclass AND a.attnum > 0 AND NOT a.attisdropped
       AND EXISTS (SELECT 1 FROM pg_attribute AS b
                    WHERE b.attrelid = 'public.de_enrollment_runs_archive'::regclass
                      AND b.attname = a.attname AND b.attnum > 0 AND NOT b.attisdropped);

    EXECUTE format(
        'WITH moved AS (DELETE FROM public.de_enrollment_runs WHERE run_at < $1 RETURNING %1$s)
         INSERT INTO public.de_enrollment_runs_archive (%1$s) SELECT %1$s FROM moved', v_cols)
      USING v_runs_cutoff;
    GET DIAGNOSTICS v_runs = ROW_COUNT;

    RETURN QUERY SELECT v_runs, v_old_logs, v_run_logs, v_runs_cutoff, v_logs_cutoff, v_created;
END
$fn$;

COMMENT ON FUNCTION public.archive_de_enrollment_history(integer, integer, boolean) IS
    'Moves runs older than p_runs_days into de_enrollment_runs_archive and deletes lead logs older than p_logs_days (and those of the archived runs), in one transaction; p_dry_run only counts.';
