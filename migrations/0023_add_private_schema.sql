-- 0023: a schema of deenroll's own, `deenroll`, for what the operating procedure does not
-- name (bookkeeping tables, held leads, helpers). Only its owner (the role that migrates)
-- can create objects in it and nobody else gets USAGE, so no API role and no other login can
-- reach what lives there or plant objects in it.
SET LOCAL lock_timeout = '5s';

CREATE SCHEMA deenroll;
REVOKE ALL ON SCHEMA deenroll FROM PUBLIC;
COMMENT ON SCHEMA deenroll IS 'deenroll: private objects of the de-enrollment package (not exposed to API roles).';
