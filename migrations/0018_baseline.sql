-- Baseline: the platform's own campaigns and leads tables, as they stand after the
-- platform's own migrations up to 0018; the SOP's 0019-0021 build on them.
-- On a database that already has them this creates nothing: it only checks that every
-- column the later migrations and functions read is there with a compatible type
-- (text or varchar for text, timestamp with or without time zone, any nullability),
-- and stops with one message naming every column that is missing or incompatible.
-- `deenroll migrate` runs this check in a transaction it rolls back before it creates
-- anything, so a refused migrate leaves the database as it found it.
SET LOCAL lock_timeout = '5s';

DO $baseline$
DECLARE
    v_problems text;
BEGIN
    IF to_regclass('campaigns') IS NULL THEN
        CREATE TABLE campaigns (
            id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            client_id  uuid NOT NULL,
            name       text NOT NULL,
            messages   jsonb NOT NULL DEFAULT '[]'::jsonb,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX campaigns_client_id_idx ON campaigns (client_id);
    END IF;

    IF to_regclass('leads') IS NULL THEN
        CREATE TABLE leads (
            id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            client_id                uuid NOT NULL,
            campaign_link_id         uuid REFERENCES campaigns (id),
            first_name               text,
            last_name                text,
            phone                    text,
            email                    text,
            current_message_position integer NOT NULL DEFAULT 0,
            is_active                boolean NOT NULL DEFAULT true,
            opted_out                boolean NOT NULL DEFAULT false,
            booked                   boolean NOT NULL DEFAULT false,
            created_at               timestamptz NOT NULL DEFAULT now(),
            updated_at               timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX leads_campaign_link_id_idx ON leads (campaign_link_id);
        CREATE INDEX leads_client_id_idx ON leads (client_id);
    END IF;

    -- Every prerequisite column, the types accepted for it, and how the message names them.
    SELECT pg_catalog.string_agg(
               CASE WHEN a.attname IS NULL
                    THEN pg_catalog.format('%s.%s is missing (needs %s)', r.tbl, r.col, r.wanted)
                    ELSE pg_catalog.format('%s.%s is %s (needs %s)', r.tbl, r.col, format_type(a.atttypid, a.atttypmod), r.wanted)
               END, '; ' ORDER BY r.ord)
      INTO v_problems
      FROM (VALUES
            (1,  'campaigns', 'id',                       ARRAY['uuid'],                        'uuid'),
            (2,  'campaigns', 'client_id',                ARRAY['uuid'],                        'uuid'),
            (3,  'campaigns', 'name',                     ARRAY['text', 'character varying'],   'text or varchar'),
            (4,  'campaigns', 'messages',                 ARRAY['jsonb'],                       'jsonb'),
            (5,  'campaigns', 'created_at',               ARRAY['timestamp with time zone', 'timestamp without time zone'], 'timestamp'),
            (6,  'leads',     'id',                       ARRAY['uuid'],                        'uuid'),
            (7,  'leads',     'client_id',                ARRAY['uuid'],                        'uuid'),
            (8,  'leads',     'campaign_link_id',         ARRAY['uuid'],                        'uuid'),
            (9,  'leads',     'current_message_position', ARRAY['integer'],                     'integer'),
            (10, 'leads',     'is_active',                ARRAY['boolean'],                     'boolean'),
            (11, 'leads',     'opted_out',                ARRAY['boolean'],                     'boolean'),
            (12, 'leads',     'booked',                   ARRAY['boolean'],                     'boolean'),
            (13, 'leads',     'created_at',               ARRAY['timestamp with time zone', 'timestamp without time zone'], 'timestamp'),
            (14, 'leads',     'updated_at',               ARRAY['timestamp with time zone', 'timestamp without time zone'], 'timestamp')
           ) AS r (ord, tbl, col, accepted, wanted)
      LEFT JOIN pg_attribute AS a
             ON a.attrelid = to_regclass(r.tbl)
            AND a.attname = r.col
            AND a.attnum > 0
            AND NOT a.attisdropped
     WHERE a.attname IS NULL
        OR format_type(a.atttypid, NULL) <> ALL (r.accepted);

    IF v_problems IS NOT NULL THEN
        RAISE EXCEPTION 'the platform''s tables lack columns deenroll reads: %', v_problems
              USING ERRCODE = 'undefined_column',
                    HINT = 'add or convert these columns of campaigns and leads, then run migrate again';
    END IF;
END
$baseline$;
