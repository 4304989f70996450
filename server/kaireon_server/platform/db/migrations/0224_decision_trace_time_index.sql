-- StreamDecisionProvenance over a time range (issue #22): the decisions of a
-- tenant by decision time, in keyset pages (decided_at, id).
CREATE INDEX decision_trace_decided_idx ON decision_trace (tenant_id, decided_at, id);
