-- Baseline: the platform's own campaigns and leads tables (SPEC §3), as they stand
-- after the platform's own migrations up to 0018; the SOP's 0019-0021 build on it.
-- On a database that already has them this creates nothing; it only checks that
-- every column the later migrations and functions read is there, and stops with
-- a message naming the first one that is missing.
SET LOCAL lock_timeout = '5s';

DO $baseline$
DECLARE
    v_missing text;
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

    -- Every prerequisite column, with the type our SQL relies on.
    SELECT format('%s.%s (%s)', r.tbl, r.col, r.typ)
      INTO v_missing
      FROM (VALUES
            ('campaigns', 'id', 'uuid'),
            ('campaigns', 'client_id', 'uuid'),
            ('campaigns', 'name', 'text'),
            ('campaigns', 'messages', 'jsonb'),
            ('campaigns', 'created_at', 'timestamp with time zone'),
            ('leads', 'id', 'uuid'),
            ('leads', 'client_id', 'uuid'),
            ('leads', 'campaign_link_id', 'uuid'),
            ('leads', 'current_message_position', 'integer'),
            ('leads', 'is_active', 'boolean'),
            ('leads', 'opted_out', 'boolean'),
            ('leads', 'booked', 'boolean'),
            ('leads', 'created_at', 'timestamp with time zone'),
            ('leads', 'updated_at', 'timestamp with time zone')
           ) AS r (tbl, col, typ)
     WHERE NOT EXISTS (
           SELECT 1
             FROM pg_attribute a
            WHERE a.attrelid = to_regclass(r.tbl)
              AND a.attname = r.col
              AND NOT a.attisdropped
              AND format_type(a.atttypid, a.atttypmod) = r.typ)
     LIMIT 1;

    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'prerequisite column % is missing or has another type', v_missing
              USING ERRCODE = 'undefined_column',
                    HINT = 'deenroll needs the platform''s campaigns and leads tables as SPEC §3 describes them.';
    END IF;
END
$baseline$;
