-- The integrators walk every tenant with rows no checkpoint covers, in pages
-- (keyset on tenant_id). 0113's kaireon_tlog_pending(limit) only ever returned
-- the first page, so a hundred tenants whose logs the integrator refuses to
-- sign (tampered, rolled back) kept every later tenant from being checkpointed.
-- The one-argument function stays for servers of the previous release during a
-- rolling upgrade.

CREATE FUNCTION kaireon_tlog_pending(p_after text, p_limit integer)
    RETURNS TABLE (tenant_id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT h.tenant_id FROM audit_chain_head h
      LEFT JOIN audit_tlog_state s ON s.tenant_id = h.tenant_id
     WHERE h.seq > coalesce(s.size, 0)
       AND h.tenant_id > p_after
     ORDER BY h.tenant_id
     LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION kaireon_tlog_pending(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_tlog_pending(text, integer) TO kaireon_app;
