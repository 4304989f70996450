-- The provenance advisory lock of 0221, inverted: writers take it shared,
-- keep() exclusive (still without waiting).
--
-- In 0221 a writer took it exclusive and held it to its commit. A writer that
-- appends an audit row about a decision takes the tenant's audit chain head
-- first, then this lock (its trigger); an erasure takes this lock first (its
-- redaction of audit rows about the subject's decisions), then the chain head
-- (its own audit row): two such transactions could deadlock, and PostgreSQL
-- would abort one. Shared, writers never wait for each other; a writer waits
-- only for a keep() in flight, which holds the lock for one statement and
-- never waits itself, so no cycle can form. keep() gives up (keeps nothing)
-- while any writer is in flight, or another keep() holds the lock.

CREATE OR REPLACE FUNCTION kaireon_provenance_bump(p_tenant text) RETURNS void
    LANGUAGE sql SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
    SELECT pg_advisory_xact_lock_shared(kaireon_provenance_lock_key(p_tenant));
    INSERT INTO provenance_catalogue_generation AS g (tenant_id, generation)
    VALUES (p_tenant, 1)
    ON CONFLICT (tenant_id) DO UPDATE SET generation = g.generation + 1;
$fn$;

CREATE OR REPLACE FUNCTION kaireon_provenance_keep(
    p_tenant text, p_decision_id text, p_build_key text, p_body bytea, p_digest text,
    p_signature text, p_model_count integer, p_audit_log_count integer,
    p_generation bigint)
    RETURNS boolean
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER SET search_path = public, pg_temp
AS $fn$
DECLARE
    previous text := current_setting('kaireon.tenant_id', true);
    generation bigint;
BEGIN
    PERFORM set_config('kaireon.tenant_id', p_tenant, true);
    -- A kept bundle lost in a crash of PostgreSQL is only built again: its
    -- commit need not wait for the disk.
    PERFORM set_config('synchronous_commit', 'off', true);
    -- Nothing here waits: a writer in flight holds the decision's row or the
    -- tenant's lock until it commits; then nothing is kept (and no deadlock).
    -- The decision first (an erasure deleting it holds its row): once locked
    -- here it stays until this commit, so the foreign key's check passes.
    PERFORM 1 FROM decision_trace d
      WHERE d.tenant_id = p_tenant AND d.id = p_decision_id FOR KEY SHARE SKIP LOCKED;
    IF NOT FOUND THEN
        PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
        RETURN false;
    END IF;
    IF NOT pg_try_advisory_xact_lock(kaireon_provenance_lock_key(p_tenant)) THEN
        PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
        RETURN false;
    END IF;
    SELECT g.generation INTO generation FROM provenance_catalogue_generation g
     WHERE g.tenant_id = p_tenant;
    IF coalesce(generation, 0) IS DISTINCT FROM coalesce(p_generation, 0) THEN
        PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
        RETURN false;
    END IF;
    INSERT INTO provenance_bundle_store AS s
           (tenant_id, decision_id, build_key, body, digest_sha256, signature, model_count,
            audit_log_count)
    VALUES (p_tenant, p_decision_id, p_build_key, p_body, p_digest, p_signature,
            p_model_count, p_audit_log_count)
    ON CONFLICT (tenant_id, decision_id) DO UPDATE
       SET build_key = EXCLUDED.build_key, body = EXCLUDED.body,
           digest_sha256 = EXCLUDED.digest_sha256, signature = EXCLUDED.signature,
           model_count = EXCLUDED.model_count, audit_log_count = EXCLUDED.audit_log_count,
           stored_at = now();
    PERFORM set_config('kaireon.tenant_id', coalesce(previous, ''), true);
    RETURN true;
END
$fn$;
