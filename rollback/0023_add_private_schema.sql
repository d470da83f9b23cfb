-- Undo 0023: the private schema (empty again once the later migrations are rolled back).
SET LOCAL lock_timeout = '5s';

DROP SCHEMA IF EXISTS deenroll;
