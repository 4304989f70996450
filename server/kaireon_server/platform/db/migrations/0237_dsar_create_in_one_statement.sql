-- A DSAR request's creation in one round trip (issue #22, small exports).
--
-- CreateDsarRequest was a pooled transaction: BEGIN, the tenant setting, the
-- insert, a read back, the audit row, COMMIT and the pool's reset, seven round
-- trips. This function is the insert with its idempotency rule: the new
-- request, or (its key used before) the request that key names. The caller's
-- one statement (dsar/repository.py, insert_request_alone) appends the audit
-- row of a new request beside it, chained at that statement's commit.
--
-- SECURITY INVOKER with the tenant as its argument, like kaireon_dsar_claim
-- (0230): the tenant_isolation policies apply to the insert and the read.
-- After an ON CONFLICT that found the key taken, the read runs with a new
-- snapshot (a VOLATILE function's next statement), so it sees the conflicting
-- request, which ON CONFLICT waited to be committed.
CREATE FUNCTION kaireon_dsar_create(p_tenant text, p_id uuid, p_request_type text,
                                    p_subject_id text, p_encrypt boolean,
                                    p_idempotency_key text, p_created_by text,
                                    p_trace_parent text, p_trace_state text)
    RETURNS SETOF dsar_request
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM set_config('kaireon.tenant_id', p_tenant, true);
    RETURN QUERY
        INSERT INTO dsar_request (tenant_id, id, request_type, subject_id, encrypt,
                                  idempotency_key, created_by, trace_parent, trace_state)
        VALUES (p_tenant, p_id, p_request_type, p_subject_id, p_encrypt,
                p_idempotency_key, p_created_by, p_trace_parent, p_trace_state)
        ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *;
    IF NOT FOUND THEN
        RETURN QUERY
            SELECT * FROM dsar_request r
             WHERE r.tenant_id = p_tenant AND r.idempotency_key = p_idempotency_key;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION kaireon_dsar_create(text, uuid, text, text, boolean, text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kaireon_dsar_create(text, uuid, text, text, boolean, text, text, text, text)
    TO kaireon_app;
