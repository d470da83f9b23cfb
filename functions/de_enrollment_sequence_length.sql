-- de_enrollment_sequence_length: how many messages a campaign's sequence has: the length of its messages array, NULL when messages is not an array
-- requires: 0024_isolate_dirty_platform_data
--
-- The one place that reads a sequence's length from campaigns.messages. Any JSON is
-- accepted: NULL, an object, a string or a number give NULL (no sequence: nobody finishes
-- it, de_enrollment_invalid_campaigns reports it), an empty array 0 (a draft). Where "has
-- finished" is judged, an empty sequence has no end: those callers take nullif(..., 0)
-- (de_enrollment_due_outcome says why). A SQL-standard body without SET clauses: bound to
-- its objects when created, and inlined by the planner into the caller's query (the claim,
-- the batch, the views), so it costs what the bare expression costs. Views and the inlined
-- functions run it with their reader's rights: the privileges function grants it to the
-- roles that read them.
CREATE FUNCTION deenroll.de_enrollment_sequence_length(p_messages jsonb)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN jsonb_typeof(p_messages) = 'array' THEN jsonb_array_length(p_messages) END;

COMMENT ON FUNCTION deenroll.de_enrollment_sequence_length(jsonb) IS
    'How many messages a campaign''s sequence has: the length of its messages array; NULL when messages is not an array.';
