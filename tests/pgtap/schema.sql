-- pgTAP: every table, column, function and view the SOP names exists with its type.
BEGIN;
SELECT plan(31);

SELECT has_table('campaigns');
SELECT has_table('leads');
SELECT has_table('de_enrollment_runs');
SELECT has_table('de_enrollment_lead_log');

-- Migration 0019
SELECT col_type_is('leads', 'completed_at', 'timestamp with time zone');
SELECT col_type_is('leads', 'campaign_history', 'jsonb');
SELECT col_not_null('leads', 'campaign_history');
SELECT col_default_is('leads', 'campaign_history', '[]');

-- Migration 0020
SELECT col_type_is('campaigns', 'is_active', 'boolean');
SELECT col_type_is('campaigns', 'active_leads_count', 'integer');
SELECT col_type_is('campaigns', 'completed_leads_count', 'integer');
SELECT col_type_is('campaigns', 'opted_out_count', 'integer');
SELECT col_type_is('campaigns', 'booked_count', 'integer');
SELECT col_type_is('campaigns', 'deactivated_at', 'timestamp with time zone');
SELECT col_type_is('campaigns', 'last_enrollment_at', 'timestamp with time zone');
SELECT col_type_is('campaigns', 'auto_discovered', 'boolean');

-- Migration 0021: the columns the SOP's queries read
SELECT col_type_is('de_enrollment_runs', 'id', 'uuid');
SELECT col_type_is('de_enrollment_runs', 'run_at', 'timestamp with time zone');
SELECT col_type_is('de_enrollment_runs', 'client_id', 'uuid');
SELECT col_type_is('de_enrollment_runs', 'leads_evaluated', 'integer');
SELECT col_type_is('de_enrollment_runs', 'leads_de_enrolled', 'integer');
SELECT col_type_is('de_enrollment_runs', 'status', 'text');
SELECT col_type_is('de_enrollment_runs', 'duration_ms', 'integer');
SELECT has_column('de_enrollment_runs', 'error_details');
SELECT columns_are('de_enrollment_lead_log', ARRAY[
    'id', 'run_id', 'lead_id', 'client_id', 'campaign_id', 'action', 'outcome',
    'messages_received', 'total_messages', 'error_message', 'processed_at']);
SELECT fk_ok('de_enrollment_lead_log', 'run_id', 'de_enrollment_runs', 'id');
SELECT has_index('de_enrollment_lead_log', 'de_enrollment_lead_log_once_per_campaign_idx');
SELECT has_function('get_leads_for_de_enrollment');
SELECT has_function('process_de_enrollment_batch');
SELECT has_view('de_enrollment_health');
SELECT has_trigger('leads', 'leads_stats_delta_on_update');

SELECT * FROM finish();
ROLLBACK;
