-- "Was this decision emitted before?" (kaireon_provenance_emission, 0221: the
-- second emission keeps the bundle) answered from an index of emission rows
-- alone (issue #22, costs that grow with history).
--
-- With statistics taken while the tenant's log was small (a new tenant, a
-- busy hour before autovacuum's next ANALYZE), PostgreSQL answered the probe
-- from audit_log_entity_type_seq_idx and filtered every emission row of the
-- tenant: 6 ms per first emission at 28,000 rows, growing with each bundle
-- served. This index holds exactly the rows the probe asks about, keyed as it
-- asks, so it is the plan whatever the statistics say
-- (tests/provenance/test_history_cost.py plans it over unseen rows).
--
-- Built inside the migration's transaction: on a large audit_log, expect a
-- write lock on the table for the duration of the build (as 0101's).
CREATE INDEX audit_log_emitted_idx ON audit_log (tenant_id, entity_id)
    WHERE action = 'decision_provenance_emit' AND entity_type = 'decision';
