-- The statements the migration engine sends (deenroll/migrate/), by name (loaded by deenroll/queries.py).
-- Each one starts with a "-- name: <name>" line, then a one-line purpose comment.
-- Parameters are psycopg's %(name)s placeholders, so a literal percent sign is written %%.
-- Our schema is public: objects of ours are named qualified with it, as in every SQL file;
-- catalog lookups take it as %(schema)s (deenroll.sqlfiles.SCHEMA).
-- Where a statement must name an object it only knows at run time (DROP, LOCK, CREATE SCHEMA),
-- a query here writes that statement, quoted by the database, and the engine runs it.


-- ---------------------------------------------------------------- lock waits

-- name: migrate_probe_lock_wait
-- How long the look for migrations applied by hand waits for a lock before it gives up.
SET LOCAL lock_timeout = '2s';

-- name: migrate_definitions_lock_wait
-- How long re-creating functions and views waits for a lock before it gives up (and retries).
SET LOCAL lock_timeout = '3s';

-- name: migrate_uninstall_lock_wait
-- How long uninstall waits for a lock on a bookkeeping table before it gives up.
SET LOCAL lock_timeout = '5s';


-- ---------------------------------------------------------------- running files

-- name: migrate_lock_blockers
-- The sessions that block this one (a lock wait), seen from a second connection.
SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.usename::text, ''),
       coalesce(a.state, ''), a.xact_start, a.query_start, left(coalesce(a.query, ''), 120)
  FROM pg_catalog.pg_stat_activity AS a
 WHERE a.pid = ANY (pg_catalog.pg_blocking_pids(%(pid)s))
 ORDER BY a.pid;

-- name: migrate_invalid_index
-- The INVALID index a failed concurrent build left under this name, and the statement that drops it.
SELECT i.indexrelid::regclass::text,
       pg_catalog.format('DROP INDEX CONCURRENTLY IF EXISTS %%s', i.indexrelid::regclass)
  FROM pg_catalog.pg_index AS i
 WHERE i.indexrelid = pg_catalog.to_regclass(%(name)s) AND NOT i.indisvalid;


-- ---------------------------------------------------------------- yoyo's record

-- name: migrate_yoyo_record_exists
-- Whether yoyo ever recorded a migration in this database (its table exists).
SELECT pg_catalog.to_regclass('public._yoyo_migration') IS NOT NULL;

-- name: migrate_yoyo_record
-- Each applied migration and when it was applied (UTC).
SELECT migration_id, applied_at_utc FROM public._yoyo_migration;


-- ---------------------------------------------------------------- migrations applied by hand

-- name: migrate_schemas
-- Every schema but the system's.
SELECT nspname FROM pg_catalog.pg_namespace
 WHERE nspname !~ '^pg_' AND nspname <> 'information_schema';

-- name: migrate_create_schema
-- The statement that creates a schema of this name.
SELECT pg_catalog.format('CREATE SCHEMA %%I', %(schema)s::text);

-- name: migrate_search_path_to
-- Until the transaction ends, unqualified names mean this one schema.
SELECT pg_catalog.set_config('search_path', pg_catalog.quote_ident(%(schema)s::text), true);

-- name: migrate_footprint
-- What a schema holds (kind, name, definition): relations with their kind, columns with their
-- type, and the names of indexes, constraints, triggers and functions (a later migration may
-- redefine those; they still count as there).
SELECT c.relname, 'relation', c.relkind::text FROM pg_catalog.pg_class c
 WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f')
UNION ALL
SELECT c.relname || '.' || a.attname, 'column', pg_catalog.format_type(a.atttypid, a.atttypmod)
  FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = %(schema)s::regnamespace AND c.relkind IN ('r', 'p')
   AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT i.relname, 'index', ''
  FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
 WHERE i.relnamespace = %(schema)s::regnamespace
UNION ALL
SELECT c.relname || '.' || k.conname, 'constraint', ''
  FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
 WHERE c.relnamespace = %(schema)s::regnamespace
UNION ALL
SELECT c.relname || '.' || t.tgname, 'trigger', ''
  FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = %(schema)s::regnamespace AND NOT t.tgisinternal
UNION ALL
SELECT p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', 'function', ''
  FROM pg_catalog.pg_proc p WHERE p.pronamespace = %(schema)s::regnamespace;


-- ---------------------------------------------------------------- functions and views

-- name: migrate_pin_search_path
-- The search path every definition is created and hashed under (pg_get_viewdef and
-- pg_get_functiondef print names relative to the path in force).
SET LOCAL search_path = pg_catalog, pg_temp;

