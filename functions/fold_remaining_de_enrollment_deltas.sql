-- fold_remaining_de_enrollment_deltas: the last step of a run over every client: fold the pending counter deltas of every campaign, waiting for locks as long as the run's budget
-- requires: 0028_detect_dead_runs
--
-- A client's run folds its own campaigns' deltas; campaigns no run touched (a client
-- without an active campaign and nothing due, a deleted campaign's leftovers) are folded
-- here. It may wait for campaign row locks the platform holds up to the run's budget (at
-- least a run's own lock wait, de_enrollment_run_settings): it is the run's last step and
-- nothing queues behind it. Returns how many delta rows were folded.
CREATE FUNCTION deenroll.fold_remaining_de_enrollment_deltas(p_max_runtime_ms integer)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- usually nothing is left: a queued run's last step then costs one probe
    IF NOT EXISTS (SELECT 1 FROM public.campaign_stats_delta) THEN
        RETURN 0;
    END IF;
    PERFORM public.de_enrollment_run_settings(true);
    PERFORM set_config('lock_timeout',
                       (extract(epoch FROM greatest(make_interval(secs => coalesce(p_max_runtime_ms, 0) / 1000.0),
                                                    current_setting('lock_timeout')::interval)) * 1000)::bigint || 'ms',
                       true);
    RETURN public.apply_campaign_stats_deltas();
END
$fn$;

COMMENT ON FUNCTION deenroll.fold_remaining_de_enrollment_deltas(integer) IS
    'Folds every campaign''s pending counter deltas, waiting for locks up to the run''s budget (at least a run''s own lock wait): the last step of a run over every client.';
