-- The audit rows a provenance bundle cites, without its own emission rows.
-- Every emission of a decision appends a row about that decision; with the
-- plain entity index each later read of the decision steps over all of them
-- (the bundle query excludes them with this same literal predicate).
-- Built inside the migration's transaction: on a large audit_log, expect a
-- write lock on the table for the duration of the build.
CREATE INDEX audit_log_citation_idx ON audit_log (tenant_id, entity_type, entity_id)
    WHERE action <> 'decision_provenance_emit';
