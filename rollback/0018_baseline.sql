-- The baseline is never rolled back: campaigns and leads are the platform's data, and
-- `deenroll rollback` refuses any target before it. `deenroll uninstall` rolls back to
-- the baseline and removes deenroll's own bookkeeping; the platform's tables stay.
-- This file exists so that the layout stays one rollback per migration.
SELECT 1;