-- name: migrate_view_hash
-- md5 of a view's definition as the database holds it; no row when it is absent.
SELECT pg_catalog.md5(pg_catalog.pg_get_viewdef(c.oid)) FROM pg_catalog.pg_class c
 WHERE c.relname = %(name)s AND c.relkind IN ('v', 'm') AND c.relnamespace = pg_catalog.to_regnamespace(%(schema)s);

-- name: migrate_function_hash
-- md5 of every overload of a function as the database holds them; no row when there is none.
SELECT pg_catalog.md5(pg_catalog.string_agg(pg_catalog.pg_get_functiondef(p.oid), ';'
                                            ORDER BY p.oid::regprocedure::text))
  FROM pg_catalog.pg_proc p
 WHERE p.proname = %(name)s AND p.pronamespace = pg_catalog.to_regnamespace(%(schema)s)
HAVING count(*) > 0;

-- name: migrate_view_objects
-- The views named so in a schema: (catalog, oid, qualified name).
SELECT 'pg_catalog.pg_class', c.oid, pg_catalog.format('%%I.%%I', n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname = %(name)s AND c.relkind IN ('v', 'm') AND n.nspname = %(schema)s;

-- name: migrate_function_objects
-- The functions named so in a schema: (catalog, oid, signature).
SELECT 'pg_catalog.pg_proc', p.oid, p.oid::regprocedure::text
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE p.proname = %(name)s AND n.nspname = %(schema)s
 ORDER BY p.oid;

-- name: migrate_schema_oid
-- A schema's oid.
SELECT %(schema)s::regnamespace::oid;

-- name: migrate_dependents
-- Every object that depends on one (views through their rewrite rule, functions through a
-- view's row type too), transitively; what DROP ... CASCADE would take with it:
-- (catalog, oid, description, name, schema oid).
WITH RECURSIVE dep(classid, objid) AS (
    SELECT %(classid)s::regclass::oid, %(objid)s::oid
  UNION
    SELECT CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::regclass THEN 'pg_catalog.pg_class'::regclass::oid
                ELSE d.classid END,
           CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::regclass THEN r.ev_class ELSE d.objid END
      FROM dep
     CROSS JOIN LATERAL (SELECT dep.classid AS c, dep.objid AS o
                         UNION ALL
                         SELECT 'pg_catalog.pg_type'::regclass::oid, rel.reltype
                           FROM pg_catalog.pg_class AS rel
                          WHERE dep.classid = 'pg_catalog.pg_class'::regclass AND rel.oid = dep.objid) AS ref
      JOIN pg_catalog.pg_depend AS d ON d.refclassid = ref.c AND d.refobjid = ref.o AND d.deptype IN ('n', 'a')
      LEFT JOIN pg_catalog.pg_rewrite AS r ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND r.oid = d.objid
     WHERE NOT (d.classid = 'pg_catalog.pg_rewrite'::regclass AND r.ev_class = dep.objid)
)
SELECT dep.classid::regclass::text, dep.objid, pg_catalog.pg_describe_object(dep.classid, dep.objid, 0),
       coalesce(c.relname, p.proname), coalesce(c.relnamespace, p.pronamespace)
  FROM dep
  LEFT JOIN pg_catalog.pg_class AS c ON dep.classid = 'pg_catalog.pg_class'::regclass AND c.oid = dep.objid
  LEFT JOIN pg_catalog.pg_proc AS p ON dep.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = dep.objid
 WHERE NOT (dep.classid = %(classid)s::regclass::oid AND dep.objid = %(objid)s::oid);

-- name: migrate_lock_view
-- The statement that locks a view against every other session until the transaction ends.
SELECT pg_catalog.format('LOCK TABLE %%s IN ACCESS EXCLUSIVE MODE', %(oid)s::oid::regclass);

-- name: migrate_drop_view
-- The statement that drops a view and what depends on it.
SELECT pg_catalog.format('DROP VIEW %%s CASCADE', %(oid)s::oid::regclass);

-- name: migrate_drop_routine
-- The statement that drops a function or procedure and what depends on it.
SELECT pg_catalog.format('DROP ROUTINE %%s CASCADE', %(oid)s::oid::regprocedure);

-- name: migrate_close_to_public
-- The statements that close every overload of a function to PUBLIC (before the privileges
-- function exists, which does it afterwards).
SELECT pg_catalog.format('REVOKE ALL ON ROUTINE %%s FROM PUBLIC', p.oid::regprocedure)
  FROM pg_catalog.pg_proc p
 WHERE p.proname = %(name)s AND p.pronamespace = pg_catalog.to_regnamespace(%(schema)s);

-- name: migrate_privileges_function_exists
-- Whether the one list of grants is in this database yet.
SELECT pg_catalog.to_regprocedure('public.deenroll_apply_privileges()') IS NOT NULL;


-- ---------------------------------------------------------------- the record of definitions

-- name: migrate_create_definitions_record
-- The record of each function and view as migrate last left it.
CREATE TABLE IF NOT EXISTS public._deenroll_definitions (
    name         text PRIMARY KEY,
    kind         text NOT NULL,
    file_sha256  text NOT NULL,
    catalog_md5  text NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now());

-- name: migrate_definitions_record_exists
-- Whether the record of definitions exists.
SELECT pg_catalog.to_regclass('public._deenroll_definitions') IS NOT NULL;

-- name: migrate_definitions_record
-- Each recorded definition: (name, hash of its file, hash of its catalog text).
SELECT name, file_sha256, catalog_md5 FROM public._deenroll_definitions;

-- name: migrate_record_definition
-- Record a definition as just applied.
INSERT INTO public._deenroll_definitions (name, kind, file_sha256, catalog_md5)
VALUES (%(name)s, %(kind)s, %(file_sha256)s, %(catalog_md5)s)
    ON CONFLICT (name) DO UPDATE
   SET kind = EXCLUDED.kind, file_sha256 = EXCLUDED.file_sha256,
       catalog_md5 = EXCLUDED.catalog_md5, applied_at = now();

-- name: migrate_record_catalog_hash
-- Record what the database holds for a definition after the statements that followed it.
UPDATE public._deenroll_definitions SET catalog_md5 = %(catalog_md5)s WHERE name = %(name)s;

-- name: migrate_forget_definition
-- Forget a definition (its object is gone).
DELETE FROM public._deenroll_definitions WHERE name = %(name)s;


-- ---------------------------------------------------------------- uninstall

-- name: migrate_marked_roles
-- The roles a migration created (their comment carries our mark), by name.
SELECT r.rolname FROM pg_catalog.pg_roles r
 WHERE pg_catalog.shobj_description(r.oid, 'pg_authid') LIKE %(mark)s::text || '%%' ORDER BY 1;

-- name: migrate_marked_roles_with_members
-- The roles a migration created, each with whether another role is a member of it.
SELECT r.rolname,
       EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.roleid = r.oid)
  FROM pg_catalog.pg_roles r
 WHERE pg_catalog.shobj_description(r.oid, 'pg_authid') LIKE %(mark)s::text || '%%'
 ORDER BY r.rolname;

-- name: migrate_drop_table
-- The statement that drops a table of our schema; no row when there is no such table.
SELECT pg_catalog.format('DROP TABLE %%I.%%I', %(schema)s::text, %(table)s::text)
 WHERE pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %(schema)s::text, %(table)s::text)) IS NOT NULL;

