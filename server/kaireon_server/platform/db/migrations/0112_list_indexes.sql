-- Every list and count on a tenant's history is served by an index whose
-- leading columns are the statement's equality filters followed by its sort
-- keys, so a page costs O(log n) whatever the plan cache decides (the list
-- statements are one per filter combination; see tests/platform/test_generic_plans.py).
-- Built inside the migration's transaction: on large tables, expect a write
-- lock on each table for the duration of its build.

-- ListDsarRequests by subject, and by subject and status (the status-only list
-- is dsar_request_status_idx). The new subject index also serves every lookup
-- the old (tenant_id, subject_id) one did.
CREATE INDEX IF NOT EXISTS dsar_request_subject_list_idx
    ON dsar_request (tenant_id, subject_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS dsar_request_subject_status_idx
    ON dsar_request (tenant_id, subject_id, status, created_at DESC, id DESC);
DROP INDEX IF EXISTS dsar_request_subject_idx;

-- ListRuns with a state filter.
CREATE INDEX IF NOT EXISTS flow_run_state_list_idx
    ON flow_run (tenant_id, state, created_at DESC, run_id DESC);

-- ListAuditEvents by entity type, and by action and entity type (the
-- action-only list is audit_log_action_idx).
CREATE INDEX IF NOT EXISTS audit_log_entity_type_seq_idx
    ON audit_log (tenant_id, entity_type, seq);
CREATE INDEX IF NOT EXISTS audit_log_action_entity_type_seq_idx
    ON audit_log (tenant_id, action, entity_type, seq);

-- An erasure's proof rows (and its redactable count) per subject and action:
-- the old per-action index walked every gdpr_erasure row of the tenant.
CREATE INDEX IF NOT EXISTS audit_log_subject_action_idx
    ON audit_log (tenant_id, subject_id, action) WHERE subject_id IS NOT NULL;
DROP INDEX IF EXISTS audit_log_subject_idx;

-- Which exports of a polled page the caller already received inline
-- (dsar/repository.INLINE_DISCLOSED_SQL): only first inline disclosures are
-- indexed, one per request and principal, so a poll looks up its page's ids
-- without stepping over the tenant's other access rows.
CREATE INDEX IF NOT EXISTS audit_log_inline_disclosure_idx
    ON audit_log (tenant_id, entity_id, actor)
    WHERE action = 'dsar_export_downloaded' AND entity_type = 'dsar_request'
      AND changes->>'via' = 'inline';
