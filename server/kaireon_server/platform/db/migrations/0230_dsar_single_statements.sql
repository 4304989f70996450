-- DSAR queue claim and watch read in one round trip each (issue #22, small exports).
--
-- A claim was BEGIN, kaireon_dsar_next_job, set_config(kaireon.tenant_id), the
-- UPDATE, COMMIT and the pool's reset: six round trips for every export. A
-- watcher's re-read after each wake-up was BEGIN, set_config, the events, the
-- request, COMMIT and the reset. Each is now one statement the caller sends
-- outside any explicit transaction (Database.single_statements).

-- The claim: kaireon_dsar_next_job's choice and the attempt's start, in one
-- statement (so in one transaction: the row lock of SKIP LOCKED is held until
-- the attempt is recorded). SECURITY INVOKER: the cross-tenant choice is
-- kaireon_dsar_next_job's (SECURITY DEFINER, keys only, migration 0100); the
-- UPDATE then runs as the caller under the row-level security policies, with
-- the claimed row's tenant set first, as the two-statement claim did.
CREATE FUNCTION kaireon_dsar_claim(p_owner text, p_lease_seconds double precision,
                                   p_max_attempts integer, p_can_encrypt boolean)
    RETURNS TABLE (tenant_id text, id uuid, subject_id text, encrypt boolean, attempts integer,
                   trace_parent text, trace_state text, queued_seconds double precision)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    picked record;
BEGIN
    SELECT n.tenant_id, n.id INTO picked
      FROM kaireon_dsar_next_job(p_max_attempts, p_can_encrypt) n;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM set_config('kaireon.tenant_id', picked.tenant_id, true);
    RETURN QUERY
        UPDATE dsar_request r
           SET status = 'processing', progress = 0, error = NULL, attempts = r.attempts + 1,
               lease_owner = p_owner, heartbeat_at = clock_timestamp(),
               lease_expires_at = clock_timestamp() + make_interval(secs => p_lease_seconds)
         WHERE r.tenant_id = picked.tenant_id AND r.id = picked.id
        RETURNING r.tenant_id, r.id, r.subject_id, r.encrypt, r.attempts, r.trace_parent,
                  r.trace_state, extract(epoch FROM clock_timestamp() - r.created_at)::float8;
END
$$;

REVOKE ALL ON FUNCTION kaireon_dsar_claim(text, double precision, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_dsar_claim(text, double precision, integer, boolean)
    TO kaireon_app;

-- A watcher's re-read: the request and its recorded states after p_after, one
-- row per state (the request's columns repeated; one row with null event
-- columns when there is none; no row when the request is gone). SECURITY
-- INVOKER with the tenant as its argument, like kaireon_provenance_bundle
-- (0160): the tenant_isolation policies apply. The caller names the columns
-- (dsar/repository.py, WATCH_READ_SQL).
CREATE FUNCTION kaireon_dsar_watch_read(p_tenant text, p_id uuid, p_after bigint)
    RETURNS SETOF record
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $$
DECLARE
    previous text := current_setting('kaireon.tenant_id', true);
BEGIN
    PERFORM set_config('kaireon.tenant_id', p_tenant, true);
    RETURN QUERY
        SELECT r.tenant_id, r.id, r.request_type, r.subject_id, r.status, r.encrypt, r.progress,
               r.error, r.idempotency_key, r.attempts, r.created_at, r.updated_at,
               r.completed_at, r.version, r.export_attempt, r.export_chunks, r.export_size,
               r.export_digest, r.export_signature, r.export_signing_key_id,
               r.export_key_version,
               (r.status = 'completed' AND EXISTS (
                   SELECT 1 FROM dsar_export_chunk c
                    WHERE c.tenant_id = r.tenant_id AND c.request_id = r.id
                      AND c.attempt = r.export_attempt AND c.seq = 0)),
               e.version, e.status, e.progress, e.error, e.created_at
          FROM dsar_request r
          LEFT JOIN dsar_request_event e
                 ON e.tenant_id = r.tenant_id AND e.request_id = r.id AND e.version > p_after
         WHERE r.tenant_id = p_tenant AND r.id = p_id
         ORDER BY e.version;
    PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
END
$$;

REVOKE ALL ON FUNCTION kaireon_dsar_watch_read(text, uuid, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_dsar_watch_read(text, uuid, bigint) TO kaireon_app;