-- name: migrate_drop_role
-- The statement that drops a role.
SELECT pg_catalog.format('DROP ROLE %%I', %(role)s::text);


-- ---------------------------------------------------------------- status and verify

-- name: migrate_read_only
-- The transaction only reads.
SET TRANSACTION READ ONLY;

-- name: migrate_platform_columns
-- The columns of the platform's leads and campaigns, with their types.
SELECT table_name, column_name, data_type FROM information_schema.columns
 WHERE table_schema = %(schema)s AND table_name IN ('leads', 'campaigns');

-- name: migrate_count_rows
-- The statement that counts a table's rows; no row when there is no such table.
SELECT pg_catalog.format('SELECT count(*) FROM %%I.%%I', %(schema)s::text, %(table)s::text)
 WHERE pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %(schema)s::text, %(table)s::text)) IS NOT NULL;

-- name: migrate_enrollment_routines
-- The names of the routines of a schema that concern de-enrollment.
SELECT routine_name FROM information_schema.routines
 WHERE routine_schema = %(schema)s AND routine_name LIKE '%%de_enrollment%%';

-- name: migrate_relation_kind
-- The kind of a relation of a schema (v for a view); no row when there is none.
SELECT relkind FROM pg_catalog.pg_class
 WHERE relname = %(name)s AND relnamespace = %(schema)s::regnamespace;

-- name: migrate_rls_check_exists
-- Whether the check of row-level security is in this database yet.
SELECT pg_catalog.to_regprocedure('public.de_enrollment_rls_blind_spots()') IS NOT NULL;

-- name: migrate_rls_blind_spots
-- The platform tables whose row-level security hides rows from this role, and why.
SELECT table_name, reason FROM public.de_enrollment_rls_blind_spots();
