-- The baseline is never rolled back: campaigns and leads are the platform's data.
-- `deenroll rollback` refuses any target before it; this file exists so that the
-- layout stays one rollback per migration.
SELECT 1;
