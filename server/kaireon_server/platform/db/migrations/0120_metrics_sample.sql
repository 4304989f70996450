-- Aggregates for the metrics sampler (platform/observability/sampler.py): counts
-- and ages across tenants, never a row's key or content. SECURITY DEFINER like
-- the workers' queue functions (0100), because the pool's role sees one tenant.

CREATE FUNCTION kaireon_metrics_sample(p_due_seconds double precision, p_stuck_seconds double precision)
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
$$;

REVOKE ALL ON FUNCTION kaireon_metrics_sample(double precision, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_metrics_sample(double precision, double precision) TO kaireon_app;
