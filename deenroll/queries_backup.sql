-- The statements of `deenroll backup` (deenroll/backup.py), by name.
-- A backup's table name holds its date, so some statements name their tables with
-- {table}, {backup} or column lists ({columns}, {live}, {saved}): backup.py fills them
-- in as quoted identifiers (psycopg.sql), never as text. Parameters are %(name)s.
-- Plain statements on purpose: a backup is taken before the first migration and
-- restored after a rollback, when none of our functions exist.

-- name: backup_list
-- Every backup date, newest first: each table's name and size on disk (null when missing; its
-- rows are counted by backup.py, one statement per table), and whether both are there.
SELECT b.day AS date,
       count(*) = 2 AS complete,
       (array_agg(b.entry) FILTER (WHERE b.source = 'leads'))[1] AS leads,
       (array_agg(b.entry) FILTER (WHERE b.source = 'campaigns'))[1] AS campaigns
  FROM (SELECT split_part(c.relname, '_backup_', 2) AS day,
               split_part(c.relname, '_backup_', 1) AS source,
               json_build_object('table', c.relname, 'rows', NULL, 'bytes', pg_total_relation_size(c.oid)) AS entry
          FROM pg_class AS c
         WHERE c.relnamespace = current_schema()::regnamespace
           AND c.relkind = 'r'
           AND c.relname ~ '^(leads|campaigns)_backup_[0-9]{8}$') AS b
 GROUP BY b.day
 ORDER BY b.day DESC;

-- name: table_in_current_schema
-- Whether a table of this name exists in the current schema.
SELECT to_regclass(quote_ident(current_schema()) || '.' || quote_ident(%(name)s)) IS NOT NULL;

-- name: common_columns
-- Which of the wanted columns both a live table and its backup have, in the order wanted.
SELECT w.name
  FROM unnest(%(wanted)s::text[]) WITH ORDINALITY AS w(name, ord)
 WHERE EXISTS (SELECT 1 FROM pg_attribute AS a
                WHERE a.attrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident(%(table)s))
                  AND a.attname = w.name AND a.attnum > 0 AND NOT a.attisdropped)
   AND EXISTS (SELECT 1 FROM pg_attribute AS b
                WHERE b.attrelid = to_regclass(quote_ident(current_schema()) || '.' || quote_ident(%(backup)s))
                  AND b.attname = w.name AND b.attnum > 0 AND NOT b.attisdropped)
 ORDER BY w.ord;

-- name: apply_privileges
-- Close new tables of ours to PUBLIC and API roles and re-apply the one list of grants.
SELECT public.deenroll_apply_privileges();

-- name: lock_platform_tables
-- Hold writes to leads and campaigns while a backup is restored (reads go on).
LOCK TABLE leads, campaigns IN SHARE ROW EXCLUSIVE MODE;

-- name: backup_lock_timeout
-- How long the restore waits for its lock, for this transaction only.
SELECT set_config('lock_timeout', %(timeout)s, true);

-- name: backup_row_count
-- The rows of a table or of a backup.
SELECT count(*) FROM {table};

-- name: backup_copy
-- Copy a table into a new backup table.
CREATE TABLE {backup} AS SELECT * FROM {table};

-- name: backup_comment
-- Say on the backup table what it is a copy of ({comment} is a quoted literal: COMMENT
-- takes no parameters).
COMMENT ON TABLE {backup} IS {comment};

-- name: backup_rows_matched
-- The backup's rows, and those whose id is still in the live table.
SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {table} AS l WHERE l.id = b.id)) FROM {backup} AS b;

-- name: backup_restore_columns
-- Put the backup's values of the columns back into the live rows that differ.
UPDATE {table} AS l SET ({columns}) = ROW({saved})
  FROM {backup} AS b
 WHERE l.id = b.id AND ROW({live}) IS DISTINCT FROM ROW({saved});

-- name: backup_rows_different
-- Live rows whose columns still differ from their backup (0 after a restore).
SELECT count(*)
  FROM {table} AS l
  JOIN {backup} AS b ON b.id = l.id
 WHERE ROW({live}) IS DISTINCT FROM ROW({saved});
