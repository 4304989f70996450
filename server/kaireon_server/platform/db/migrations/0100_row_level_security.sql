-- Defense in depth for tenants: row-level security on every tenant table.
--
-- The server's pool connects as `kaireon_app`, a role that owns nothing, is
-- not a superuser and has no BYPASSRLS, so the policies below always apply to
-- it. Each policy admits the rows of the tenant named by the transaction-local
-- setting `kaireon.tenant_id`, which Database.transaction(tenant) sets with
-- SET LOCAL; without it a query sees nothing and can write nothing.
--
-- The migrating role (the owner) is not subject to the policies (tables are
-- not FORCEd): it runs migrations and seeds, and owns the few SECURITY
-- DEFINER functions below through which the background workers find work of
-- every tenant (DSAR queue, flow orphan sweep, checkpoint retention). Each
-- returns only keys; the worker then works in that tenant's transaction.
--
-- Where the migrating role may not create roles (a managed PostgreSQL),
-- create kaireon_app beforehand (LOGIN NOSUPERUSER NOBYPASSRLS); the block
-- below then leaves it as it is.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'kaireon_app') THEN
        CREATE ROLE kaireon_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION;
    END IF;
EXCEPTION
    -- Another database of the same cluster migrating at the same moment.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- PostgreSQL 14 lets every role create objects in public (CVE-2018-1058);
-- the application role must not (a table it created would be its own, outside RLS).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO kaireon_app;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO kaireon_app;
REVOKE ALL ON schema_migrations FROM kaireon_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO kaireon_app;
-- Dynamic ds_* tables are created later by the platform's owner role.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO kaireon_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO kaireon_app;

-- One policy per tenant table, the same predicate for reads and writes.
DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN
        SELECT c.oid::regclass
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND c.relname NOT LIKE 'ds\_%'
         ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %s TO kaireon_app '
            'USING (tenant_id = current_setting(''kaireon.tenant_id'', true)) '
            'WITH CHECK (tenant_id = current_setting(''kaireon.tenant_id'', true))',
            t
        );
    END LOOP;
END
$$;

-- The cross-tenant reads of the background workers, as narrow functions.
-- Row locks taken inside (FOR UPDATE SKIP LOCKED) belong to the caller's
-- transaction, so a claim stays exclusive until the caller commits.

CREATE FUNCTION kaireon_dsar_next_job(p_max_attempts integer, p_can_encrypt boolean)
    RETURNS TABLE (tenant_id text, id uuid)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
BEGIN
    RETURN QUERY
        SELECT r.tenant_id, r.id FROM dsar_request r
         WHERE r.status = 'pending' AND r.run_after <= clock_timestamp()
           AND (NOT r.encrypt OR p_can_encrypt)
         ORDER BY r.run_after, r.created_at LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        RETURN;
    END IF;
    -- A job whose worker's lease ran out, attempts left.
    RETURN QUERY
        SELECT r.tenant_id, r.id FROM dsar_request r
         WHERE r.status = 'processing' AND r.lease_expires_at < clock_timestamp()
           AND r.attempts < p_max_attempts AND (NOT r.encrypt OR p_can_encrypt)
         ORDER BY r.lease_expires_at LIMIT 1 FOR UPDATE SKIP LOCKED;
END
$$;

CREATE FUNCTION kaireon_dsar_exhausted_job(p_max_attempts integer)
    RETURNS TABLE (tenant_id text, id uuid)
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT r.tenant_id, r.id FROM dsar_request r
     WHERE r.status = 'processing' AND r.lease_expires_at < clock_timestamp()
       AND r.attempts >= p_max_attempts
     LIMIT 1 FOR UPDATE SKIP LOCKED
$$;

CREATE FUNCTION kaireon_flow_running_runs(p_limit integer)
    RETURNS TABLE (tenant_id text, run_id text, attempt integer)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT r.tenant_id, r.run_id, r.attempt FROM flow_run r WHERE r.state = 'running' LIMIT p_limit
$$;

CREATE FUNCTION kaireon_flow_purge_checkpoints(p_older_than_seconds double precision)
    RETURNS bigint
    LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH purged AS (
        DELETE FROM flow_run_checkpoint c USING flow_run r
         WHERE c.tenant_id = r.tenant_id AND c.run_id = r.run_id
           AND r.state IN ('succeeded', 'failed', 'cancelled')
           AND r.ended_at < now() - make_interval(secs => p_older_than_seconds)
        RETURNING 1
    )
    SELECT count(*) FROM purged
$$;

REVOKE ALL ON FUNCTION kaireon_dsar_next_job(integer, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION kaireon_dsar_exhausted_job(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION kaireon_flow_running_runs(integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION kaireon_flow_purge_checkpoints(double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_dsar_next_job(integer, boolean) TO kaireon_app;
GRANT EXECUTE ON FUNCTION kaireon_dsar_exhausted_job(integer) TO kaireon_app;
GRANT EXECUTE ON FUNCTION kaireon_flow_running_runs(integer) TO kaireon_app;
GRANT EXECUTE ON FUNCTION kaireon_flow_purge_checkpoints(double precision) TO kaireon_app;
