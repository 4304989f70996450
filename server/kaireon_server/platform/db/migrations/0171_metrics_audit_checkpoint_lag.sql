-- The metrics sample (0120) also reports the audit checkpoint lag from the
-- database: the age of the oldest audit row no checkpoint covers yet, across
-- tenants (kind 'audit_unchecked': n = tenants waiting, age_seconds = that age).
-- Measured where the rows are, it grows while no integrator publishes (stopped,
-- crashing, refusing to sign), which a value set at publish time cannot show.
-- One row lookup per tenant: audit_chain_head, the tree state, audit_log's key.

CREATE OR REPLACE FUNCTION kaireon_metrics_sample(p_due_seconds double precision, p_stuck_seconds double precision)
    RETURNS TABLE (kind text, state text, n bigint, age_seconds double precision)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT 'dsar', r.status, count(*),
           coalesce(extract(epoch FROM now() - min(r.created_at)), 0)::double precision
      FROM dsar_request r GROUP BY r.status
    UNION ALL
    SELECT 'dsar_overdue', '', count(*), 0
      FROM dsar_request r
     WHERE r.status IN ('pending', 'processing')
       AND r.created_at < now() - make_interval(secs => p_due_seconds)
    UNION ALL
    SELECT 'flow', f.state, count(*), 0 FROM flow_run f GROUP BY f.state
    UNION ALL
    SELECT 'flow_stuck', '', count(*), 0
      FROM flow_run f
     WHERE f.state = 'running'
       AND coalesce(f.started_at, f.created_at) < now() - make_interval(secs => p_stuck_seconds)
       AND NOT EXISTS (
           SELECT 1 FROM flow_run_event e
            WHERE e.tenant_id = f.tenant_id AND e.run_id = f.run_id
              AND e.created_at >= now() - make_interval(secs => p_stuck_seconds))
    UNION ALL
    SELECT 'audit_unchecked', '', count(*),
           coalesce(extract(epoch FROM now() - min(a.created_at)), 0)::double precision
      FROM audit_chain_head h
      LEFT JOIN audit_tlog_state s ON s.tenant_id = h.tenant_id
      JOIN audit_log a ON a.tenant_id = h.tenant_id AND a.seq = coalesce(s.size, 0) + 1
     WHERE h.seq > coalesce(s.size, 0)
$$;
