-- de_enrollment_counts_as_active: the one rule for a lead counted in campaigns.active_leads_count: active and not opted out
-- requires: 0020_unify_campaign_model
--
-- Arguments: the lead's is_active and opted_out. An opted_out of NULL counts as not opted out;
-- an is_active of NULL gives NULL, which no count takes in (FILTER and WHERE drop it, a sum of
-- its integer value skips it). Everything that counts active leads (the recount, the drift
-- view) asks this function, so they cannot disagree. A SQL-standard body without SET clauses:
-- bound to its objects when created, and inlined by the planner into the caller's query, so
-- counting through it costs what the bare expression costs.
CREATE FUNCTION public.de_enrollment_counts_as_active(p_is_active boolean, p_opted_out boolean)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_is_active AND NOT coalesce(p_opted_out, false);

COMMENT ON FUNCTION public.de_enrollment_counts_as_active(boolean, boolean) IS
    'The rule for a lead counted in active_leads_count: active and not opted out (NULL opted_out counts as not opted out).';
