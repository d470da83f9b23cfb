-- transactional: false
-- Undo 0026: its four indexes on leads, dropped with DROP INDEX CONCURRENTLY (reads and writes of
-- leads go on meanwhile; by hand, run it with `psql -v ON_ERROR_STOP=1 -f`, without -1). The
-- counters it wrote stay in 0020's columns, which 0020's rollback drops. Every statement can be
-- run again; a drop that failed half-way leaves an INVALID index that the next run drops.
SET lock_timeout = 0;
SET statement_timeout = 0;

DROP INDEX CONCURRENTLY IF EXISTS de_enrollment_leads_client_opted_out_idx;
DROP INDEX CONCURRENTLY IF EXISTS de_enrollment_leads_client_candidates_idx;
DROP INDEX CONCURRENTLY IF EXISTS de_enrollment_leads_opted_out_idx;
DROP INDEX CONCURRENTLY IF EXISTS de_enrollment_leads_candidates_idx;

RESET statement_timeout;
RESET lock_timeout;
