-- de_enrollment_due_outcome: the one rule for "is this lead due?": 'completed', 'opted_out' or NULL (not due)
-- requires: 0024_isolate_dirty_platform_data
-- after: de_enrollment_sequence_length
--
-- Arguments: the lead's is_active, completed_at, opted_out, current_message_position, and
-- its campaign's id and messages (both NULL when the lead has no campaign, or its link
-- points at no campaign). Every caller (the claim, the batch's re-check under the row
-- lock, the dry-run count, the client list, the stuck view) asks this function, so they
-- cannot disagree. A SQL-standard body without SET clauses: bound to its objects when
-- created, and inlined by the planner into the caller's query.
--
-- The rule:
--   * Only an active lead (is_active true; NULL counts as not active) in a campaign is due.
--     A lead without a campaign is in no sequence: there is nothing to de-enroll it from.
--   * completed: completed_at is NULL and the campaign's messages is a non-empty JSON array
--     and current_message_position >= its length. A finished lead is completed, opted out
--     or not. A draft campaign (empty array) finishes nobody; a campaign whose messages is
--     not an array (or NULL) finishes nobody (de_enrollment_invalid_campaigns reports it);
--     a NULL position has not finished.
--   * opted_out: otherwise, opted_out is true (NULL counts as not opted out). A STOP is
--     honoured whatever else is wrong: no position, a draft or malformed sequence, a
--     campaign without a client or of another client, completed_at already set, odd history.
--   * The campaign's own state does not matter: a deactivated campaign (is_active false)
--     sends nothing more and takes no new leads, but its leads are judged like any other
--     (finished ones are completed, opted-out ones leave, the rest stay as they are).
--   * A lead the platform re-activated in a campaign it was already de-enrolled from is
--     judged like any other lead: when due again it is de-enrolled again (the batch then
--     updates its lead-log row and replaces deenroll's history entry for that campaign).
CREATE FUNCTION public.de_enrollment_due_outcome(
    p_is_active    boolean,
    p_completed_at timestamptz,
    p_opted_out    boolean,
    p_position     integer,
    p_campaign_id  uuid,
    p_messages     jsonb
)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE
    WHEN p_is_active IS NOT TRUE OR p_campaign_id IS NULL THEN NULL
    WHEN p_completed_at IS NULL
         AND p_position >= nullif(deenroll.de_enrollment_sequence_length(p_messages), 0)
        THEN 'completed'
    WHEN p_opted_out IS TRUE THEN 'opted_out'
END;

COMMENT ON FUNCTION public.de_enrollment_due_outcome(boolean, timestamptz, boolean, integer, uuid, jsonb) IS
    'The rule for a lead due for de-enrollment: completed (finished a non-empty sequence), opted_out (an active STOP), or NULL.';
