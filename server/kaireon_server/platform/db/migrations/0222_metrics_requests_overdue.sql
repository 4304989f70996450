-- The metrics sample (0120, 0171) also reports the data-subject requests of the
-- lifecycle (issue #20) past their due date, across tenants (kind
-- 'requests_overdue': n = requests whose clock runs and whose due date has
-- ended, UTC; age_seconds = how long ago the earliest of those due dates
-- ended). Counts and ages only, like the rest; the subject_request_due_idx
-- partial index covers the open states.

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
    UNION ALL
    -- Lifecycle requests whose clock runs past the end (UTC) of their due date.
    SELECT 'requests_overdue', '', count(*),
           coalesce(extract(epoch FROM now() - ((min(q.due_date) + 1)::timestamp
                                                AT TIME ZONE 'UTC')), 0)::double precision
      FROM subject_request q
     WHERE q.state IN ('received', 'identity_verification', 'awaiting_approval', 'in_progress')
       AND q.due_date < (now() AT TIME ZONE 'UTC')::date
$$;
