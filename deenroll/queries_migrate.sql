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

-- name: migrate_invalid_indexes
-- The statements that drop the INVALID indexes failed concurrent builds left under these names.
SELECT pg_catalog.format('DROP INDEX CONCURRENTLY IF EXISTS %%s', i.indexrelid::regclass)
  FROM pg_catalog.pg_index AS i
 WHERE i.indexrelid = ANY (ARRAY(SELECT pg_catalog.to_regclass(n) FROM pg_catalog.unnest(%(names)s::text[]) AS n))
   AND NOT i.indisvalid;


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

-- name: migrate_catalog_hashes
-- md5 of each definition as the database holds it (a view's text, every overload of a function's),
-- by name; no row for one that is absent.
SELECT d.name, pg_catalog.md5(pg_catalog.string_agg(o.def, ';' ORDER BY o.sig))
  FROM ROWS FROM (pg_catalog.unnest(%(names)s::text[]), pg_catalog.unnest(%(kinds)s::text[]),
                  pg_catalog.unnest(%(schemas)s::text[])) AS d(name, kind, schema)
  CROSS JOIN LATERAL (
        SELECT pg_catalog.pg_get_viewdef(c.oid), ''::text FROM pg_catalog.pg_class c
         WHERE d.kind = 'view' AND c.relname = d.name AND c.relkind IN ('v', 'm')
           AND c.relnamespace = pg_catalog.to_regnamespace(d.schema)
        UNION ALL
        SELECT pg_catalog.pg_get_functiondef(p.oid), p.oid::regprocedure::text FROM pg_catalog.pg_proc p
         WHERE d.kind = 'function' AND p.proname = d.name
           AND p.pronamespace = pg_catalog.to_regnamespace(d.schema)) AS o(def, sig)
 GROUP BY d.name;

-- name: migrate_objects
-- The views (kind view) or functions named so in a schema: (catalog, oid, qualified name or signature).
SELECT 'pg_catalog.pg_class', c.oid, pg_catalog.format('%%I.%%I', n.nspname, c.relname)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE %(kind)s = 'view' AND c.relname = %(name)s AND c.relkind IN ('v', 'm') AND n.nspname = %(schema)s
UNION ALL
SELECT 'pg_catalog.pg_proc', p.oid, p.oid::regprocedure::text
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE %(kind)s = 'function' AND p.proname = %(name)s AND n.nspname = %(schema)s
 ORDER BY 2;

-- name: migrate_dependents
-- Every object that depends on one (views through their rewrite rule, functions through a
-- view's row type too), transitively; what DROP ... CASCADE would take with it: (description,
-- name, whether it is one of our views or functions: named in the lists, in our schema).
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
SELECT pg_catalog.pg_describe_object(dep.classid, dep.objid, 0), coalesce(c.relname, p.proname),
       coalesce(coalesce(c.relnamespace, p.pronamespace) = %(schema)s::regnamespace
                AND (c.relname = ANY (%(views)s::text[]) OR p.proname = ANY (%(functions)s::text[])), false)
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
-- The statements that close every overload of these functions (names in their schemas) to PUBLIC
-- (before the privileges function exists, which does it afterwards).
SELECT pg_catalog.format('REVOKE ALL ON ROUTINE %%s FROM PUBLIC', p.oid::regprocedure)
  FROM ROWS FROM (pg_catalog.unnest(%(names)s::text[]), pg_catalog.unnest(%(schemas)s::text[])) AS d(name, schema)
  JOIN pg_catalog.pg_proc p ON p.proname = d.name AND p.pronamespace = pg_catalog.to_regnamespace(d.schema);

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

-- name: migrate_forget_definitions
-- Forget these definitions (their objects are gone).
DELETE FROM public._deenroll_definitions WHERE name = ANY (%(names)s::text[]);


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

-- name: migrate_sop_checks
-- The operating procedure's checks after migrating, in its order: (item, passed, detail, the
-- statement that counts a table's rows) for each new column with the type it must have, and each
-- table (its rows counted), function and view that must exist.
SELECT item, passed, detail, count_rows FROM (
    SELECT e.n, 'column ' || e.tbl || '.' || e.name, c.data_type IS NOT DISTINCT FROM e.typ,
           coalesce(c.data_type::text, 'missing'), NULL
      FROM (VALUES (1, 'campaigns', 'active_leads_count', 'integer'),
                   (2, 'campaigns', 'auto_discovered', 'boolean'),
                   (3, 'campaigns', 'booked_count', 'integer'),
                   (4, 'campaigns', 'completed_leads_count', 'integer'),
                   (5, 'campaigns', 'deactivated_at', 'timestamp with time zone'),
                   (6, 'campaigns', 'is_active', 'boolean'),
                   (7, 'campaigns', 'last_enrollment_at', 'timestamp with time zone'),
                   (8, 'campaigns', 'opted_out_count', 'integer'),
                   (9, 'leads', 'campaign_history', 'jsonb'),
                   (10, 'leads', 'completed_at', 'timestamp with time zone')) AS e(n, tbl, name, typ)
      LEFT JOIN information_schema.columns AS c
        ON c.table_schema = %(schema)s AND c.table_name = e.tbl AND c.column_name = e.name
    UNION ALL
    SELECT 10 + e.n, 'table ' || e.name, r.rel IS NOT NULL, 'missing',
           CASE WHEN r.rel IS NOT NULL THEN pg_catalog.format('SELECT count(*) FROM %%s', r.rel) END
      FROM (VALUES (1, 'de_enrollment_runs'), (2, 'de_enrollment_lead_log')) AS e(n, name)
     CROSS JOIN LATERAL (SELECT pg_catalog.to_regclass(pg_catalog.format('%%I.%%I', %(schema)s::text, e.name))) AS r(rel)
    UNION ALL
    SELECT 20 + e.n, 'function ' || e.name, f.found, CASE WHEN f.found THEN 'present' ELSE 'missing' END, NULL
      FROM (VALUES (1, 'get_leads_for_de_enrollment'), (2, 'process_de_enrollment_batch')) AS e(n, name)
     CROSS JOIN LATERAL (SELECT EXISTS (SELECT FROM information_schema.routines AS p
                                         WHERE p.routine_schema = %(schema)s AND p.routine_name = e.name)) AS f(found)
    UNION ALL
    SELECT 30, 'view ' || v.name, v.found, CASE WHEN v.found THEN 'present' ELSE 'missing' END, NULL
      FROM (SELECT 'de_enrollment_health', EXISTS (SELECT FROM pg_catalog.pg_class AS c
                                                   WHERE c.relname = 'de_enrollment_health' AND c.relkind = 'v'
                                                     AND c.relnamespace = %(schema)s::regnamespace)) AS v(name, found)
) AS checks(n, item, passed, detail, count_rows)
ORDER BY n;

-- name: migrate_rls_check_exists
-- Whether the check of row-level security is in this database yet.
SELECT pg_catalog.to_regprocedure('public.de_enrollment_rls_blind_spots()') IS NOT NULL;

-- name: migrate_rls_blind_spots
-- The platform tables whose row-level security hides rows from this role, and why.
SELECT table_name, reason FROM public.de_enrollment_rls_blind_spots();
