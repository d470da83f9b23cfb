-- The scheduler's login for docker-compose.yml: a member of deenroll_runner and nothing else.
-- Run by the `scheduler-login` service after `migrate` (which creates deenroll_runner), as
-- the database's owner, with the password in the environment variable
-- DEENROLL_SCHEDULER_PASSWORD (read by psql's \getenv, so it never appears in a command line).
\set ON_ERROR_STOP on
\getenv scheduler_password DEENROLL_SCHEDULER_PASSWORD
SELECT :'scheduler_password' <> '' AS has_password \gset
\if :has_password
\else
    \echo 'DEENROLL_SCHEDULER_PASSWORD is empty'
    \quit 3
\endif
SELECT 'CREATE ROLE deenroll_scheduler LOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'deenroll_scheduler') \gexec
ALTER ROLE deenroll_scheduler WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'scheduler_password';
GRANT deenroll_runner TO deenroll_scheduler;
